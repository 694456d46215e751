//! A cache-blocked f32 GEMM over a pre-packed right-hand side, for the encoder's dense
//! layers and the tiles of its fused attention.
//!
//! `C (m x n) = init + A (m x k) B (k x n)`: `A` is read in place (row-major, any row
//! stride), `B` is packed once into panels of [`NR`] columns ([`PackedB`]; a model's
//! weights are packed once per call and shared by every thread). The loops follow the
//! usual blocking: `k` in blocks of [`KC`], rows in blocks of [`MC`], then one panel of
//! `B` (`KC x NR`, in L1) against every [`MR`]-row slice of the row block (`MC x KC` of
//! `A`, in L2), each an `MR x NR` register tile ([`micro`]).
//!
//! The register tile has an AVX2+FMA copy (taken at run time when the CPU has both) and a
//! portable one. Every element of `C` is `init` plus, per `k` block in order, the sum of
//! its products in order of `k` (fused multiply-adds on AVX2, from zero, added to `C` at
//! the end of the block so that `C` is fetched meanwhile): the same arithmetic for
//! every row and column whatever `m`, `n`, the row's position or the other rows, so
//! splitting rows over threads or stacking cells into one GEMM never changes a bit. Only
//! the CPU (which copy runs) does.

use rayon::prelude::*;

use crate::error::KernelResult;
use crate::kerr;
use crate::matrix::Mat;

/// Rows of the register tile.
pub const MR: usize = 6;
/// Columns of the register tile (two AVX2 vectors).
pub const NR: usize = 16;
/// Depth of a `k` block: a `KC x NR` panel of `B` is 16 KiB.
pub const KC: usize = 256;
/// Rows of a row block: `MC x KC` of `A` is 96 KiB.
pub const MC: usize = 96;

/// `B` (`k x n`) in panels of [`NR`] columns: panel `j` holds columns `j*NR .. j*NR + NR`
/// row after row (`k x NR`, zero-padded past `n`).
#[derive(Debug, Clone, Default)]
pub struct PackedB {
    data: Vec<f32>,
    k: usize,
    n: usize,
}

impl PackedB {
    /// Packs `b[p * rs + j * cs]` (`k x n`).
    fn pack(b: &[f32], k: usize, n: usize, rs: usize, cs: usize) -> Self {
        let panels = n.div_ceil(NR);
        let mut data = vec![0.0f32; panels * k * NR];
        for (jp, panel) in data.chunks_exact_mut((k * NR).max(1)).enumerate() {
            let j0 = jp * NR;
            let w = NR.min(n - j0);
            for (p, row) in panel.chunks_exact_mut(NR).enumerate() {
                for (jj, v) in row[..w].iter_mut().enumerate() {
                    *v = b[p * rs + (j0 + jj) * cs];
                }
            }
        }
        Self { data, k, n }
    }

    /// `B = w^T` for a weight in `nn.Linear` layout (`w` is `n x k`): `x w^T` is then
    /// `gemm(x, B)`.
    pub fn linear(w: &Mat<'_, f32>) -> Self {
        Self::pack(w.data, w.cols, w.rows, 1, w.cols)
    }

    /// `B` from a row-major `k x n` matrix.
    pub fn rowmajor(b: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(b.len(), k * n, "packed matrix shape");
        Self::pack(b, k, n, n, 1)
    }

    /// Rows (`k`).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns (`n`).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Panel `j` (`k x NR`).
    #[inline]
    fn panel(&self, j: usize) -> &[f32] {
        &self.data[j * self.k * NR..(j + 1) * self.k * NR]
    }
}

/// `x w^T + b` for `x` (`m x k`) and a weight in `nn.Linear` layout (`w` is `n x k`, `b`
/// has `n` entries or is absent), by [`gemm`]; blocks of [`MC`] rows run in parallel on
/// `n_threads` threads (the result does not depend on it).
pub fn linear(
    x: Mat<'_, f32>,
    w: Mat<'_, f32>,
    b: Option<&[f32]>,
    n_threads: usize,
) -> KernelResult<Vec<f32>> {
    let (m, k, n) = (x.rows, x.cols, w.rows);
    if w.cols != k {
        return Err(kerr!(
            "the weight must have {k} columns like the input, got {}",
            w.cols
        ));
    }
    if let Some(b) = b {
        if b.len() != n {
            return Err(kerr!("the bias must have {n} entries, got {}", b.len()));
        }
    }
    let mut out = vec![0.0f32; m * n];
    if n == 0 {
        return Ok(out);
    }
    crate::pool::install(n_threads, || {
        let packed = PackedB::linear(&w);
        out.par_chunks_mut(MC * n).enumerate().for_each(|(i, c)| {
            let rows = c.len() / n;
            let init = b.map_or(Init::Zero, Init::Bias);
            gemm(rows, &x.data[i * MC * k..], k, &packed, c, n, init);
        });
    })?;
    Ok(out)
}

/// What `C` starts from.
#[derive(Debug, Clone, Copy)]
pub enum Init<'a> {
    /// Zero: `C = A B`.
    Zero,
    /// `C += A B`.
    Accumulate,
    /// Every row is the bias (`n` entries): `C = bias + A B`.
    Bias(&'a [f32]),
}

/// `C = init + A B` for `A` (`m x k`, row `i` at `a[i * lda ..]`), packed `B` (`k x n`)
/// and `C` (`m x n`, row `i` at `c[i * ldc ..]`). Panics only on a shape bug.
pub fn gemm(m: usize, a: &[f32], lda: usize, b: &PackedB, c: &mut [f32], ldc: usize, init: Init) {
    gemm_cols(m, a, lda, b, b.n, c, ldc, init);
}

/// [`gemm`] with only the first `n` columns of `B` (and of `C`).
#[allow(clippy::too_many_arguments)]
pub fn gemm_cols(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB,
    n: usize,
    c: &mut [f32],
    ldc: usize,
    init: Init,
) {
    assert!(n <= b.n, "gemm: more columns than B has");
    let k = b.k;
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        ldc >= n && c.len() >= (m - 1) * ldc + n,
        "gemm output too short"
    );
    assert!(
        k == 0 || (lda >= k && a.len() >= (m - 1) * lda + k),
        "gemm input too short"
    );
    match init {
        Init::Zero => {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        Init::Accumulate => {}
        Init::Bias(bias) => {
            assert_eq!(bias.len(), n, "gemm bias length");
            for i in 0..m {
                c[i * ldc..i * ldc + n].copy_from_slice(bias);
            }
        }
    }
    let wide = crate::simd::has_avx2_fma();
    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        for i0 in (0..m).step_by(MC) {
            let i1 = (i0 + MC).min(m);
            for jp in 0..n.div_ceil(NR) {
                let panel = &b.panel(jp)[p0 * NR..(p0 + kc) * NR];
                let (j0, w) = (jp * NR, NR.min(n - jp * NR));
                let t = Tile {
                    a: &a[i0 * lda + p0..],
                    lda,
                    rows: i1 - i0,
                    kc,
                };
                panel_rows(wide, t, panel, &mut c[i0 * ldc + j0..], ldc, w, true);
            }
        }
    }
}

/// `C[..rows][..w] (+)= A B` for all `t.rows` rows of `A` (any number) against one
/// `kc x NR` panel `b`, [`MR`] rows at a time: [`tile_into`] with the bounds checked once.
pub fn panel_rows(
    wide: bool,
    t: Tile<'_>,
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    w: usize,
    load: bool,
) {
    if t.rows == 0 {
        return;
    }
    assert!((1..=NR).contains(&w) && ldc >= w);
    assert!(b.len() >= t.kc * NR, "gemm panel too short");
    assert!(t.kc == 0 || t.a.len() >= (t.rows - 1) * t.lda + t.kc);
    assert!(c.len() >= (t.rows - 1) * ldc + w);
    let full = if w == NR { t.rows / MR * MR } else { 0 };
    let (a, cp) = (t.a.as_ptr(), c.as_mut_ptr());
    for ir in (0..full).step_by(MR) {
        // SAFETY: rows ir .. ir + MR < t.rows are in bounds of `a` and `c` (checked above).
        unsafe {
            let rows: [*const f32; MR] = std::array::from_fn(|r| a.add((ir + r) * t.lda));
            micro(wide, t.kc, &rows, b.as_ptr(), cp.add(ir * ldc), ldc, load);
        }
    }
    for ir in (full..t.rows).step_by(MR) {
        let tile = Tile {
            a: &t.a[ir * t.lda..],
            lda: t.lda,
            rows: MR.min(t.rows - ir),
            kc: t.kc,
        };
        tile_into(wide, tile, b, &mut c[ir * ldc..], ldc, w, load);
    }
}

/// `MR` (or fewer) rows of `A` from column `0`: row `r` at `a[r * lda ..][..kc]`.
#[derive(Clone, Copy)]
pub struct Tile<'a> {
    pub a: &'a [f32],
    pub lda: usize,
    pub rows: usize,
    pub kc: usize,
}

/// `C[..rows][..w] (+)= tile B` for one `kc x NR` panel `b`; `C` row `r` at `c[r * ldc..]`.
/// With `load` the tile adds to `C`, else it overwrites it. Full tiles run in place; edge
/// tiles (fewer rows or columns) go through a local copy with the same arithmetic.
#[inline]
pub fn tile_into(
    wide: bool,
    t: Tile<'_>,
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    w: usize,
    load: bool,
) {
    assert!((1..=MR).contains(&t.rows) && (1..=NR).contains(&w));
    assert!(b.len() >= t.kc * NR, "gemm panel too short");
    assert!(t.kc == 0 || t.a.len() >= (t.rows - 1) * t.lda + t.kc);
    assert!(c.len() >= (t.rows - 1) * ldc + w);
    // rows past the last repeat it: computed, never stored
    let rows: [*const f32; MR] = std::array::from_fn(|r| t.a[r.min(t.rows - 1) * t.lda..].as_ptr());
    if t.rows == MR && w == NR {
        // SAFETY: bounds checked above: MR rows of kc, kc x NR of b, MR rows of NR of c.
        unsafe { micro(wide, t.kc, &rows, b.as_ptr(), c.as_mut_ptr(), ldc, load) };
        return;
    }
    let mut local = [0.0f32; MR * NR];
    if load {
        for r in 0..t.rows {
            local[r * NR..r * NR + w].copy_from_slice(&c[r * ldc..r * ldc + w]);
        }
    }
    // SAFETY: as above, with the local MR x NR tile as C.
    unsafe { micro(wide, t.kc, &rows, b.as_ptr(), local.as_mut_ptr(), NR, load) };
    for r in 0..t.rows {
        c[r * ldc..r * ldc + w].copy_from_slice(&local[r * NR..r * NR + w]);
    }
}

/// The `MR x NR` register tile: `C (+)= A B` over `kc`.
///
/// # Safety
/// `a[r]` must be valid for `kc` reads, `b` for `kc * NR`, `c` for `MR` rows of `NR`
/// at stride `ldc`.
#[inline]
unsafe fn micro(
    wide: bool,
    kc: usize,
    a: &[*const f32; MR],
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    load: bool,
) {
    #[cfg(target_arch = "x86_64")]
    {
        if wide {
            x86::micro(kc, a, b, c, ldc, load);
            return;
        }
    }
    let _ = wide;
    micro_portable(kc, a, b, c, ldc, load);
}

/// The portable register tile (products and sums rounded separately).
///
/// # Safety
/// As [`micro`].
unsafe fn micro_portable(
    kc: usize,
    a: &[*const f32; MR],
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    load: bool,
) {
    let mut acc = [[0.0f32; NR]; MR];
    for p in 0..kc {
        let bp = std::slice::from_raw_parts(b.add(p * NR), NR);
        for (r, row) in acc.iter_mut().enumerate() {
            let x = *a[r].add(p);
            for (v, &y) in row.iter_mut().zip(bp) {
                *v += x * y;
            }
        }
    }
    for (r, row) in acc.iter().enumerate() {
        for (j, v) in row.iter().enumerate() {
            let dst = c.add(r * ldc + j);
            *dst = if load { *dst + *v } else { *v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{MR, NR};

    /// The AVX2+FMA register tile: twelve accumulators, two vectors of `B` and one
    /// broadcast of `A` per step.
    ///
    /// # Safety
    /// As [`super::micro`], and the CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn micro(
        kc: usize,
        a: &[*const f32; MR],
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        load: bool,
    ) {
        let [a0, a1, a2, a3, a4, a5] = *a;
        if load {
            // C is added at the end: fetch it while the products run
            for r in 0..MR {
                _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc).cast());
                _mm_prefetch::<_MM_HINT_T0>(c.add(r * ldc + NR - 1).cast());
            }
        }
        let z = _mm256_setzero_ps();
        let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (z, z, z, z, z, z);
        let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (z, z, z, z, z, z);
        let mut bp = b;
        for p in 0..kc {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            bp = bp.add(NR);
            let x = _mm256_broadcast_ss(&*a0.add(p));
            c00 = _mm256_fmadd_ps(x, b0, c00);
            c01 = _mm256_fmadd_ps(x, b1, c01);
            let x = _mm256_broadcast_ss(&*a1.add(p));
            c10 = _mm256_fmadd_ps(x, b0, c10);
            c11 = _mm256_fmadd_ps(x, b1, c11);
            let x = _mm256_broadcast_ss(&*a2.add(p));
            c20 = _mm256_fmadd_ps(x, b0, c20);
            c21 = _mm256_fmadd_ps(x, b1, c21);
            let x = _mm256_broadcast_ss(&*a3.add(p));
            c30 = _mm256_fmadd_ps(x, b0, c30);
            c31 = _mm256_fmadd_ps(x, b1, c31);
            let x = _mm256_broadcast_ss(&*a4.add(p));
            c40 = _mm256_fmadd_ps(x, b0, c40);
            c41 = _mm256_fmadd_ps(x, b1, c41);
            let x = _mm256_broadcast_ss(&*a5.add(p));
            c50 = _mm256_fmadd_ps(x, b0, c50);
            c51 = _mm256_fmadd_ps(x, b1, c51);
        }
        let st = |r: usize, h: usize, v: __m256| {
            let p = c.add(r * ldc + h * 8);
            let v = if load {
                _mm256_add_ps(_mm256_loadu_ps(p), v)
            } else {
                v
            };
            _mm256_storeu_ps(p, v)
        };
        st(0, 0, c00);
        st(0, 1, c01);
        st(1, 0, c10);
        st(1, 1, c11);
        st(2, 0, c20);
        st(2, 1, c21);
        st(3, 0, c30);
        st(3, 1, c31);
        st(4, 0, c40);
        st(4, 1, c41);
        st(5, 0, c50);
        st(5, 1, c51);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::data;

    fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for p in 0..k {
                for j in 0..n {
                    c[i * n + j] += a[i * k + p] * b[p * n + j];
                }
            }
        }
        c
    }

    fn f32s(x: &[f64]) -> Vec<f32> {
        x.iter().map(|&v| v as f32).collect()
    }

    #[test]
    fn matches_naive_for_edge_shapes_and_inits() {
        for &(m, k, n) in &[
            (1, 1, 1),
            (5, 3, 7),
            (6, 16, 16),
            (7, 300, 17),
            (97, 257, 33),
            (13, 0, 5),
            (200, 520, 48),
        ] {
            let a64 = data(m * k, 1, 2.0);
            let b64 = data(k * n, 2, 2.0);
            let bias64 = data(n, 3, 1.0);
            let (a, b, bias) = (f32s(&a64), f32s(&b64), f32s(&bias64));
            let want = naive(
                &a.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                &b.iter().map(|&v| v as f64).collect::<Vec<_>>(),
                m,
                k,
                n,
            );
            let pb = PackedB::rowmajor(&b, k, n);
            // A with a wider row stride, C with a wider row stride
            let lda = k + 3;
            let mut a_wide = vec![f32::NAN; m * lda];
            for i in 0..m {
                a_wide[i * lda..i * lda + k].copy_from_slice(&a[i * k..(i + 1) * k]);
            }
            let ldc = n + 2;
            let mut c = vec![7.0f32; m * ldc];
            gemm(m, &a_wide, lda, &pb, &mut c, ldc, Init::Bias(&bias));
            let tol = 1e-5 * (k as f64 + 1.0);
            for i in 0..m {
                for j in 0..n {
                    let w = want[i * n + j] + bias[j] as f64;
                    assert!(
                        (c[i * ldc + j] as f64 - w).abs() < tol,
                        "{m}x{k}x{n} ({i},{j})"
                    );
                }
                assert_eq!(
                    &c[i * ldc + n..(i + 1) * ldc],
                    &[7.0, 7.0],
                    "padding untouched"
                );
            }
            let before = c.clone();
            gemm(m, &a_wide, lda, &pb, &mut c, ldc, Init::Accumulate);
            for i in 0..m {
                for j in 0..n {
                    let w = before[i * ldc + j] as f64 + want[i * n + j];
                    assert!((c[i * ldc + j] as f64 - w).abs() < 2.0 * tol);
                }
            }
            let mut z = vec![1.0f32; m * n];
            gemm(m, &a, k, &pb, &mut z, n, Init::Zero);
            for (g, w) in z.iter().zip(&want) {
                assert!((*g as f64 - w).abs() < tol);
            }
        }
    }

    #[test]
    fn rows_do_not_depend_on_their_neighbours() {
        let (m, k, n) = (37, 300, 40);
        let a = f32s(&data(m * k, 4, 2.0));
        let w = f32s(&data(n * k, 5, 2.0));
        let pb = PackedB::linear(&Mat::new("w", &w, n, k).unwrap());
        let mut all = vec![0.0f32; m * n];
        gemm(m, &a, k, &pb, &mut all, n, Init::Zero);
        for (i0, i1) in [(0, 1), (5, 12), (30, 37), (6, 7)] {
            let mut part = vec![0.0f32; (i1 - i0) * n];
            gemm(i1 - i0, &a[i0 * k..], k, &pb, &mut part, n, Init::Zero);
            assert_eq!(part, all[i0 * n..i1 * n]);
        }
        // B = w^T
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|p| a[i * k + p] as f64 * w[j * k + p] as f64)
                    .sum();
                assert!((all[i * n + j] as f64 - want).abs() < 1e-3);
            }
        }
    }

    #[test]
    fn portable_copy_agrees() {
        let (kc, n) = (70, NR);
        let a = f32s(&data(MR * kc, 6, 2.0));
        let b = f32s(&data(kc * n, 7, 2.0));
        let pb = PackedB::rowmajor(&b, kc, n);
        let rows: [*const f32; MR] = std::array::from_fn(|r| a[r * kc..].as_ptr());
        let mut c1 = vec![0.5f32; MR * NR];
        let mut c2 = c1.clone();
        unsafe {
            micro(
                crate::simd::has_avx2_fma(),
                kc,
                &rows,
                pb.panel(0).as_ptr(),
                c1.as_mut_ptr(),
                NR,
                true,
            );
            micro_portable(kc, &rows, pb.panel(0).as_ptr(), c2.as_mut_ptr(), NR, true);
        }
        for (x, y) in c1.iter().zip(&c2) {
            assert!((x - y).abs() < 1e-4 * (1.0 + y.abs()));
        }
    }
}
