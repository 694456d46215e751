//! Runtime dispatch to AVX2+FMA and AVX-512 code, and the row operations of both softmaxes.
//!
//! Wheels are built for baseline x86-64 (SSE2), which leaves the exp and max loops at two
//! lanes. [`simd_fn!`] compiles a function body twice, once with `avx2,fma` enabled, and
//! picks that copy at run time when the CPU has them; everything the body calls must be
//! `#[inline(always)]` so it is compiled with the same features. The softmax rows (and
//! [`add_weighted_rows`]) have a third, hand-vectorised copy in `x512`, taken when the CPU
//! has `avx512f` and `avx512dq`; the `*_portable` functions are the other two. The copy is
//! chosen per CPU, never per thread, so thread counts still do not change results.

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
            #[allow(clippy::extra_unused_type_parameters)]
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
    fn gaussian_row_portable<T: Real>(row: &mut [T], qn: T, kn: &[T], neg_inv: T) {
        let mx = gaussian_logits(row, qn, kn, neg_inv);
        let inv = exp_shifted::<T, FMA>(row, mx);
        scale_by(row, inv);
    }
}

simd_fn! {
    /// [`gaussian_row`] without the final division: leaves `exp(logit - max)` in `row` and
    /// returns `1 / (sum + 1e-30)`, the factor that normalises it.
    fn gaussian_row_exp_portable<T: Real>(row: &mut [T], qn: T, kn: &[T], neg_inv: T) -> T {
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
    fn gaussian_row_into_portable<T: Real>(row: &mut [T], qn: T, kn: &[T], neg_inv: T, colsum: &mut [T]) {
        let mx = gaussian_logits(row, qn, kn, neg_inv);
        let inv = exp_shifted::<T, FMA>(row, mx);
        axpy_body(colsum, inv, row);
    }
}

simd_fn! {
    /// Turns raw scores into softmax weights of `scale * row`, max-subtracted, with `1e-30`
    /// in the denominator.
    fn softmax_row_portable<T: Real>(row: &mut [T], scale: T) {
        let mx = scaled_scores(row, scale);
        let inv = exp_shifted::<T, FMA>(row, mx);
        scale_by(row, inv);
    }
}

simd_fn! {
    /// [`softmax_row`] added into `colsum` instead of kept: `colsum[j] += weight_j`.
    fn softmax_row_into_portable<T: Real>(row: &mut [T], scale: T, colsum: &mut [T]) {
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

/// The AVX-512 copy of a row operation, when the CPU has it (else None).
#[inline]
fn wide_row<T: Real>(row: &mut [T], logits: Logits<'_, T>, finish: Finish<'_, T>) -> Option<T> {
    #[cfg(target_arch = "x86_64")]
    {
        if x512::available() {
            return Some(x512::run(row, logits, finish));
        }
    }
    let _ = (row, logits, finish);
    None
}

/// How a row's raw values become logits.
#[derive(Clone, Copy)]
enum Logits<'a, T> {
    /// `max(qn + kn[j] - 2 x, 0) * neg_inv`, floored at `-MAX`.
    Gaussian { qn: T, kn: &'a [T], neg_inv: T },
    /// `scale * x`.
    Scaled(T),
}

/// What happens to `exp(logit - max)` once the row's sum is known.
enum Finish<'a, T> {
    /// Left in the row.
    Exp,
    /// Multiplied by `1 / (sum + 1e-30)`.
    Normalise,
    /// Left in the row, and `colsum[j] += exp_j / (sum + 1e-30)`.
    Into(&'a mut [T]),
}

/// Turns `row[j] = q.k_j` into Gaussian attention weights: log-weight
/// `-max(qn + kn[j] - 2 row[j], 0) / (2 sigma^2)` (with `neg_inv = -1 / (2 sigma^2)`),
/// then the max-subtracted softmax with `1e-30` in the denominator.
pub fn gaussian_row<T: Real>(row: &mut [T], qn: T, kn: &[T], neg_inv: T) {
    let logits = Logits::Gaussian { qn, kn, neg_inv };
    if wide_row(row, logits, Finish::Normalise).is_none() {
        gaussian_row_portable(row, qn, kn, neg_inv);
    }
}

/// [`gaussian_row`] without the final division: leaves `exp(logit - max)` in `row` and
/// returns `1 / (sum + 1e-30)`, the factor that normalises it.
pub fn gaussian_row_exp<T: Real>(row: &mut [T], qn: T, kn: &[T], neg_inv: T) -> T {
    let logits = Logits::Gaussian { qn, kn, neg_inv };
    wide_row(row, logits, Finish::Exp)
        .unwrap_or_else(|| gaussian_row_exp_portable(row, qn, kn, neg_inv))
}

/// [`gaussian_row`] added into `colsum` instead of kept: `colsum[j] += weight_j`
/// (`row` is left holding the unnormalised exponentials).
pub fn gaussian_row_into<T: Real>(row: &mut [T], qn: T, kn: &[T], neg_inv: T, colsum: &mut [T]) {
    let logits = Logits::Gaussian { qn, kn, neg_inv };
    if wide_row(row, logits, Finish::Into(colsum)).is_none() {
        gaussian_row_into_portable(row, qn, kn, neg_inv, colsum);
    }
}

/// Turns raw scores into softmax weights of `scale * row`, max-subtracted, with `1e-30`
/// in the denominator.
pub fn softmax_row<T: Real>(row: &mut [T], scale: T) {
    if wide_row(row, Logits::Scaled(scale), Finish::Normalise).is_none() {
        softmax_row_portable(row, scale);
    }
}

/// [`softmax_row`] added into `colsum` instead of kept: `colsum[j] += weight_j`.
pub fn softmax_row_into<T: Real>(row: &mut [T], scale: T, colsum: &mut [T]) {
    if wide_row(row, Logits::Scaled(scale), Finish::Into(colsum)).is_none() {
        softmax_row_into_portable(row, scale, colsum);
    }
}

/// `colsum[j] += sum_r inv[r] * rows[r][j]` for the `inv.len()` rows of `rows` (row-major,
/// `colsum.len()` columns), four rows at a time: `colsum += (a0 + a1) + (a2 + a3)` with
/// `a_r = inv[r] * rows[r]` (a group of fewer rows drops the missing terms). The order is
/// fixed by the arguments alone.
pub fn add_weighted_rows<T: Real>(colsum: &mut [T], rows: &[T], inv: &[T]) {
    assert_eq!(rows.len(), colsum.len() * inv.len());
    #[cfg(target_arch = "x86_64")]
    {
        if x512::available() {
            x512::add_weighted_rows(colsum, rows, inv);
            return;
        }
    }
    add_weighted_rows_portable(colsum, rows, inv);
}

simd_fn! {
    fn add_weighted_rows_portable<T: Real>(colsum: &mut [T], rows: &[T], inv: &[T]) {
        let m = colsum.len();
        for (g, w) in rows.chunks(4 * m.max(1)).zip(inv.chunks(4)) {
            let r: Vec<&[T]> = g.chunks_exact(m.max(1)).collect();
            match w.len() {
                1 => axpy_body(colsum, w[0], r[0]),
                2 => {
                    for j in 0..m {
                        colsum[j] += w[0] * r[0][j] + w[1] * r[1][j];
                    }
                }
                3 => {
                    for j in 0..m {
                        colsum[j] += (w[0] * r[0][j] + w[1] * r[1][j]) + w[2] * r[2][j];
                    }
                }
                _ => {
                    for j in 0..m {
                        colsum[j] +=
                            (w[0] * r[0][j] + w[1] * r[1][j]) + (w[2] * r[2][j] + w[3] * r[3][j]);
                    }
                }
            }
        }
    }
}

/// Squared Euclidean norm of each row of a `rows x cols` row-major matrix.
pub fn row_sq_norms<T: Real>(data: &[T], cols: usize) -> Vec<T> {
    data.chunks_exact(cols)
        .map(|r| r.iter().map(|&x| x * x).sum())
        .collect()
}

/// AVX-512 copies of the row operations (`avx512f` + `avx512dq`), used when the CPU has
/// them: explicit 8-lane (f64) and 16-lane (f32) code with a table-based exp.
///
/// `exp(x) = 2^(n/16) e^r` with `n = round(16 x / ln 2)` and `|r| <= ln 2 / 32`: the
/// factor `2^((n mod 16)/16)` comes from a 16-entry table held in registers (one
/// `vpermt2pd`/`vpermps`), `2^floor(n/16)` from `vscalef`, and `e^r` from a short Taylor
/// polynomial (degree 7 in f64: truncation below 2e-18; degree 4 in f32). Arguments below
/// the smallest normal result give exactly 0, as [`Real::exp_nonpos`]. Every reduction
/// runs over fixed lanes, so results depend on the CPU but never on the thread count.
#[cfg(target_arch = "x86_64")]
mod x512 {
    use std::any::TypeId;
    use std::arch::x86_64::*;

    use super::{Finish, Logits};
    use crate::real::Real;

    /// Whether this CPU runs these copies (detected once, then cached by std).
    #[inline]
    pub fn available() -> bool {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512dq")
    }

    /// `2^(i/16)`, correctly rounded.
    const TAB64: [f64; 16] = [
        1.0,
        1.044_273_782_427_413_8,
        1.090_507_732_665_257_7,
        1.138_788_634_756_691_6,
        1.189_207_115_002_721,
        1.241_857_812_073_484,
        1.296_839_554_651_009_6,
        1.354_255_546_936_892_7,
        std::f64::consts::SQRT_2,
        1.476_826_145_939_499_3,
        1.542_210_825_407_940_7,
        1.610_490_331_949_254_3,
        1.681_792_830_507_429,
        1.756_252_160_373_299_5,
        1.834_008_086_409_342_4,
        1.915_206_561_397_147_4,
    ];

    /// The kind of a row: the only two float types the crate uses.
    pub enum Row<'a> {
        F64(&'a mut [f64]),
        F32(&'a mut [f32]),
    }

    /// Views a `T` slice as f64 or f32 (`T` is one of them).
    #[inline]
    pub fn as_row<T: Real>(x: &mut [T]) -> Row<'_> {
        let (p, n) = (x.as_mut_ptr(), x.len());
        // SAFETY: the TypeId check makes `T` exactly the target type.
        unsafe {
            if TypeId::of::<T>() == TypeId::of::<f64>() {
                Row::F64(std::slice::from_raw_parts_mut(p.cast(), n))
            } else {
                assert!(TypeId::of::<T>() == TypeId::of::<f32>());
                Row::F32(std::slice::from_raw_parts_mut(p.cast(), n))
            }
        }
    }

    /// `x` as a slice of `U` when `T` is `U`.
    #[inline]
    pub fn same<T: Real, U: Real>(x: &[T]) -> &[U] {
        assert!(TypeId::of::<T>() == TypeId::of::<U>());
        // SAFETY: `T` and `U` are the same type.
        unsafe { std::slice::from_raw_parts(x.as_ptr().cast(), x.len()) }
    }

    /// `x` as a mutable slice of `U` when `T` is `U`.
    #[inline]
    pub fn same_mut<T: Real, U: Real>(x: &mut [T]) -> &mut [U] {
        assert!(TypeId::of::<T>() == TypeId::of::<U>());
        // SAFETY: `T` and `U` are the same type.
        unsafe { std::slice::from_raw_parts_mut(x.as_mut_ptr().cast(), x.len()) }
    }

    /// Mask of the first `n` (< 8) lanes.
    #[inline(always)]
    fn tail8(n: usize) -> __mmask8 {
        ((1u32 << n) - 1) as __mmask8
    }

    /// Mask of the first `n` (< 16) lanes.
    #[inline(always)]
    fn tail16(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// `exp(x)` for `x <= 0` (see the module notes).
    #[inline(always)]
    unsafe fn exp8(x: __m512d, lo: __m512d, hi: __m512d) -> __m512d {
        const SHIFT: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52
        const LN2_HI: f64 = f64::from_bits(0x3FE6_2E42_FEE0_0000) / 16.0;
        const LN2_LO: f64 = f64::from_bits(0x3DEA_39EF_3579_3C76) / 16.0;
        const LOWEST: f64 = -708.0;
        let keep = _mm512_cmp_pd_mask::<_CMP_GE_OQ>(x, _mm512_set1_pd(LOWEST));
        let x = _mm512_max_pd(x, _mm512_set1_pd(LOWEST));
        let t = _mm512_fmadd_pd(
            x,
            _mm512_set1_pd(16.0 * std::f64::consts::LOG2_E),
            _mm512_set1_pd(SHIFT),
        );
        let n = _mm512_sub_pd(t, _mm512_set1_pd(SHIFT));
        let r = _mm512_fnmadd_pd(n, _mm512_set1_pd(LN2_HI), x);
        let r = _mm512_fnmadd_pd(n, _mm512_set1_pd(LN2_LO), r);
        // the low 4 bits of t's mantissa are n mod 16
        let f = _mm512_permutex2var_pd(lo, _mm512_castpd_si512(t), hi);
        // e^r - 1 = r (1 + r/2 + ... + r^6/7!)
        let mut p = _mm512_set1_pd(1.0 / 5040.0);
        for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0] {
            p = _mm512_fmadd_pd(p, r, _mm512_set1_pd(c));
        }
        p = _mm512_mul_pd(p, r);
        let y = _mm512_fmadd_pd(f, p, f);
        _mm512_maskz_scalef_pd(keep, y, _mm512_mul_pd(n, _mm512_set1_pd(1.0 / 16.0)))
    }

    /// `exp(x)` for `x <= 0`, 16 f32 lanes.
    #[inline(always)]
    unsafe fn exp16(x: __m512, tab: __m512) -> __m512 {
        const SHIFT: f32 = 12_582_912.0; // 1.5 * 2^23
        const LN2_HI: f32 = f32::from_bits(0x3F31_8000) / 16.0;
        const LN2_LO: f32 = f32::from_bits(0xB95E_8083) / 16.0;
        const LOWEST: f32 = -87.0;
        let keep = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, _mm512_set1_ps(LOWEST));
        let x = _mm512_max_ps(x, _mm512_set1_ps(LOWEST));
        let t = _mm512_fmadd_ps(
            x,
            _mm512_set1_ps(16.0 * std::f32::consts::LOG2_E),
            _mm512_set1_ps(SHIFT),
        );
        let n = _mm512_sub_ps(t, _mm512_set1_ps(SHIFT));
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let f = _mm512_permutexvar_ps(_mm512_castps_si512(t), tab);
        let mut p = _mm512_set1_ps(1.0 / 24.0);
        for c in [1.0 / 6.0, 0.5, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        p = _mm512_mul_ps(p, r);
        let y = _mm512_fmadd_ps(f, p, f);
        _mm512_maskz_scalef_ps(keep, y, _mm512_mul_ps(n, _mm512_set1_ps(1.0 / 16.0)))
    }

    /// Logits, softmax numerator and the chosen finish for one f64 row; returns the
    /// inverse of `sum + 1e-30`.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn row_f64(
        row: &mut [f64],
        logits: Logits<'_, f64>,
        finish: Finish<'_, f64>,
    ) -> f64 {
        let len = row.len();
        let full = len / 8 * 8;
        let rest = tail8(len - full);
        let p = row.as_mut_ptr();
        // pass 1: logits in place, and their maximum
        let mut mx = _mm512_set1_pd(-f64::MAX);
        match logits {
            Logits::Gaussian { qn, kn, neg_inv } => {
                assert_eq!(kn.len(), len);
                let (qn, ni, lo) = (
                    _mm512_set1_pd(qn),
                    _mm512_set1_pd(neg_inv),
                    _mm512_set1_pd(-f64::MAX),
                );
                let two = _mm512_set1_pd(2.0);
                let zero = _mm512_setzero_pd();
                let k = kn.as_ptr();
                let logit = |x: __m512d, kk: __m512d| {
                    let d2 = _mm512_sub_pd(_mm512_add_pd(qn, kk), _mm512_mul_pd(two, x));
                    _mm512_max_pd(_mm512_mul_pd(_mm512_max_pd(d2, zero), ni), lo)
                };
                let mut j = 0;
                while j < full {
                    let l = logit(_mm512_loadu_pd(p.add(j)), _mm512_loadu_pd(k.add(j)));
                    _mm512_storeu_pd(p.add(j), l);
                    mx = _mm512_max_pd(mx, l);
                    j += 8;
                }
                if rest != 0 {
                    let l = logit(
                        _mm512_maskz_loadu_pd(rest, p.add(full)),
                        _mm512_maskz_loadu_pd(rest, k.add(full)),
                    );
                    _mm512_mask_storeu_pd(p.add(full), rest, l);
                    mx = _mm512_mask_max_pd(mx, rest, mx, l);
                }
            }
            Logits::Scaled(s) => {
                let s = _mm512_set1_pd(s);
                let mut j = 0;
                while j < full {
                    let l = _mm512_mul_pd(_mm512_loadu_pd(p.add(j)), s);
                    _mm512_storeu_pd(p.add(j), l);
                    mx = _mm512_max_pd(mx, l);
                    j += 8;
                }
                if rest != 0 {
                    let l = _mm512_mul_pd(_mm512_maskz_loadu_pd(rest, p.add(full)), s);
                    _mm512_mask_storeu_pd(p.add(full), rest, l);
                    mx = _mm512_mask_max_pd(mx, rest, mx, l);
                }
            }
        }
        let mx = _mm512_set1_pd(_mm512_reduce_max_pd(mx));
        // pass 2: exp(logit - max) in place, summed over fixed lanes
        let (lo, hi) = (
            _mm512_loadu_pd(TAB64.as_ptr()),
            _mm512_loadu_pd(TAB64.as_ptr().add(8)),
        );
        let (mut s0, mut s1) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        let mut j = 0;
        while j + 16 <= full {
            let e0 = exp8(_mm512_sub_pd(_mm512_loadu_pd(p.add(j)), mx), lo, hi);
            let e1 = exp8(_mm512_sub_pd(_mm512_loadu_pd(p.add(j + 8)), mx), lo, hi);
            _mm512_storeu_pd(p.add(j), e0);
            _mm512_storeu_pd(p.add(j + 8), e1);
            s0 = _mm512_add_pd(s0, e0);
            s1 = _mm512_add_pd(s1, e1);
            j += 16;
        }
        if j < full {
            let e = exp8(_mm512_sub_pd(_mm512_loadu_pd(p.add(j)), mx), lo, hi);
            _mm512_storeu_pd(p.add(j), e);
            s0 = _mm512_add_pd(s0, e);
        }
        if rest != 0 {
            let e = exp8(
                _mm512_sub_pd(_mm512_maskz_loadu_pd(rest, p.add(full)), mx),
                lo,
                hi,
            );
            _mm512_mask_storeu_pd(p.add(full), rest, e);
            s1 = _mm512_mask_add_pd(s1, rest, s1, e);
        }
        let inv = 1.0 / (_mm512_reduce_add_pd(_mm512_add_pd(s0, s1)) + 1e-30);
        // pass 3
        let w = _mm512_set1_pd(inv);
        match finish {
            Finish::Exp => {}
            Finish::Normalise => {
                let mut j = 0;
                while j < full {
                    _mm512_storeu_pd(p.add(j), _mm512_mul_pd(_mm512_loadu_pd(p.add(j)), w));
                    j += 8;
                }
                if rest != 0 {
                    let x = _mm512_maskz_loadu_pd(rest, p.add(full));
                    _mm512_mask_storeu_pd(p.add(full), rest, _mm512_mul_pd(x, w));
                }
            }
            Finish::Into(c) => {
                assert_eq!(c.len(), len);
                let c = c.as_mut_ptr();
                let mut j = 0;
                while j < full {
                    let x = _mm512_mul_pd(_mm512_loadu_pd(p.add(j)), w);
                    _mm512_storeu_pd(c.add(j), _mm512_add_pd(_mm512_loadu_pd(c.add(j)), x));
                    j += 8;
                }
                if rest != 0 {
                    let x = _mm512_mul_pd(_mm512_maskz_loadu_pd(rest, p.add(full)), w);
                    let y = _mm512_add_pd(_mm512_maskz_loadu_pd(rest, c.add(full)), x);
                    _mm512_mask_storeu_pd(c.add(full), rest, y);
                }
            }
        }
        inv
    }

    /// [`row_f64`] for f32 rows.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub unsafe fn row_f32(
        row: &mut [f32],
        logits: Logits<'_, f32>,
        finish: Finish<'_, f32>,
    ) -> f32 {
        let len = row.len();
        let full = len / 16 * 16;
        let rest = tail16(len - full);
        let p = row.as_mut_ptr();
        let mut mx = _mm512_set1_ps(-f32::MAX);
        match logits {
            Logits::Gaussian { qn, kn, neg_inv } => {
                assert_eq!(kn.len(), len);
                let (qn, ni, lo) = (
                    _mm512_set1_ps(qn),
                    _mm512_set1_ps(neg_inv),
                    _mm512_set1_ps(-f32::MAX),
                );
                let two = _mm512_set1_ps(2.0);
                let zero = _mm512_setzero_ps();
                let k = kn.as_ptr();
                let logit = |x: __m512, kk: __m512| {
                    let d2 = _mm512_sub_ps(_mm512_add_ps(qn, kk), _mm512_mul_ps(two, x));
                    _mm512_max_ps(_mm512_mul_ps(_mm512_max_ps(d2, zero), ni), lo)
                };
                let mut j = 0;
                while j < full {
                    let l = logit(_mm512_loadu_ps(p.add(j)), _mm512_loadu_ps(k.add(j)));
                    _mm512_storeu_ps(p.add(j), l);
                    mx = _mm512_max_ps(mx, l);
                    j += 16;
                }
                if rest != 0 {
                    let l = logit(
                        _mm512_maskz_loadu_ps(rest, p.add(full)),
                        _mm512_maskz_loadu_ps(rest, k.add(full)),
                    );
                    _mm512_mask_storeu_ps(p.add(full), rest, l);
                    mx = _mm512_mask_max_ps(mx, rest, mx, l);
                }
            }
            Logits::Scaled(s) => {
                let s = _mm512_set1_ps(s);
                let mut j = 0;
                while j < full {
                    let l = _mm512_mul_ps(_mm512_loadu_ps(p.add(j)), s);
                    _mm512_storeu_ps(p.add(j), l);
                    mx = _mm512_max_ps(mx, l);
                    j += 16;
                }
                if rest != 0 {
                    let l = _mm512_mul_ps(_mm512_maskz_loadu_ps(rest, p.add(full)), s);
                    _mm512_mask_storeu_ps(p.add(full), rest, l);
                    mx = _mm512_mask_max_ps(mx, rest, mx, l);
                }
            }
        }
        let mx = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
        let mut tab = [0.0f32; 16];
        for (t, &v) in tab.iter_mut().zip(&TAB64) {
            *t = v as f32;
        }
        let tab = _mm512_loadu_ps(tab.as_ptr());
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut j = 0;
        while j + 32 <= full {
            let e0 = exp16(_mm512_sub_ps(_mm512_loadu_ps(p.add(j)), mx), tab);
            let e1 = exp16(_mm512_sub_ps(_mm512_loadu_ps(p.add(j + 16)), mx), tab);
            _mm512_storeu_ps(p.add(j), e0);
            _mm512_storeu_ps(p.add(j + 16), e1);
            s0 = _mm512_add_ps(s0, e0);
            s1 = _mm512_add_ps(s1, e1);
            j += 32;
        }
        if j < full {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(p.add(j)), mx), tab);
            _mm512_storeu_ps(p.add(j), e);
            s0 = _mm512_add_ps(s0, e);
        }
        if rest != 0 {
            let e = exp16(
                _mm512_sub_ps(_mm512_maskz_loadu_ps(rest, p.add(full)), mx),
                tab,
            );
            _mm512_mask_storeu_ps(p.add(full), rest, e);
            s1 = _mm512_mask_add_ps(s1, rest, s1, e);
        }
        let inv = 1.0 / (_mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) + 1e-30);
        let w = _mm512_set1_ps(inv);
        match finish {
            Finish::Exp => {}
            Finish::Normalise => {
                let mut j = 0;
                while j < full {
                    _mm512_storeu_ps(p.add(j), _mm512_mul_ps(_mm512_loadu_ps(p.add(j)), w));
                    j += 16;
                }
                if rest != 0 {
                    let x = _mm512_maskz_loadu_ps(rest, p.add(full));
                    _mm512_mask_storeu_ps(p.add(full), rest, _mm512_mul_ps(x, w));
                }
            }
            Finish::Into(c) => {
                assert_eq!(c.len(), len);
                let c = c.as_mut_ptr();
                let mut j = 0;
                while j < full {
                    let x = _mm512_mul_ps(_mm512_loadu_ps(p.add(j)), w);
                    _mm512_storeu_ps(c.add(j), _mm512_add_ps(_mm512_loadu_ps(c.add(j)), x));
                    j += 16;
                }
                if rest != 0 {
                    let x = _mm512_mul_ps(_mm512_maskz_loadu_ps(rest, p.add(full)), w);
                    let y = _mm512_add_ps(_mm512_maskz_loadu_ps(rest, c.add(full)), x);
                    _mm512_mask_storeu_ps(c.add(full), rest, y);
                }
            }
        }
        inv
    }

    /// [`super::add_weighted_rows`] for f64.
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn add_weighted_rows_f64(colsum: &mut [f64], rows: &[f64], inv: &[f64]) {
        let m = colsum.len();
        let full = m / 8 * 8;
        let rest = tail8(m - full);
        let c = colsum.as_mut_ptr();
        for (g, w) in inv.chunks(4).enumerate() {
            let r = rows.as_ptr().add(4 * g * m);
            let k = w.len();
            let ws: [__m512d; 4] = std::array::from_fn(|i| _mm512_set1_pd(w[i.min(k - 1)]));
            let term = |i: usize, j: usize, mask: __mmask8| {
                _mm512_mul_pd(ws[i], _mm512_maskz_loadu_pd(mask, r.add(i * m + j)))
            };
            let group = |j: usize, mask: __mmask8| match k {
                1 => term(0, j, mask),
                2 => _mm512_add_pd(term(0, j, mask), term(1, j, mask)),
                3 => _mm512_add_pd(
                    _mm512_add_pd(term(0, j, mask), term(1, j, mask)),
                    term(2, j, mask),
                ),
                _ => _mm512_add_pd(
                    _mm512_add_pd(term(0, j, mask), term(1, j, mask)),
                    _mm512_add_pd(term(2, j, mask), term(3, j, mask)),
                ),
            };
            let mut j = 0;
            while j < full {
                let s = group(j, 0xFF);
                _mm512_storeu_pd(c.add(j), _mm512_add_pd(_mm512_loadu_pd(c.add(j)), s));
                j += 8;
            }
            if rest != 0 {
                let s = group(full, rest);
                let y = _mm512_add_pd(_mm512_maskz_loadu_pd(rest, c.add(full)), s);
                _mm512_mask_storeu_pd(c.add(full), rest, y);
            }
        }
    }

    /// [`super::add_weighted_rows`] for f32.
    #[target_feature(enable = "avx512f,avx512dq")]
    unsafe fn add_weighted_rows_f32(colsum: &mut [f32], rows: &[f32], inv: &[f32]) {
        let m = colsum.len();
        let full = m / 16 * 16;
        let rest = tail16(m - full);
        let c = colsum.as_mut_ptr();
        for (g, w) in inv.chunks(4).enumerate() {
            let r = rows.as_ptr().add(4 * g * m);
            let k = w.len();
            let ws: [__m512; 4] = std::array::from_fn(|i| _mm512_set1_ps(w[i.min(k - 1)]));
            let term = |i: usize, j: usize, mask: __mmask16| {
                _mm512_mul_ps(ws[i], _mm512_maskz_loadu_ps(mask, r.add(i * m + j)))
            };
            let group = |j: usize, mask: __mmask16| match k {
                1 => term(0, j, mask),
                2 => _mm512_add_ps(term(0, j, mask), term(1, j, mask)),
                3 => _mm512_add_ps(
                    _mm512_add_ps(term(0, j, mask), term(1, j, mask)),
                    term(2, j, mask),
                ),
                _ => _mm512_add_ps(
                    _mm512_add_ps(term(0, j, mask), term(1, j, mask)),
                    _mm512_add_ps(term(2, j, mask), term(3, j, mask)),
                ),
            };
            let mut j = 0;
            while j < full {
                let s = group(j, 0xFFFF);
                _mm512_storeu_ps(c.add(j), _mm512_add_ps(_mm512_loadu_ps(c.add(j)), s));
                j += 16;
            }
            if rest != 0 {
                let s = group(full, rest);
                let y = _mm512_add_ps(_mm512_maskz_loadu_ps(rest, c.add(full)), s);
                _mm512_mask_storeu_ps(c.add(full), rest, y);
            }
        }
    }

    /// Runs [`add_weighted_rows_f64`] or [`add_weighted_rows_f32`] on `T` slices.
    pub fn add_weighted_rows<T: Real>(colsum: &mut [T], rows: &[T], inv: &[T]) {
        // SAFETY: callers check `available()` and the shapes; the casts keep the type.
        match as_row(colsum) {
            Row::F64(c) => unsafe { add_weighted_rows_f64(c, same(rows), same(inv)) },
            Row::F32(c) => unsafe { add_weighted_rows_f32(c, same(rows), same(inv)) },
        }
    }

    /// Runs the AVX-512 copy of a row operation on a `T` row; `T` is f32 or f64.
    pub fn run<T: Real>(row: &mut [T], logits: Logits<'_, T>, finish: Finish<'_, T>) -> T {
        fn cast_logits<'a, T: Real, U: Real>(l: Logits<'a, T>) -> Logits<'a, U> {
            match l {
                Logits::Gaussian { qn, kn, neg_inv } => Logits::Gaussian {
                    qn: U::from_f64(qn.to_f64()),
                    kn: same::<T, U>(kn),
                    neg_inv: U::from_f64(neg_inv.to_f64()),
                },
                Logits::Scaled(s) => Logits::Scaled(U::from_f64(s.to_f64())),
            }
        }
        fn cast_finish<'a, T: Real, U: Real>(f: Finish<'a, T>) -> Finish<'a, U> {
            match f {
                Finish::Exp => Finish::Exp,
                Finish::Normalise => Finish::Normalise,
                Finish::Into(c) => Finish::Into(same_mut::<T, U>(c)),
            }
        }
        // SAFETY: callers check `available()` first; the casts keep the type (T is U).
        match as_row(row) {
            Row::F64(r) => {
                T::from_f64(unsafe { row_f64(r, cast_logits(logits), cast_finish(finish)) })
            }
            Row::F32(r) => {
                T::from_f64(unsafe { row_f32(r, cast_logits(logits), cast_finish(finish)) } as f64)
            }
        }
    }
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

    #[test]
    fn wide_exp_is_accurate() {
        // the AVX-512 copy where the CPU has it (else the portable one): a row whose
        // maximum is 0 comes back as exp(x)
        let xs: Vec<f64> = (0..=200_001)
            .map(|i| -720.0 * i as f64 / 200_001.0)
            .collect();
        let mut row = xs.clone();
        let inv = wide_row(&mut row, Logits::Scaled(1.0), Finish::Exp)
            .unwrap_or_else(|| softmax_row_exp_portable(&mut row));
        let mut worst: f64 = 0.0;
        for (&x, &e) in xs.iter().zip(&row) {
            if x < -708.0 {
                assert!(e == 0.0 || (e - x.exp()).abs() < 1e-300, "{x}: {e}");
            } else {
                worst = worst.max(((e - x.exp()) / x.exp()).abs());
            }
        }
        assert!(worst < 4e-16, "f64 exp relative error {worst:e}");
        assert!(inv > 0.0 && inv < 1.0);
        let xs: Vec<f32> = (0..=100_001)
            .map(|i| -90.0 * i as f32 / 100_001.0)
            .collect();
        let mut row = xs.clone();
        wide_row(&mut row, Logits::Scaled(1.0), Finish::Exp)
            .unwrap_or_else(|| softmax_row_exp_portable(&mut row));
        let mut worst: f64 = 0.0;
        for (&x, &e) in xs.iter().zip(&row) {
            let want = (x as f64).exp();
            if x < -87.0 {
                assert!(e == 0.0 || (e as f64) < 1e-37, "{x}: {e}");
            } else {
                worst = worst.max(((e as f64 - want) / want).abs());
            }
        }
        assert!(worst < 3e-7, "f32 exp relative error {worst:e}");
    }

    /// Portable stand-in for the exp pass of [`wide_exp_is_accurate`].
    fn softmax_row_exp_portable<T: Real>(row: &mut [T]) -> T {
        for x in row.iter_mut() {
            *x = x.exp_nonpos::<false>();
        }
        T::ONE / (row.iter().copied().sum::<T>() + T::TINY)
    }

    #[test]
    fn weighted_rows_match_naive_sums() {
        for m in [1usize, 7, 8, 9, 16, 31, 37] {
            for k in 1..10 {
                let rows: Vec<f64> = (0..k * m).map(|i| (i as f64 * 0.71).sin()).collect();
                let inv: Vec<f64> = (0..k).map(|r| 1.0 / (r as f64 + 1.5)).collect();
                let mut got = vec![0.5; m];
                add_weighted_rows(&mut got, &rows, &inv);
                let mut portable = vec![0.5; m];
                add_weighted_rows_portable(&mut portable, &rows, &inv);
                for j in 0..m {
                    let want: f64 = 0.5 + (0..k).map(|r| inv[r] * rows[r * m + j]).sum::<f64>();
                    assert!((got[j] - want).abs() < 1e-14, "m={m} k={k}");
                    assert_eq!(got[j], portable[j], "m={m} k={k}");
                }
                let rows32: Vec<f32> = rows.iter().map(|&x| x as f32).collect();
                let inv32: Vec<f32> = inv.iter().map(|&x| x as f32).collect();
                let mut got32 = vec![0.5f32; m];
                add_weighted_rows(&mut got32, &rows32, &inv32);
                let mut portable32 = vec![0.5f32; m];
                add_weighted_rows_portable(&mut portable32, &rows32, &inv32);
                assert_eq!(got32, portable32);
            }
        }
    }

    #[test]
    fn wide_rows_handle_every_tail_length() {
        for n in 1..40 {
            let raw: Vec<f64> = (0..n).map(|i| (i as f64 * 1.3).cos() * 3.0).collect();
            let kn: Vec<f64> = (0..n).map(|i| (i as f64 * 0.4).sin().abs()).collect();
            let mut w = raw.clone();
            gaussian_row(&mut w, 0.8, &kn, -0.6);
            let mut p = raw.clone();
            gaussian_row_portable(&mut p, 0.8, &kn, -0.6);
            for (a, b) in w.iter().zip(&p) {
                assert!((a - b).abs() < 1e-15, "n={n}");
            }
            let raw32: Vec<f32> = raw.iter().map(|&x| x as f32).collect();
            let mut w32 = raw32.clone();
            softmax_row(&mut w32, 0.5);
            let mut p32 = raw32.clone();
            softmax_row_portable(&mut p32, 0.5);
            for (a, b) in w32.iter().zip(&p32) {
                assert!((a - b).abs() < 1e-6, "n={n}");
            }
        }
    }
}
