//! Runtime dispatch to AVX2+FMA code, and the row operations of both softmaxes.
//!
//! Wheels are built for baseline x86-64 (SSE2), which leaves the exp and max loops at two
//! lanes. [`simd_fn!`] compiles a function body twice, once with `avx2,fma` enabled, and
//! picks that copy at run time when the CPU has them; everything the body calls must be
//! `#[inline(always)]` so it is compiled with the same features.

use crate::real::Real;

/// Whether this CPU runs the AVX2+FMA copies (detected once, then cached by std).
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `fn name<T: Real>(args) -> ret` whose body runs with AVX2+FMA when available.
#[macro_export]
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident<T: Real>($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name<T: $crate::real::Real>($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body<T: $crate::real::Real, const FMA: bool>($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                unsafe fn wide<T: $crate::real::Real>($($arg: $ty),*) $(-> $ret)? {
                    body::<T, true>($($arg),*)
                }
                if $crate::simd::has_avx2_fma() {
                    // SAFETY: the CPU supports the features `wide` was compiled for.
                    return unsafe { wide::<T>($($arg),*) };
                }
            }
            body::<T, false>($($arg),*)
        }
    };
}

const LANES: usize = 8;

/// Maximum of a row, reduced over fixed lanes (the order never depends on threads).
#[inline(always)]
fn lane_max<T: Real>(row: &[T]) -> T {
    let mut lanes = [-T::MAX; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            lanes[l] = lanes[l].max_of(c[l]);
        }
    }
    for (l, &x) in rest.iter().enumerate() {
        lanes[l] = lanes[l].max_of(x);
    }
    lanes.iter().fold(-T::MAX, |a, &b| a.max_of(b))
}

/// Sum of a row, reduced over fixed lanes (the order never depends on threads).
#[inline(always)]
fn lane_sum<T: Real>(row: &[T]) -> T {
    let mut lanes = [T::ZERO; LANES];
    let chunks = row.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..LANES {
            lanes[l] += c[l];
        }
    }
    for (l, &x) in rest.iter().enumerate() {
        lanes[l] += x;
    }
    lanes.iter().fold(T::ZERO, |a, &b| a + b)
}

/// `row <- exp(row - mx)` for a row whose maximum is `mx`; returns
/// `1 / (sum of the row + 1e-30)`.
///
/// The exp pass is a plain elementwise loop on purpose: LLVM's loop vectoriser handles it,
/// while a lane-unrolled loop that also accumulates leaves it scalar.
#[inline(always)]
fn exp_shifted<T: Real, const FMA: bool>(row: &mut [T], mx: T) -> T {
    for x in row.iter_mut() {
        *x = (*x - mx).exp_nonpos::<FMA>();
    }
    T::ONE / (lane_sum(row) + T::TINY)
}

/// Gaussian log-weights `-max(qn + kn[j] - 2 row[j], 0) / (2 sigma^2)` in place of the dot
/// products `row[j] = q.k_j` (`neg_inv = -1 / (2 sigma^2)`); returns their maximum.
#[inline(always)]
fn gaussian_logits<T: Real>(row: &mut [T], qn: T, kn: &[T], neg_inv: T) -> T {
    let two = T::ONE + T::ONE;
    for (x, &k) in row.iter_mut().zip(kn) {
        let d2 = (qn + k - two * *x).max_of(T::ZERO);
        *x = (d2 * neg_inv).max_of(-T::MAX);
    }
    lane_max(row)
}

/// Scores scaled in place; returns their maximum.
#[inline(always)]
fn scaled_scores<T: Real>(row: &mut [T], scale: T) -> T {
    for x in row.iter_mut() {
        *x *= scale;
    }
    lane_max(row)
}

/// `row *= inv`.
#[inline(always)]
fn scale_by<T: Real>(row: &mut [T], inv: T) {
    for x in row.iter_mut() {
        *x *= inv;
    }
}

/// `acc += w * x`.
#[inline(always)]
fn axpy_body<T: Real>(acc: &mut [T], w: T, x: &[T]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += w * b;
    }
}

simd_fn! {
    /// Turns `row[j] = q.k_j` into Gaussian attention weights: log-weight
    /// `-max(qn + kn[j] - 2 row[j], 0) / (2 sigma^2)` (with `neg_inv = -1 / (2 sigma^2)`),
    /// then the max-subtracted softmax with `1e-30` in the denominator.
    pub fn gaussian_row<T: Real>(row: &mut [T], qn: T, kn: &[T], neg_inv: T) {
        let mx = gaussian_logits(row, qn, kn, neg_inv);
        let inv = exp_shifted::<T, FMA>(row, mx);
        scale_by(row, inv);
    }
}

simd_fn! {
    /// [`gaussian_row`] without the final division: leaves `exp(logit - max)` in `row` and
    /// returns `1 / (sum + 1e-30)`, the factor that normalises it.
    pub fn gaussian_row_exp<T: Real>(row: &mut [T], qn: T, kn: &[T], neg_inv: T) -> T {
        let mx = gaussian_logits(row, qn, kn, neg_inv);
        exp_shifted::<T, FMA>(row, mx)
    }
}

simd_fn! {
    /// `row *= w`, elementwise.
    pub fn scale<T: Real>(row: &mut [T], w: T) {
        scale_by(row, w);
    }
}

simd_fn! {
    /// [`gaussian_row`] added into `colsum` instead of kept: `colsum[j] += weight_j`
    /// (`row` is left holding the unnormalised exponentials).
    pub fn gaussian_row_into<T: Real>(row: &mut [T], qn: T, kn: &[T], neg_inv: T, colsum: &mut [T]) {
        let mx = gaussian_logits(row, qn, kn, neg_inv);
        let inv = exp_shifted::<T, FMA>(row, mx);
        axpy_body(colsum, inv, row);
    }
}

simd_fn! {
    /// Turns raw scores into softmax weights of `scale * row`, max-subtracted, with `1e-30`
    /// in the denominator.
    pub fn softmax_row<T: Real>(row: &mut [T], scale: T) {
        let mx = scaled_scores(row, scale);
        let inv = exp_shifted::<T, FMA>(row, mx);
        scale_by(row, inv);
    }
}

simd_fn! {
    /// [`softmax_row`] added into `colsum` instead of kept: `colsum[j] += weight_j`.
    pub fn softmax_row_into<T: Real>(row: &mut [T], scale: T, colsum: &mut [T]) {
        let mx = scaled_scores(row, scale);
        let inv = exp_shifted::<T, FMA>(row, mx);
        axpy_body(colsum, inv, row);
    }
}

simd_fn! {
    /// `acc += x`, elementwise.
    pub fn add_into<T: Real>(acc: &mut [T], x: &[T]) {
        for (a, &b) in acc.iter_mut().zip(x) {
            *a += b;
        }
    }
}

simd_fn! {
    /// `acc = (acc + x) * w`, elementwise.
    pub fn add_scale<T: Real>(acc: &mut [T], x: &[T], w: T) {
        for (a, &b) in acc.iter_mut().zip(x) {
            *a = (*a + b) * w;
        }
    }
}

simd_fn! {
    /// `acc += w * x`, elementwise.
    pub fn axpy<T: Real>(acc: &mut [T], w: T, x: &[T]) {
        axpy_body(acc, w, x);
    }
}

/// Squared Euclidean norm of each row of a `rows x cols` row-major matrix.
pub fn row_sq_norms<T: Real>(data: &[T], cols: usize) -> Vec<T> {
    data.chunks_exact(cols)
        .map(|r| r.iter().map(|&x| x * x).sum())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn softmax_naive(x: &[f64]) -> Vec<f64> {
        let mx = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = x.iter().map(|v| (v - mx).exp()).collect();
        let s: f64 = e.iter().sum();
        e.iter().map(|v| v / (s + 1e-30)).collect()
    }

    #[test]
    fn softmax_row_matches_naive() {
        for n in [1usize, 3, 8, 17, 100] {
            let raw: Vec<f64> = (0..n).map(|i| ((i * 7919) % 31) as f64 - 12.5).collect();
            let mut row = raw.clone();
            softmax_row(&mut row, 0.3);
            let scaled: Vec<f64> = raw.iter().map(|v| v * 0.3).collect();
            for (a, b) in row.iter().zip(softmax_naive(&scaled)) {
                assert!((a - b).abs() < 1e-15, "n={n}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn pooled_rows_add_the_normalised_weights() {
        let raw: Vec<f64> = (0..21).map(|i| (i as f64 * 0.37).sin() * 4.0).collect();
        let kn: Vec<f64> = (0..21).map(|i| (i as f64 * 0.11).cos().abs()).collect();
        let mut w = raw.clone();
        gaussian_row(&mut w, 0.4, &kn, -0.7);
        let mut colsum = vec![1.0; 21];
        let mut scratch = raw.clone();
        gaussian_row_into(&mut scratch, 0.4, &kn, -0.7, &mut colsum);
        for (c, x) in colsum.iter().zip(&w) {
            assert_eq!(*c, 1.0 + x);
        }
        let mut w = raw.clone();
        softmax_row(&mut w, 0.3);
        let mut colsum = vec![0.0; 21];
        let mut scratch = raw.clone();
        softmax_row_into(&mut scratch, 0.3, &mut colsum);
        assert_eq!(colsum, w);
    }

    #[test]
    fn gaussian_row_handles_extremes() {
        // huge distances and a tiny bandwidth: one-hot on the nearest key, never NaN
        let kn = [1e12, 4e12, 0.0];
        let mut row = [0.0, 0.0, 0.0];
        gaussian_row(&mut row, 1e12, &kn, -1.0 / (2.0 * 1e-6));
        assert_eq!(row, [0.0, 0.0, 1.0]);
        let mut row32 = [0.0f32; 3];
        gaussian_row(&mut row32, 1e30, &[1e30, 3e38, 3e38], f32::MIN);
        assert!(row32.iter().all(|x| x.is_finite()));
        assert!((row32.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn dispatch_agrees_with_portable_copy() {
        let x: Vec<f32> = (0..37).map(|i| i as f32 * 0.25).collect();
        let mut acc = vec![1.0f32; 37];
        axpy(&mut acc, 2.0, &x);
        for (i, a) in acc.iter().enumerate() {
            assert_eq!(*a, 1.0 + 2.0 * (i as f32 * 0.25));
        }
    }
}
