//! Gaussian attention (scKGBERT; seed 000, section 1.2).
//!
//! `alpha_ij = softmax_j(-|q_i - k_j|^2 / (2 sigma^2))`, max-subtracted with `1e-30` added to
//! the denominator, and `o_i = sum_j alpha_ij v_j`.
//!
//! Squared distances come from one GEMM as `|q|^2 + |k|^2 - 2 q.k`, clamped at 0, after
//! moving queries and keys by the mean key: distances do not change under a shared shift,
//! and the shift removes most of the cancellation the expansion suffers when the vectors sit
//! far from the origin. Rows are processed in blocks of [`BLOCK_ROWS`] queries; the block
//! layout and every reduction order are fixed, so results do not depend on the thread count.

use std::sync::Mutex;

use rayon::prelude::*;

use crate::error::KernelResult;
use crate::kerr;
use crate::matrix::{gemm, Mat, Ragged, TokenId, View, ViewMut};
use crate::projected::ProjectedRows;
use crate::real::Real;
use crate::simd::{add_into, add_weighted_rows, axpy, gaussian_row_exp, row_sq_norms, scale};

/// Query rows per block: one block's weights (`BLOCK_ROWS x m`) stay in cache.
pub const BLOCK_ROWS: usize = 128;

/// Result of an attention call: the attended output and/or the weight matrix, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Attention<T> {
    pub output: Option<Vec<T>>,
    pub weights: Option<Vec<T>>,
}

/// `-1 / (2 sigma^2)` in `T`, or an error for a bandwidth `T` cannot use.
pub fn neg_inv_bandwidth<T: Real>(sigma: f64) -> KernelResult<T> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(kerr!("sigma must be a positive finite number, got {sigma}"));
    }
    let v = T::from_f64(-1.0 / (2.0 * sigma * sigma));
    if !v.is_finite() || v == T::ZERO {
        return Err(kerr!(
            "sigma = {sigma} is out of range for {}: 1 / (2 sigma^2) is not a finite nonzero number",
            T::DTYPE
        ));
    }
    Ok(v)
}

/// Reusable buffers: projected (and centred) queries and keys, their squared norms, and
/// one block of weights.
#[derive(Debug, Default)]
pub(crate) struct Scratch<T> {
    pub q: Vec<T>,
    pub k: Vec<T>,
    pub qn: Vec<T>,
    pub kn: Vec<T>,
    pub block: Vec<T>,
}

/// Shifts `q` (n x d) and `k` (m x d) by the mean row of `k` and stores their squared norms.
pub(crate) fn centre<T: Real>(s: &mut Scratch<T>, d: usize) {
    let m = s.k.len() / d;
    let mut mu = vec![T::ZERO; d];
    for row in s.k.chunks_exact(d) {
        add_into(&mut mu, row);
    }
    let inv_m = T::ONE / T::from_f64(m as f64);
    for x in &mut mu {
        *x *= inv_m;
    }
    for row in s.q.chunks_exact_mut(d).chain(s.k.chunks_exact_mut(d)) {
        for (x, &c) in row.iter_mut().zip(&mu) {
            *x -= c;
        }
    }
    s.qn = row_sq_norms(&s.q, d);
    s.kn = row_sq_norms(&s.k, d);
}

/// Dot products of the centred query rows `r0..r1` with all keys, into `out`
/// (`(r1 - r0) x m`).
fn dot_block<T: Real>(s: &Scratch<T>, d: usize, r0: usize, r1: usize, out: &mut [T]) {
    let (n, m) = (s.qn.len(), s.kn.len());
    let q = View::rowmajor(&s.q, n, d).rows(r0, r1);
    let k = View::rowmajor(&s.k, m, d);
    gemm(
        T::ONE,
        q,
        k.t(),
        T::ZERO,
        ViewMut::rowmajor(out, r1 - r0, m),
    );
}

/// Adds the Gaussian weights of query rows `r0..r1` into `colsum` (one entry per key);
/// `block` and `inv` are scratch.
fn colsum_block<T: Real>(
    s: &Scratch<T>,
    d: usize,
    (r0, r1): (usize, usize),
    neg_inv: T,
    (block, inv): (&mut [T], &mut Vec<T>),
    colsum: &mut [T],
) {
    dot_block(s, d, r0, r1, block);
    inv.clear();
    for (i, row) in block.chunks_exact_mut(s.kn.len()).enumerate() {
        inv.push(gaussian_row_exp(row, s.qn[r0 + i], &s.kn, neg_inv));
    }
    add_weighted_rows(colsum, block, inv);
}

/// Splits an optional buffer into `nb` chunks of `size` (or `nb` Nones).
pub(crate) fn opt_chunks<T>(
    buf: Option<&mut [T]>,
    size: usize,
    nb: usize,
) -> Vec<Option<&mut [T]>> {
    match buf {
        Some(b) if size > 0 => b.chunks_mut(size).map(Some).collect(),
        _ => (0..nb).map(|_| None).collect(),
    }
}

fn check_qkv<T: Real>(q: &Mat<'_, T>, k: &Mat<'_, T>, v: Option<&Mat<'_, T>>) -> KernelResult<()> {
    q.check_has_cols("queries")?;
    if k.cols != q.cols {
        return Err(kerr!(
            "queries and keys must have the same number of columns ({} vs {})",
            q.cols,
            k.cols
        ));
    }
    if k.rows == 0 {
        return Err(kerr!("keys must have at least one row"));
    }
    q.check_finite("queries")?;
    k.check_finite("keys")?;
    if let Some(v) = v {
        v.check_has_cols("values")?;
        if v.rows != k.rows {
            return Err(kerr!(
                "values must have one row per key ({} vs {})",
                v.rows,
                k.rows
            ));
        }
        v.check_finite("values")?;
    }
    Ok(())
}

/// Gaussian attention of `q` (n x d) over `k` (m x d). Returns `weights @ v` when `v`
/// (m x dv) is given, and the `n x m` weight matrix when `want_weights`.
pub fn gaussian_attention<T: Real>(
    q: Mat<'_, T>,
    k: Mat<'_, T>,
    v: Option<Mat<'_, T>>,
    sigma: f64,
    want_weights: bool,
    n_threads: usize,
) -> KernelResult<Attention<T>> {
    check_qkv(&q, &k, v.as_ref())?;
    let neg_inv = neg_inv_bandwidth::<T>(sigma)?;
    let (n, m, d) = (q.rows, k.rows, q.cols);
    let nb = n.div_ceil(BLOCK_ROWS);
    let mut output = v.map(|v| vec![T::ZERO; n * v.cols]);
    let mut weights = want_weights.then(|| vec![T::ZERO; n * m]);
    crate::pool::install(n_threads, || {
        let mut s = Scratch {
            q: q.data.to_vec(),
            k: k.data.to_vec(),
            ..Scratch::default()
        };
        centre(&mut s, d);
        let dv = v.map_or(0, |v| v.cols);
        let outs = opt_chunks(output.as_deref_mut(), BLOCK_ROWS * dv, nb);
        let ws = opt_chunks(weights.as_deref_mut(), BLOCK_ROWS * m, nb);
        outs.into_par_iter().zip(ws).enumerate().for_each_init(
            || (Vec::new(), Vec::new()),
            |(scratch, inv): &mut (Vec<T>, Vec<T>), (b, (out, w))| {
                let (r0, r1) = (b * BLOCK_ROWS, ((b + 1) * BLOCK_ROWS).min(n));
                let keep = w.is_some();
                let block: &mut [T] = match w {
                    Some(w) => w,
                    None => {
                        scratch.resize((r1 - r0) * m, T::ZERO);
                        &mut scratch[..]
                    }
                };
                // exp(logit - max) per row; the normalisation 1 / (sum + 1e-30) is applied
                // to the (r1 - r0) x dv output rows instead of the (r1 - r0) x m weights
                dot_block(&s, d, r0, r1, block);
                inv.clear();
                for (i, row) in block.chunks_exact_mut(m).enumerate() {
                    inv.push(gaussian_row_exp(row, s.qn[r0 + i], &s.kn, neg_inv));
                }
                if let (Some(out), Some(v)) = (out, v) {
                    let ev = View::rowmajor(&*block, r1 - r0, m);
                    gemm(
                        T::ONE,
                        ev,
                        v.view(),
                        T::ZERO,
                        ViewMut::rowmajor(out, r1 - r0, v.cols),
                    );
                    for (row, &f) in out.chunks_exact_mut(v.cols).zip(inv.iter()) {
                        scale(row, f);
                    }
                }
                if keep {
                    for (row, &f) in block.chunks_exact_mut(m).zip(inv.iter()) {
                        scale(row, f);
                    }
                }
            },
        );
    })?;
    Ok(Attention { output, weights })
}

/// Query, key and value projections (`d x p`, `d x p`, `d x dv`) of a token table with `d`
/// columns.
#[derive(Debug, Clone, Copy)]
pub struct Projections<'a, T> {
    pub w_q: Mat<'a, T>,
    pub w_k: Mat<'a, T>,
    pub w_v: Mat<'a, T>,
}

impl<T: Real> Projections<'_, T> {
    /// Checks that the projections fit a table with `d` columns and are finite.
    pub fn validate(&self, d: usize) -> KernelResult<()> {
        for (name, w) in [("w_q", &self.w_q), ("w_k", &self.w_k), ("w_v", &self.w_v)] {
            if w.rows != d {
                return Err(kerr!(
                    "{name} must have one row per table column ({d}), got {} rows",
                    w.rows
                ));
            }
            w.check_has_cols(name)?;
            w.check_finite(name)?;
        }
        if self.w_q.cols != self.w_k.cols {
            return Err(kerr!(
                "w_q and w_k must have the same number of columns ({} vs {})",
                self.w_q.cols,
                self.w_k.cols
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Default)]
struct CellScratch<T> {
    attn: Scratch<T>,
    colsum: Vec<T>,
    inv: Vec<T>,
    pooled_in: Vec<T>,
}

/// Rank weight `1 / (i + 1)` of token `i` (1 without `rank_scale`).
#[inline]
fn rank_weight<T: Real>(i: usize, rank_scale: bool) -> T {
    if rank_scale {
        T::ONE / (T::from_f64(i as f64) + T::ONE)
    } else {
        T::ONE
    }
}

/// One cell: gather the projected queries and keys, Gaussian weights, and the mean-pooled
/// output `(1/n) sum_i sum_j alpha_ij v_j = (1/n) (c^T X) W_V` with `c` the weight column
/// sums.
#[allow(clippy::too_many_arguments)]
fn pool_cell<T: Real, I: TokenId>(
    tokens: &[I],
    table: &Mat<'_, T>,
    qk: &ProjectedRows<T>,
    w_v: &Mat<'_, T>,
    neg_inv: T,
    rank_scale: bool,
    s: &mut CellScratch<T>,
    out: &mut [T],
) {
    let n = tokens.len();
    if n == 0 {
        out.fill(T::ZERO);
        return;
    }
    let d = table.cols;
    qk.gather(0, tokens, rank_scale, &mut s.attn.q);
    qk.gather(1, tokens, rank_scale, &mut s.attn.k);
    let p = s.attn.q.len() / n;
    centre(&mut s.attn, p);
    s.colsum.clear();
    s.colsum.resize(n, T::ZERO);
    let mut block = std::mem::take(&mut s.attn.block);
    for r0 in (0..n).step_by(BLOCK_ROWS) {
        let r1 = (r0 + BLOCK_ROWS).min(n);
        block.resize((r1 - r0) * n, T::ZERO);
        let scratch = (&mut block[..], &mut s.inv);
        colsum_block(&s.attn, p, (r0, r1), neg_inv, scratch, &mut s.colsum);
    }
    s.attn.block = block;
    s.pooled_in.clear();
    s.pooled_in.resize(d, T::ZERO);
    for (j, (&c, t)) in s.colsum.iter().zip(tokens).enumerate() {
        let w = rank_weight::<T>(j, rank_scale);
        axpy(&mut s.pooled_in, c * w, table.row(t.get() as usize));
    }
    let u = View::rowmajor(&s.pooled_in, 1, d);
    gemm(
        T::ONE,
        u,
        w_v.view(),
        T::ZERO,
        ViewMut::rowmajor(out, 1, w_v.cols),
    );
    let inv_n = T::ONE / T::from_f64(n as f64);
    for x in out.iter_mut() {
        *x *= inv_n;
    }
}

/// Mean-pooled Gaussian self-attention of many cells (the scKGBERT encoders).
///
/// Cell `c`'s tokens `X` are the rows `cells.cell(c)` of `table`, scaled by `1 / (i + 1)`
/// when `rank_scale`; `q = X W_Q`, `k = X W_K`, `v = X W_V`, and the cell's row of the
/// result (`n_cells x dv`) is the mean over queries of the attended values. Cells without
/// tokens give zero rows. Cells run in parallel on `n_threads` threads.
pub fn gaussian_pool_cells<T: Real, I: TokenId>(
    cells: Ragged<'_, I>,
    table: Mat<'_, T>,
    w: Projections<'_, T>,
    sigma: f64,
    rank_scale: bool,
    n_threads: usize,
) -> KernelResult<Vec<T>> {
    cells.validate(table.rows)?;
    table.check_has_cols("table")?;
    table.check_finite("table")?;
    w.validate(table.cols)?;
    let neg_inv = neg_inv_bandwidth::<T>(sigma)?;
    let dv = w.w_v.cols;
    let n_cells = cells.n_cells();
    // Longest cells first, so that the last cells the threads pick up are short ones; the
    // results go back to the input order. Each thread keeps one scratch for all its cells.
    let mut order: Vec<usize> = (0..n_cells).collect();
    order.sort_by_key(|&c| std::cmp::Reverse(cells.cell(c).len()));
    let scratch: Vec<Mutex<CellScratch<T>>> = (0..n_threads).map(|_| Mutex::default()).collect();
    let sorted: Vec<T> = crate::pool::install(n_threads, || {
        let qk = ProjectedRows::new(&cells, &table, &[&w.w_q, &w.w_k]);
        let mut sorted = vec![T::ZERO; n_cells * dv];
        sorted
            .par_chunks_mut(dv)
            .zip(order.par_iter())
            .with_max_len(1)
            .for_each(|(row, &c)| {
                let slot = rayon::current_thread_index().unwrap_or(0) % scratch.len();
                let mut s = scratch[slot].lock().unwrap_or_else(|e| e.into_inner());
                let toks = cells.cell(c);
                pool_cell(toks, &table, &qk, &w.w_v, neg_inv, rank_scale, &mut s, row);
            });
        sorted
    })?;
    let mut out = vec![T::ZERO; n_cells * dv];
    for (row, &c) in sorted.chunks_exact(dv).zip(&order) {
        out[c * dv..(c + 1) * dv].copy_from_slice(row);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::data;

    /// Gathers the rows `tokens` of `table` into `out` (`n x d`), scaling row `i` by
    /// `1 / (i + 1)` when `rank_scale` (the S-encoder's rank weighting).
    fn gather<T: Real, I: TokenId>(
        table: &Mat<'_, T>,
        tokens: &[I],
        rank_scale: bool,
        out: &mut Vec<T>,
    ) {
        let d = table.cols;
        out.clear();
        out.reserve(tokens.len() * d);
        for (i, t) in tokens.iter().enumerate() {
            let row = table.row(t.get() as usize);
            if rank_scale {
                let w = T::ONE / (T::from_f64(i as f64) + T::ONE);
                out.extend(row.iter().map(|&x| x * w));
            } else {
                out.extend_from_slice(row);
            }
        }
    }

    /// `x @ w` for `x` (`rows x w.rows`) into `out`.
    fn project<T: Real>(x: &[T], w: &Mat<'_, T>, out: &mut Vec<T>) {
        let rows = x.len() / w.rows;
        out.clear();
        out.resize(rows * w.cols, T::ZERO);
        let xv = View::rowmajor(x, rows, w.rows);
        gemm(
            T::ONE,
            xv,
            w.view(),
            T::ZERO,
            ViewMut::rowmajor(out, rows, w.cols),
        );
    }

    fn naive(
        q: &[f64],
        k: &[f64],
        v: &[f64],
        n: usize,
        m: usize,
        d: usize,
        sigma: f64,
    ) -> (Vec<f64>, Vec<f64>) {
        let dv = v.len() / m;
        let mut w = vec![0.0; n * m];
        for i in 0..n {
            let lw: Vec<f64> = (0..m)
                .map(|j| {
                    let d2: f64 = (0..d).map(|p| (q[i * d + p] - k[j * d + p]).powi(2)).sum();
                    -d2 / (2.0 * sigma * sigma)
                })
                .collect();
            let mx = lw.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = lw.iter().map(|x| (x - mx).exp()).collect();
            let s: f64 = e.iter().sum();
            for j in 0..m {
                w[i * m + j] = e[j] / (s + 1e-30);
            }
        }
        let mut o = vec![0.0; n * dv];
        for i in 0..n {
            for j in 0..m {
                for c in 0..dv {
                    o[i * dv + c] += w[i * m + j] * v[j * dv + c];
                }
            }
        }
        (o, w)
    }

    #[test]
    fn matches_naive_formula_f64_and_f32() {
        for &(n, m, d, dv) in &[(1, 1, 1, 1), (5, 3, 4, 2), (70, 33, 7, 5), (33, 70, 16, 16)] {
            let (q, k, v) = (
                data(n * d, 1, 2.0),
                data(m * d, 2, 2.0),
                data(m * dv, 3, 1.0),
            );
            let (o_ref, w_ref) = naive(&q, &k, &v, n, m, d, 0.7);
            let r = gaussian_attention(
                Mat::new("q", &q, n, d).unwrap(),
                Mat::new("k", &k, m, d).unwrap(),
                Some(Mat::new("v", &v, m, dv).unwrap()),
                0.7,
                true,
                2,
            )
            .unwrap();
            for (a, b) in r.output.unwrap().iter().zip(&o_ref) {
                assert!((a - b).abs() < 1e-12);
            }
            for (a, b) in r.weights.unwrap().iter().zip(&w_ref) {
                assert!((a - b).abs() < 1e-12);
            }
            let (q32, k32, v32): (Vec<f32>, Vec<f32>, Vec<f32>) = (
                q.iter().map(|&x| x as f32).collect(),
                k.iter().map(|&x| x as f32).collect(),
                v.iter().map(|&x| x as f32).collect(),
            );
            let r32 = gaussian_attention(
                Mat::new("q", &q32, n, d).unwrap(),
                Mat::new("k", &k32, m, d).unwrap(),
                Some(Mat::new("v", &v32, m, dv).unwrap()),
                0.7,
                false,
                1,
            )
            .unwrap();
            assert!(r32.weights.is_none());
            for (a, b) in r32.output.unwrap().iter().zip(&o_ref) {
                assert!((*a as f64 - b).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn thread_count_does_not_change_bits() {
        let (n, m, d) = (100, 90, 8);
        let (q, k, v) = (
            data(n * d, 4, 3.0),
            data(m * d, 5, 3.0),
            data(m * d, 6, 1.0),
        );
        let run = |t| {
            gaussian_attention(
                Mat::new("q", &q, n, d).unwrap(),
                Mat::new("k", &k, m, d).unwrap(),
                Some(Mat::new("v", &v, m, d).unwrap()),
                1.3,
                true,
                t,
            )
            .unwrap()
        };
        assert_eq!(run(1), run(3));
    }

    #[test]
    fn bad_input_is_an_error() {
        let x = [0.0, 1.0, f64::NAN, 2.0];
        let ok = [0.0; 4];
        let q = Mat::new("q", &ok, 2, 2).unwrap();
        let err = gaussian_attention(q, Mat::new("k", &x, 2, 2).unwrap(), None, 1.0, true, 1);
        assert!(err
            .unwrap_err()
            .0
            .contains("keys has a non-finite value at row 1"));
        let err = gaussian_attention(q, Mat::new("k", &ok, 1, 4).unwrap(), None, 1.0, true, 1);
        assert!(err.unwrap_err().0.contains("same number of columns"));
        let err = gaussian_attention(q, q, None, 0.0, true, 1);
        assert!(err.unwrap_err().0.contains("sigma"));
        let err = gaussian_attention(q, q, None, 1e-200, true, 1);
        assert!(err.unwrap_err().0.contains("out of range"));
    }

    #[test]
    fn pooled_cells_equal_mean_of_full_attention() {
        let (vocab, d) = (12, 6);
        let table = data(vocab * d, 7, 1.0);
        let (wq, wk, wv) = (
            data(d * d, 8, 1.0),
            data(d * d, 9, 1.0),
            data(d * 4, 10, 1.0),
        );
        let tokens: Vec<i64> = vec![3, 1, 4, 11, 5, 9, 2, 6, 0];
        let offsets = [0i64, 4, 4, 5, 9];
        let w = Projections {
            w_q: Mat::new("w_q", &wq, d, d).unwrap(),
            w_k: Mat::new("w_k", &wk, d, d).unwrap(),
            w_v: Mat::new("w_v", &wv, d, 4).unwrap(),
        };
        let tab = Mat::new("table", &table, vocab, d).unwrap();
        let cells = Ragged {
            tokens: &tokens,
            offsets: &offsets,
        };
        let pooled = gaussian_pool_cells(cells, tab, w, 0.9, true, 2).unwrap();
        assert_eq!(pooled.len(), 4 * 4);
        assert!(pooled[4..8].iter().all(|&x| x == 0.0));
        for c in [0usize, 2, 3] {
            let toks = cells.cell(c);
            let n = toks.len();
            let mut x = Vec::new();
            gather(&tab, toks, true, &mut x);
            let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
            project(&x, &w.w_q, &mut q);
            project(&x, &w.w_k, &mut k);
            project(&x, &w.w_v, &mut v);
            let (o, _) = naive(&q, &k, &v, n, n, d, 0.9);
            for col in 0..4 {
                let mean: f64 = (0..n).map(|i| o[i * 4 + col]).sum::<f64>() / n as f64;
                assert!((pooled[c * 4 + col] - mean).abs() < 1e-13);
            }
        }
    }
}
