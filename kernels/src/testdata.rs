//! Deterministic pseudo-random test inputs shared by the kernels' unit tests.

/// `len` values uniform in `[-scale / 2, scale / 2)` from a 64-bit LCG seeded with `seed`.
pub fn data(len: usize, seed: u64, scale: f64) -> Vec<f64> {
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * scale
        })
        .collect()
}
