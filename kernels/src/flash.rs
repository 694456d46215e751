//! Fused ("flash") softmax attention of one head, f32: tiles of queries against tiles of
//! keys with an online softmax, so no `n x n` matrix exists, only one `BQ x BK` tile.
//!
//! For query rows `i` of a tile, key block after key block:
//!
//! ```text
//! s_ij = (q_i . k_j) * scale * log2(e)          (one BQ x BK GEMM tile)
//! m_i' = max(m_i, max_j s_ij),  p_ij = 2^(s_ij - m_i'),  alpha_i = 2^(m_i - m_i')
//! l_i  = alpha_i l_i + sum_j p_ij,   o_i = alpha_i o_i + sum_j p_ij v_j   (one GEMM tile)
//! ```
//!
//! and at the end `ctx_i = o_i / l_i`: the softmax of `q_i . k_j * scale` times the values,
//! evaluated in base 2 with the scale folded into one fused multiply-add. Both products run
//! on the register tile of [`crate::sgemm`]; the keys are packed transposed in panels of
//! [`NR`] keys and the values in panels of [`NR`] columns, once per head ([`KeysValues`]).
//! `2^x` is a degree-5 polynomial on the fraction and the exponent added to the bits
//! (relative error below 2e-7); arguments below -125 give `2^-125` instead of less, which
//! a row whose largest weight is 1 cannot tell from 0 in f32 sums.
//!
//! A query row's result depends only on that row, the keys and the values (fixed tile
//! order), so how rows are split among tiles or threads never changes a bit.

use rayon::prelude::*;

use crate::error::KernelResult;
use crate::kerr;
use crate::matrix::Mat;
use crate::sgemm::{panel_rows, Tile, NR};

/// Query rows per tile (a multiple of [`crate::sgemm::MR`]).
pub const BQ: usize = 48;
/// Keys per tile (a multiple of [`NR`]): a `BQ x BK` tile of weights is 24 KiB.
pub const BK: usize = 128;

/// `log2(e)`.
const LOG2E: f32 = std::f32::consts::LOG2_E;

/// The keys and values of every head of one sequence, packed for [`attend`].
#[derive(Debug, Default)]
pub struct KeysValues {
    /// Per head, per panel of `NR` keys: `dh x NR` (key `j` of the panel in column `j`).
    kt: Vec<f32>,
    /// Per head, per panel of `NR` value columns: `n_pad x NR`.
    v: Vec<f32>,
    n: usize,
    n_pad: usize,
    dh: usize,
    heads: usize,
}

impl KeysValues {
    /// Packs `n` keys and values: key `j` of head `h` is `k[j * ld + h * dh ..][..dh]`, its
    /// value `v[j * ld + h * dh ..][..dh]`. Reuses the buffers.
    #[allow(clippy::too_many_arguments)]
    pub fn pack(&mut self, k: &[f32], v: &[f32], ld: usize, n: usize, heads: usize, dh: usize) {
        assert!(heads * dh <= ld || n == 0, "heads do not fit the rows");
        assert!(
            n == 0
                || (k.len() >= (n - 1) * ld + heads * dh && v.len() >= (n - 1) * ld + heads * dh)
        );
        let n_pad = n.div_ceil(NR) * NR;
        let kp = n_pad / NR;
        let vp = dh.div_ceil(NR);
        (self.n, self.n_pad, self.dh, self.heads) = (n, n_pad, dh, heads);
        self.kt.clear();
        self.kt.resize(heads * n_pad * dh, 0.0);
        self.v.clear();
        self.v.resize(heads * vp * n_pad * NR, 0.0);
        if n == 0 {
            return;
        }
        for h in 0..heads {
            let kt = &mut self.kt[h * n_pad * dh..(h + 1) * n_pad * dh];
            for (jp, panel) in kt.chunks_exact_mut((dh * NR).max(1)).take(kp).enumerate() {
                for jj in 0..NR.min(n - jp * NR) {
                    let row = &k[(jp * NR + jj) * ld + h * dh..][..dh];
                    for (p, &x) in row.iter().enumerate() {
                        panel[p * NR + jj] = x;
                    }
                }
            }
            let vh = &mut self.v[h * vp * n_pad * NR..(h + 1) * vp * n_pad * NR];
            for (c, panel) in vh.chunks_exact_mut(n_pad * NR).enumerate() {
                let (c0, w) = (c * NR, NR.min(dh - c * NR));
                for j in 0..n {
                    let row = &v[j * ld + h * dh + c0..][..w];
                    panel[j * NR..j * NR + w].copy_from_slice(row);
                }
            }
        }
    }

    /// Number of keys.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Panel `jp` of head `h`'s transposed keys (`dh x NR`).
    fn keys(&self, h: usize, jp: usize) -> &[f32] {
        let dh = self.dh;
        &self.kt[h * self.n_pad * dh + jp * dh * NR..][..dh * NR]
    }

    /// Head `h`'s value panel `c`, from key `j0` on.
    fn values(&self, h: usize, c: usize, j0: usize) -> &[f32] {
        let vp = self.dh.div_ceil(NR);
        &self.v[((h * vp + c) * self.n_pad + j0) * NR..]
    }
}

/// Reusable tiles of one thread.
#[derive(Debug, Default)]
pub struct Scratch {
    s: Vec<f32>,
    o: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
}

/// Context rows of head `h` for `rows` queries: query `i` is `q[i * ldq ..][..dh]` (the
/// head's columns), its result goes to `out[i * ldo ..][..dh]`. `scale` multiplies the
/// scores before the softmax.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    q: &[f32],
    ldq: usize,
    rows: usize,
    kv: &KeysValues,
    h: usize,
    scale: f32,
    out: &mut [f32],
    ldo: usize,
    s: &mut Scratch,
) {
    let dh = kv.dh;
    if rows == 0 || dh == 0 {
        return;
    }
    assert!(h < kv.heads, "head out of range");
    assert!(q.len() >= (rows - 1) * ldq + dh && out.len() >= (rows - 1) * ldo + dh);
    let n = kv.n;
    if n == 0 {
        for i in 0..rows {
            out[i * ldo..i * ldo + dh].fill(0.0);
        }
        return;
    }
    let wide = crate::simd::has_avx2_fma();
    let dhp = dh.div_ceil(NR) * NR;
    let c2 = scale * LOG2E;
    s.s.resize(BQ * BK, 0.0);
    s.o.resize(BQ * dhp, 0.0);
    s.m.resize(BQ, 0.0);
    s.l.resize(BQ, 0.0);
    for i0 in (0..rows).step_by(BQ) {
        let bq = BQ.min(rows - i0);
        let o = &mut s.o[..bq * dhp];
        o.fill(0.0);
        s.m[..bq].fill(f32::NEG_INFINITY);
        s.l[..bq].fill(0.0);
        let qt = &q[i0 * ldq..];
        for j0 in (0..n).step_by(BK) {
            let valid = BK.min(n - j0);
            let bk = valid.div_ceil(NR) * NR;
            // scores: one panel of keys against every MR-row slice of the query tile
            let t = Tile {
                a: qt,
                lda: ldq,
                rows: bq,
                kc: dh,
            };
            for jp in 0..bk / NR {
                let keys = kv.keys(h, j0 / NR + jp);
                panel_rows(wide, t, keys, &mut s.s[jp * NR..], BK, NR, false);
            }
            // online softmax, row by row
            for i in 0..bq {
                let row = &mut s.s[i * BK..i * BK + bk];
                let (m_new, sum) = exp_row(wide, row, valid, c2, s.m[i]);
                let alpha = (s.m[i] - m_new).exp2();
                s.l[i] = s.l[i] * alpha + sum;
                s.m[i] = m_new;
                if alpha != 1.0 {
                    for x in &mut o[i * dhp..(i + 1) * dhp] {
                        *x *= alpha;
                    }
                }
            }
            // o += p v, one panel of value columns at a time
            let t = Tile {
                a: &s.s,
                lda: BK,
                rows: bq,
                kc: bk,
            };
            for c in 0..dhp / NR {
                let vals = kv.values(h, c, j0);
                panel_rows(wide, t, vals, &mut o[c * NR..], dhp, NR, true);
            }
        }
        for i in 0..bq {
            let inv = 1.0 / s.l[i];
            let dst = &mut out[(i0 + i) * ldo..(i0 + i) * ldo + dh];
            for (d, &x) in dst.iter_mut().zip(&o[i * dhp..]) {
                *d = x * inv;
            }
        }
    }
}

/// Multi-head softmax attention of `q` (`n x d`) over keys `k` and values `v` (`m x d`
/// each): head `h` (columns `h * dh .. (h + 1) * dh`, `dh = d / heads`) of row `i` of the
/// result (`n x d`) is `sum_j softmax_j(scale q_ih . k_jh) v_jh`, by [`attend`]. Blocks of
/// [`BQ`] query rows run in parallel on `n_threads` threads; the result does not depend on
/// it.
pub fn attention(
    q: Mat<'_, f32>,
    k: Mat<'_, f32>,
    v: Mat<'_, f32>,
    heads: usize,
    scale: f32,
    n_threads: usize,
) -> KernelResult<Vec<f32>> {
    let d = q.cols;
    if k.cols != d || v.cols != d {
        return Err(kerr!(
            "queries, keys and values must have the same number of columns, got {}, {} and {}",
            d,
            k.cols,
            v.cols
        ));
    }
    if k.rows != v.rows {
        return Err(kerr!(
            "keys and values must have the same number of rows, got {} and {}",
            k.rows,
            v.rows
        ));
    }
    if heads == 0 || !d.is_multiple_of(heads) {
        return Err(kerr!(
            "the number of columns {d} must be a multiple of the number of heads {heads}"
        ));
    }
    if !scale.is_finite() {
        return Err(kerr!("scale must be finite, got {scale}"));
    }
    for (name, x) in [("queries", &q), ("keys", &k), ("values", &v)] {
        x.check_finite(name)?;
    }
    let (n, m, dh) = (q.rows, k.rows, d / heads);
    let mut out = vec![0.0f32; n * d];
    if d == 0 {
        return Ok(out);
    }
    crate::pool::install(n_threads, || {
        let mut kv = KeysValues::default();
        kv.pack(k.data, v.data, d, m, heads, dh);
        out.par_chunks_mut(BQ * d)
            .enumerate()
            .for_each_init(Scratch::default, |s, (b, rows)| {
                let r = rows.len() / d;
                for h in 0..heads {
                    let qh = &q.data[b * BQ * d + h * dh..];
                    attend(qh, d, r, &kv, h, scale, &mut rows[h * dh..], d, s);
                }
            });
    })?;
    Ok(out)
}

/// One row of a score tile: with `m = max(m_old, c2 * max(row[..valid]))`, sets
/// `row[j] = 2^(c2 row[j] - m)` for `j < valid` and 0 after; returns `(m, sum of the row)`.
#[inline]
fn exp_row(wide: bool, row: &mut [f32], valid: usize, c2: f32, m_old: f32) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        if wide {
            // SAFETY: the CPU has AVX2 and FMA.
            return unsafe { x86::exp_row(row, valid, c2, m_old) };
        }
    }
    let _ = wide;
    exp_row_portable(row, valid, c2, m_old)
}

/// `2^f` for `|f| <= 1/2`: minimax coefficients of degree 5 (relative error 1e-7).
const P5: [f32; 5] = [
    f32::from_bits(0x3f31_7215), // 0.69314700
    f32::from_bits(0x3e75_fcde), // 0.24022242
    f32::from_bits(0x3d63_5ba9), // 0.05550734
    f32::from_bits(0x3c1e_7540), // 0.00967151
    f32::from_bits(0x3aad_dd06), // 0.00132647
];

/// The smallest argument of [`exp2`] (`2^-125` is still a normal f32).
const LOWEST: f32 = -125.0;

/// `2^x` for `x <= 0` (a little above is fine), as the AVX2 copy computes it lane by lane.
#[inline(always)]
fn exp2(x: f32) -> f32 {
    let x = x.max(LOWEST);
    let r = x.round_ties_even();
    let f = x - r;
    let mut p = P5[4];
    p = p * f + P5[3];
    p = p * f + P5[2];
    p = p * f + P5[1];
    p = p * f + P5[0];
    p = p * f + 1.0;
    f32::from_bits(p.to_bits().wrapping_add(((r as i32) << 23) as u32))
}

fn exp_row_portable(row: &mut [f32], valid: usize, c2: f32, m_old: f32) -> (f32, f32) {
    let mx = row[..valid]
        .iter()
        .fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let m = m_old.max(mx * c2);
    let mut lanes = [0.0f32; 8];
    for (j, x) in row[..valid].iter_mut().enumerate() {
        *x = exp2(*x * c2 - m);
        lanes[j % 8] += *x;
    }
    row[valid..].fill(0.0);
    (m, lanes.iter().sum())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{LOWEST, P5};

    /// `2^x` of eight lanes.
    #[inline(always)]
    unsafe fn exp2(x: __m256) -> __m256 {
        let x = _mm256_max_ps(x, _mm256_set1_ps(LOWEST));
        let r = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
        let f = _mm256_sub_ps(x, r);
        let mut p = _mm256_set1_ps(P5[4]);
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(P5[3]));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(P5[2]));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(P5[1]));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(P5[0]));
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0));
        let e = _mm256_slli_epi32::<23>(_mm256_cvtps_epi32(r));
        _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), e))
    }

    /// Largest of eight lanes.
    #[inline(always)]
    unsafe fn hmax(v: __m256) -> f32 {
        let m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
        _mm_cvtss_f32(m)
    }

    /// Sum of eight lanes, in a fixed order.
    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps::<1>(s, s));
        _mm_cvtss_f32(s)
    }

    /// [`super::exp_row`] with AVX2+FMA; `row.len()` is a multiple of 8.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn exp_row(row: &mut [f32], valid: usize, c2: f32, m_old: f32) -> (f32, f32) {
        let len = row.len();
        assert!(len.is_multiple_of(8) && valid <= len);
        let p = row.as_mut_ptr();
        let full = valid / 8 * 8;
        let rest = valid - full;
        // lanes past `valid` in the last vector: -inf for the max, 0 after the exp
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(rest as i32), lane));
        let ninf = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut mx = ninf;
        let mut j = 0;
        while j < full {
            mx = _mm256_max_ps(mx, _mm256_loadu_ps(p.add(j)));
            j += 8;
        }
        if rest != 0 {
            mx = _mm256_max_ps(
                mx,
                _mm256_blendv_ps(ninf, _mm256_loadu_ps(p.add(full)), keep),
            );
        }
        let m = m_old.max(hmax(mx) * c2);
        let (vc, vm) = (_mm256_set1_ps(c2), _mm256_set1_ps(m));
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut j = 0;
        while j + 16 <= full {
            let e0 = exp2(_mm256_fmsub_ps(_mm256_loadu_ps(p.add(j)), vc, vm));
            let e1 = exp2(_mm256_fmsub_ps(_mm256_loadu_ps(p.add(j + 8)), vc, vm));
            _mm256_storeu_ps(p.add(j), e0);
            _mm256_storeu_ps(p.add(j + 8), e1);
            s0 = _mm256_add_ps(s0, e0);
            s1 = _mm256_add_ps(s1, e1);
            j += 16;
        }
        if j < full {
            let e = exp2(_mm256_fmsub_ps(_mm256_loadu_ps(p.add(j)), vc, vm));
            _mm256_storeu_ps(p.add(j), e);
            s0 = _mm256_add_ps(s0, e);
            j += 8;
        }
        if rest != 0 {
            let e = exp2(_mm256_fmsub_ps(_mm256_loadu_ps(p.add(j)), vc, vm));
            let e = _mm256_and_ps(e, keep);
            _mm256_storeu_ps(p.add(j), e);
            s1 = _mm256_add_ps(s1, e);
            j += 8;
        }
        while j < len {
            _mm256_storeu_ps(p.add(j), _mm256_setzero_ps());
            j += 8;
        }
        (m, hsum(_mm256_add_ps(s0, s1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::data;

    /// Softmax attention of one head in f64, straight from the formula.
    #[allow(clippy::too_many_arguments)]
    fn naive(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        ld: usize,
        n: usize,
        h: usize,
        dh: usize,
        scale: f64,
    ) -> Vec<f64> {
        let mut out = vec![0.0; n * dh];
        for i in 0..n {
            let s: Vec<f64> = (0..n)
                .map(|j| {
                    (0..dh)
                        .map(|p| q[i * ld + h * dh + p] as f64 * k[j * ld + h * dh + p] as f64)
                        .sum::<f64>()
                        * scale
                })
                .collect();
            let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
            let tot: f64 = e.iter().sum();
            for j in 0..n {
                for p in 0..dh {
                    out[i * dh + p] += e[j] / tot * v[j * ld + h * dh + p] as f64;
                }
            }
        }
        out
    }

    #[test]
    fn exp2_is_accurate() {
        let mut worst: f64 = 0.0;
        for i in 0..=400_000 {
            let x = -124.0 * i as f64 / 400_000.0;
            let got = exp2(x as f32) as f64;
            let want = (x as f32 as f64).exp2();
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 2.5e-7, "{worst:e}");
        assert_eq!(exp2(0.0), 1.0);
        assert_eq!(exp2(f32::NEG_INFINITY), (-125.0f32).exp2());
        assert!(exp2(-1e30) > 0.0);
    }

    #[test]
    fn wide_rows_match_the_portable_rows() {
        for valid in [1usize, 7, 8, 9, 16, 17, 33, 128] {
            let len = valid.div_ceil(16) * 16;
            let raw: Vec<f32> = data(len, valid as u64, 40.0)
                .iter()
                .map(|&x| x as f32)
                .collect();
            let mut a = raw.clone();
            let mut b = raw.clone();
            let (ma, sa) = exp_row(crate::simd::has_avx2_fma(), &mut a, valid, 0.3, 2.0);
            let (mb, sb) = exp_row_portable(&mut b, valid, 0.3, 2.0);
            assert_eq!(ma, mb);
            assert!((sa - sb).abs() <= 1e-6 * sb, "{sa} vs {sb}");
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-6 * y.abs().max(1e-30), "{x} vs {y}");
            }
            assert!(a[valid..].iter().all(|&x| x == 0.0));
        }
    }

    #[test]
    fn matches_naive_attention() {
        for &(n, heads, dh) in &[
            (1, 1, 1),
            (5, 2, 3),
            (48, 1, 16),
            (130, 2, 20),
            (300, 3, 64),
            (17, 4, 8),
        ] {
            let ld = heads * dh + 5;
            let q: Vec<f32> = data(n * ld, 1, 4.0).iter().map(|&x| x as f32).collect();
            let k: Vec<f32> = data(n * ld, 2, 4.0).iter().map(|&x| x as f32).collect();
            let v: Vec<f32> = data(n * ld, 3, 2.0).iter().map(|&x| x as f32).collect();
            let mut kv = KeysValues::default();
            kv.pack(&k, &v, ld, n, heads, dh);
            let scale = 1.0 / (dh as f32).sqrt();
            let mut s = Scratch::default();
            for h in 0..heads {
                let want = naive(&q, &k, &v, ld, n, h, dh, scale as f64);
                let ldo = dh + 1;
                let mut out = vec![9.0f32; n * ldo];
                attend(&q[h * dh..], ld, n, &kv, h, scale, &mut out, ldo, &mut s);
                for i in 0..n {
                    for p in 0..dh {
                        let (g, w) = (out[i * ldo + p] as f64, want[i * dh + p]);
                        assert!(
                            (g - w).abs() < 2e-5 * (1.0 + w.abs()),
                            "n={n} h={h} ({i},{p}): {g} vs {w}"
                        );
                    }
                    assert_eq!(out[i * ldo + dh], 9.0);
                }
                // any split of the rows gives the same bits
                let mut parts = vec![0.0f32; n * ldo];
                let cut = n / 3;
                attend(
                    &q[h * dh..],
                    ld,
                    cut,
                    &kv,
                    h,
                    scale,
                    &mut parts,
                    ldo,
                    &mut s,
                );
                attend(
                    &q[cut * ld + h * dh..],
                    ld,
                    n - cut,
                    &kv,
                    h,
                    scale,
                    &mut parts[cut * ldo..],
                    ldo,
                    &mut s,
                );
                for i in 0..n {
                    assert_eq!(parts[i * ldo..i * ldo + dh], out[i * ldo..i * ldo + dh]);
                }
            }
        }
    }

    #[test]
    fn no_keys_give_zero_rows() {
        let q = vec![1.0f32; 3 * 4];
        let mut kv = KeysValues::default();
        kv.pack(&[], &[], 4, 0, 2, 2);
        let mut out = [9.0f32; 3 * 4];
        attend(
            &q,
            4,
            3,
            &kv,
            1,
            1.0,
            &mut out[2..],
            4,
            &mut Scratch::default(),
        );
        for i in 0..3 {
            assert_eq!(out[i * 4..i * 4 + 4], [9.0, 9.0, 0.0, 0.0]);
        }
    }

    #[test]
    fn huge_scores_stay_finite() {
        let (n, dh) = (40, 4);
        let q: Vec<f32> = (0..n * dh)
            .map(|i| if i % 7 == 0 { 1e4 } else { -3e3 })
            .collect();
        let k = q.clone();
        let v: Vec<f32> = (0..n * dh).map(|i| i as f32).collect();
        let mut kv = KeysValues::default();
        kv.pack(&k, &v, dh, n, 1, dh);
        let mut out = vec![0.0f32; n * dh];
        attend(
            &q,
            dh,
            n,
            &kv,
            0,
            0.5,
            &mut out,
            dh,
            &mut Scratch::default(),
        );
        assert!(out.iter().all(|x| x.is_finite()));
    }
}
