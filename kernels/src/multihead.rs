//! Multi-head scaled dot-product attention (Geneformer; seed 000, section 1.3).
//!
//! Head `h` uses columns `h*dh..(h+1)*dh` (`dh = d / n_heads`) of single `d x d`
//! projections: `alpha^h = softmax(Q_h K_h^T / sqrt(dh))`, max-subtracted with `1e-30` in
//! the denominator, and `head_h = alpha^h V_h`. The kernels return the concatenated heads
//! *before* `W_O` (columns past `n_heads * dh` stay zero, as when `d` is not a multiple of
//! `n_heads`); the caller applies `W_O`. Blocks of [`BLOCK_ROWS`] queries run in parallel
//! with fixed reduction orders, so the thread count never changes the result.

use rayon::prelude::*;

use crate::error::KernelResult;
use crate::gaussian::{opt_chunks, Attention};
use crate::kerr;
use crate::matrix::{gemm, Mat, Ragged, TokenId, View, ViewMut};
use crate::projected::{project_par, ProjectedRows};
use crate::real::Real;
use crate::simd::{add_into, add_scale, axpy, softmax_row, softmax_row_into};

/// Query rows per block. Larger than the Gaussian kernel's: the score GEMM has only `dh`
/// columns of work per key, so repacking the keys for every block costs relatively more.
pub const BLOCK_ROWS: usize = 256;

/// Query rows per block when pooling cells (one cell per thread, so the block stays in
/// that core's cache).
const POOL_BLOCK_ROWS: usize = 64;

/// The `d x d` projections of one attention layer; `w_v` is absent when only weights are
/// wanted.
#[derive(Debug, Clone, Copy)]
pub struct Heads<'a, T> {
    pub w_q: Mat<'a, T>,
    pub w_k: Mat<'a, T>,
    pub w_v: Option<Mat<'a, T>>,
    pub n_heads: usize,
}

impl<T: Real> Heads<'_, T> {
    /// Checks shapes and values against inputs with `d` columns; returns the head width.
    pub fn validate(&self, d: usize) -> KernelResult<usize> {
        if d == 0 {
            return Err(kerr!("the input must have at least one column"));
        }
        if self.n_heads == 0 || self.n_heads > d {
            return Err(kerr!(
                "n_heads must be between 1 and d = {d}, got {}",
                self.n_heads
            ));
        }
        let named = [
            ("w_q", Some(&self.w_q)),
            ("w_k", Some(&self.w_k)),
            ("w_v", self.w_v.as_ref()),
        ];
        for (name, w) in named {
            if let Some(w) = w {
                if (w.rows, w.cols) != (d, d) {
                    return Err(kerr!(
                        "{name} must be {d} x {d}, got {} x {}",
                        w.rows,
                        w.cols
                    ));
                }
                w.check_finite(name)?;
            }
        }
        Ok(d / self.n_heads)
    }
}

/// Raw scores `Q_h K_h^T` of head `h` for query rows `r0..r1` into `out` (`(r1 - r0) x n`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn score_block<T: Real>(
    q: &[T],
    k: &[T],
    n: usize,
    d: usize,
    dh: usize,
    h: usize,
    r0: usize,
    r1: usize,
    out: &mut [T],
) {
    let (c0, c1) = (h * dh, (h + 1) * dh);
    let qh = View::rowmajor(q, n, d).rows(r0, r1).cols(c0, c1);
    let kh = View::rowmajor(k, n, d).cols(c0, c1);
    gemm(
        T::ONE,
        qh,
        kh.t(),
        T::ZERO,
        ViewMut::rowmajor(out, r1 - r0, n),
    );
}

/// Rank weight of the value at position `pos` (0 = highest rank) of a cell of `n` tokens:
/// `ln((n + 1) / (pos + 1))`, positive, decreasing with the position (the log of the inverse
/// rank quantile). A rank-aware model scales each token's value by it.
pub fn rank_weight<T: Real>(pos: usize, n: usize) -> T {
    T::from_f64(((n as f64 + 1.0) / (pos as f64 + 1.0)).ln())
}

/// `1 / sqrt(dh)`.
pub(crate) fn score_scale<T: Real>(dh: usize) -> T {
    T::ONE / T::from_f64((dh as f64).sqrt())
}

/// Softmax weights of head `h` for query rows `r0..r1` into `out` (`(r1 - r0) x n`).
#[allow(clippy::too_many_arguments)]
fn head_block<T: Real>(
    q: &[T],
    k: &[T],
    n: usize,
    d: usize,
    dh: usize,
    h: usize,
    r0: usize,
    r1: usize,
    out: &mut [T],
) {
    score_block(q, k, n, d, dh, h, r0, r1, out);
    let scale = score_scale::<T>(dh);
    for row in out.chunks_exact_mut(n) {
        softmax_row(row, scale);
    }
}

/// Multi-head self-attention of `x` (`n x d`). Returns the concatenated heads (`n x d`,
/// before `W_O`) when `heads.w_v` is given and the head-averaged `n x n` weights when
/// `want_weights`.
pub fn multi_head_attention<T: Real>(
    x: Mat<'_, T>,
    heads: Heads<'_, T>,
    want_weights: bool,
    n_threads: usize,
) -> KernelResult<Attention<T>> {
    let d = x.cols;
    let dh = heads.validate(d)?;
    x.check_finite("x")?;
    let n = x.rows;
    let n_heads = heads.n_heads;
    let nb = n.div_ceil(BLOCK_ROWS);
    let mut output = heads.w_v.map(|_| vec![T::ZERO; n * d]);
    let mut weights = want_weights.then(|| vec![T::ZERO; n * n]);
    crate::pool::install(n_threads, || {
        let q = project_par(x.data, &heads.w_q);
        let k = project_par(x.data, &heads.w_k);
        let v = heads.w_v.map(|w| project_par(x.data, &w));
        let outs = opt_chunks(output.as_deref_mut(), BLOCK_ROWS * d, nb);
        let ws = opt_chunks(weights.as_deref_mut(), BLOCK_ROWS * n, nb);
        let inv_heads = T::ONE / T::from_f64(n_heads as f64);
        outs.into_par_iter().zip(ws).enumerate().for_each_init(
            Vec::new,
            |block: &mut Vec<T>, (b, (mut out, mut avg))| {
                let (r0, r1) = (b * BLOCK_ROWS, ((b + 1) * BLOCK_ROWS).min(n));
                block.resize((r1 - r0) * n, T::ZERO);
                for h in 0..n_heads {
                    head_block(&q, &k, n, d, dh, h, r0, r1, block);
                    if let Some(avg) = avg.as_deref_mut() {
                        // sum over heads, scaled by 1/H with the last one
                        if h == 0 {
                            avg.copy_from_slice(block);
                        } else if h + 1 < n_heads {
                            add_into(avg, block);
                        } else {
                            add_scale(avg, block, inv_heads);
                        }
                    }
                    if let (Some(out), Some(v)) = (out.as_deref_mut(), v.as_ref()) {
                        let wv = View::rowmajor(&block[..], r1 - r0, n);
                        let vh = View::rowmajor(v, n, d).cols(h * dh, (h + 1) * dh);
                        let o = ViewMut::cols_of(out, r1 - r0, d, h * dh, (h + 1) * dh);
                        gemm(T::ONE, wv, vh, T::ZERO, o);
                    }
                }
            },
        );
    })?;
    Ok(Attention { output, weights })
}

#[derive(Debug, Default)]
struct CellScratch<T> {
    q: Vec<T>,
    k: Vec<T>,
    block: Vec<T>,
    colsum: Vec<T>,
    pooled_in: Vec<T>,
}

/// One cell's mean over queries of the concatenated heads:
/// `(1/n) sum_i head_h(i) = (1/n) (c_h^T X) W_V[:, head h]`, `c_h` the column sums of head
/// `h`'s weights.
#[allow(clippy::too_many_arguments)]
fn pool_cell<T: Real, I: TokenId>(
    tokens: &[I],
    table: &Mat<'_, T>,
    qk: &ProjectedRows<T>,
    heads: &Heads<'_, T>,
    w_v: &Mat<'_, T>,
    dh: usize,
    rank_values: bool,
    s: &mut CellScratch<T>,
    out: &mut [T],
) {
    out.fill(T::ZERO);
    let n = tokens.len();
    if n == 0 {
        return;
    }
    let d = table.cols;
    qk.gather(0, tokens, false, &mut s.q);
    qk.gather(1, tokens, false, &mut s.k);
    s.colsum.clear();
    s.colsum.resize(heads.n_heads * n, T::ZERO);
    let scale = score_scale::<T>(dh);
    for r0 in (0..n).step_by(POOL_BLOCK_ROWS) {
        let r1 = (r0 + POOL_BLOCK_ROWS).min(n);
        s.block.resize((r1 - r0) * n, T::ZERO);
        for h in 0..heads.n_heads {
            score_block(&s.q, &s.k, n, d, dh, h, r0, r1, &mut s.block);
            let c = &mut s.colsum[h * n..(h + 1) * n];
            for row in s.block.chunks_exact_mut(n) {
                softmax_row_into(row, scale, c);
            }
        }
    }
    let inv_n = T::ONE / T::from_f64(n as f64);
    for h in 0..heads.n_heads {
        s.pooled_in.clear();
        s.pooled_in.resize(d, T::ZERO);
        for (j, (&c, t)) in s.colsum[h * n..(h + 1) * n].iter().zip(tokens).enumerate() {
            let c = if rank_values {
                c * rank_weight::<T>(j, n)
            } else {
                c
            };
            axpy(&mut s.pooled_in, c, table.row(t.get() as usize));
        }
        let u = View::rowmajor(&s.pooled_in, 1, d);
        let wv = w_v.view().cols(h * dh, (h + 1) * dh);
        gemm(
            inv_n,
            u,
            wv,
            T::ZERO,
            ViewMut::cols_of(out, 1, d, h * dh, (h + 1) * dh),
        );
    }
}

/// Mean-pooled multi-head self-attention of many cells (the Geneformer cell embedding
/// before `W_O`): cell `c`'s input is the rows `cells.cell(c)` of `table`; its row of the
/// result (`n_cells x d`) is the mean over queries of the concatenated heads. Cells without
/// tokens give zero rows. Cells run in parallel on `n_threads` threads.
pub fn mha_pool_cells<T: Real, I: TokenId>(
    cells: Ragged<'_, I>,
    table: Mat<'_, T>,
    heads: Heads<'_, T>,
    n_threads: usize,
) -> KernelResult<Vec<T>> {
    mha_pool_cells_ranked(cells, table, heads, false, n_threads)
}

/// [`mha_pool_cells`], with each token's value scaled by its [`rank_weight`] when
/// `rank_values` (the attention weights do not change: only the values are rank-aware).
pub fn mha_pool_cells_ranked<T: Real, I: TokenId>(
    cells: Ragged<'_, I>,
    table: Mat<'_, T>,
    heads: Heads<'_, T>,
    rank_values: bool,
    n_threads: usize,
) -> KernelResult<Vec<T>> {
    cells.validate(table.rows)?;
    let d = table.cols;
    let dh = heads.validate(d)?;
    let w_v = heads
        .w_v
        .ok_or_else(|| kerr!("w_v is required to pool cells"))?;
    table.check_finite("table")?;
    let mut out = vec![T::ZERO; cells.n_cells() * d];
    crate::pool::install(n_threads, || {
        let qk = ProjectedRows::new(&cells, &table, &[&heads.w_q, &heads.w_k]);
        out.par_chunks_mut(d)
            .enumerate()
            .for_each_init(CellScratch::default, |s, (c, row)| {
                pool_cell(
                    cells.cell(c),
                    &table,
                    &qk,
                    &heads,
                    &w_v,
                    dh,
                    rank_values,
                    s,
                    row,
                )
            });
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::data;

    fn matmul(a: &[f64], b: &[f64], n: usize, k: usize, m: usize) -> Vec<f64> {
        let mut c = vec![0.0; n * m];
        for i in 0..n {
            for p in 0..k {
                for j in 0..m {
                    c[i * m + j] += a[i * k + p] * b[p * m + j];
                }
            }
        }
        c
    }

    /// Straight from the formula: (concatenated heads, head-averaged weights).
    fn naive(
        x: &[f64],
        wq: &[f64],
        wk: &[f64],
        wv: &[f64],
        n: usize,
        d: usize,
        h: usize,
    ) -> (Vec<f64>, Vec<f64>) {
        let dh = d / h;
        let (q, k, v) = (
            matmul(x, wq, n, d, d),
            matmul(x, wk, n, d, d),
            matmul(x, wv, n, d, d),
        );
        let mut out = vec![0.0; n * d];
        let mut avg = vec![0.0; n * n];
        for hh in 0..h {
            for i in 0..n {
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..dh)
                            .map(|p| q[i * d + hh * dh + p] * k[j * d + hh * dh + p])
                            .sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                let tot: f64 = e.iter().sum::<f64>() + 1e-30;
                for j in 0..n {
                    let w = e[j] / tot;
                    avg[i * n + j] += w / h as f64;
                    for p in 0..dh {
                        out[i * d + hh * dh + p] += w * v[j * d + hh * dh + p];
                    }
                }
            }
        }
        (out, avg)
    }

    #[test]
    fn matches_naive_formula() {
        for &(n, d, h) in &[(1, 1, 1), (2, 4, 2), (40, 6, 4), (70, 8, 2)] {
            let x = data(n * d, 1, 2.0);
            let (wq, wk, wv) = (
                data(d * d, 2, 2.0),
                data(d * d, 3, 2.0),
                data(d * d, 4, 1.0),
            );
            let (o_ref, a_ref) = naive(&x, &wq, &wk, &wv, n, d, h);
            let heads = Heads {
                w_q: Mat::new("w_q", &wq, d, d).unwrap(),
                w_k: Mat::new("w_k", &wk, d, d).unwrap(),
                w_v: Some(Mat::new("w_v", &wv, d, d).unwrap()),
                n_heads: h,
            };
            let r = multi_head_attention(Mat::new("x", &x, n, d).unwrap(), heads, true, 2).unwrap();
            for (a, b) in r.output.as_ref().unwrap().iter().zip(&o_ref) {
                assert!((a - b).abs() < 1e-12, "{a} vs {b}");
            }
            for (a, b) in r.weights.as_ref().unwrap().iter().zip(&a_ref) {
                assert!((a - b).abs() < 1e-12);
            }
            assert_eq!(
                r,
                multi_head_attention(Mat::new("x", &x, n, d).unwrap(), heads, true, 1).unwrap()
            );
        }
    }

    #[test]
    fn pooled_cells_equal_mean_of_heads() {
        let (vocab, d, h) = (9, 8, 4);
        let table = data(vocab * d, 5, 1.0);
        let (wq, wk, wv) = (
            data(d * d, 6, 3.0),
            data(d * d, 7, 3.0),
            data(d * d, 8, 1.0),
        );
        let heads = Heads {
            w_q: Mat::new("w_q", &wq, d, d).unwrap(),
            w_k: Mat::new("w_k", &wk, d, d).unwrap(),
            w_v: Some(Mat::new("w_v", &wv, d, d).unwrap()),
            n_heads: h,
        };
        let tokens = [8i32, 0, 3, 3, 5, 1];
        let offsets = [0i64, 0, 1, 6];
        let cells = Ragged {
            tokens: &tokens,
            offsets: &offsets,
        };
        let tab = Mat::new("table", &table, vocab, d).unwrap();
        let pooled = mha_pool_cells(cells, tab, heads, 2).unwrap();
        assert!(pooled[..d].iter().all(|&v| v == 0.0));
        for c in 1..3 {
            let toks = cells.cell(c);
            let x: Vec<f64> = toks
                .iter()
                .flat_map(|&t| tab.row(t as usize).to_vec())
                .collect();
            let (o, _) = naive(&x, &wq, &wk, &wv, toks.len(), d, h);
            for col in 0..d {
                let mean = (0..toks.len()).map(|i| o[i * d + col]).sum::<f64>() / toks.len() as f64;
                assert!((pooled[c * d + col] - mean).abs() < 1e-13);
            }
        }
    }

    #[test]
    fn rank_weighted_values_equal_the_weighted_naive_layer() {
        let (vocab, d, h) = (9, 8, 2);
        let table = data(vocab * d, 11, 1.0);
        let (wq, wk, wv) = (
            data(d * d, 12, 3.0),
            data(d * d, 13, 3.0),
            data(d * d, 14, 1.0),
        );
        let heads = Heads {
            w_q: Mat::new("w_q", &wq, d, d).unwrap(),
            w_k: Mat::new("w_k", &wk, d, d).unwrap(),
            w_v: Some(Mat::new("w_v", &wv, d, d).unwrap()),
            n_heads: h,
        };
        let tokens = [4i32, 0, 8, 3, 5, 1, 7];
        let offsets = [0i64, 2, 7];
        let cells = Ragged {
            tokens: &tokens,
            offsets: &offsets,
        };
        let tab = Mat::new("table", &table, vocab, d).unwrap();
        let pooled = mha_pool_cells_ranked(cells, tab, heads, true, 2).unwrap();
        for c in 0..2 {
            let toks = cells.cell(c);
            let n = toks.len();
            let x: Vec<f64> = toks
                .iter()
                .flat_map(|&t| tab.row(t as usize).to_vec())
                .collect();
            // attention from the unweighted rows, values from the weighted rows
            let (_, a) = naive(&x, &wq, &wk, &wv, n, d, h);
            let xw: Vec<f64> = (0..n * d)
                .map(|k| x[k] * rank_weight::<f64>(k / d, n))
                .collect();
            let v = matmul(&xw, &wv, n, d, d);
            let dh = d / h;
            for hh in 0..h {
                // per-head weights: recompute from the formula
                let q = matmul(&x, &wq, n, d, d);
                let k = matmul(&x, &wk, n, d, d);
                for col in hh * dh..(hh + 1) * dh {
                    let mut mean = 0.0;
                    for i in 0..n {
                        let s: Vec<f64> = (0..n)
                            .map(|j| {
                                (0..dh)
                                    .map(|p| q[i * d + hh * dh + p] * k[j * d + hh * dh + p])
                                    .sum::<f64>()
                                    / (dh as f64).sqrt()
                            })
                            .collect();
                        let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                        let e: Vec<f64> = s.iter().map(|x| (x - mx).exp()).collect();
                        let tot: f64 = e.iter().sum::<f64>() + 1e-30;
                        for j in 0..n {
                            mean += e[j] / tot * v[j * d + col];
                        }
                    }
                    mean /= n as f64;
                    assert!((pooled[c * d + col] - mean).abs() < 1e-12, "{c} {col}");
                }
            }
            assert_eq!(a.len(), n * n);
        }
        assert!(rank_weight::<f64>(0, 3) > rank_weight::<f64>(2, 3));
        assert!(rank_weight::<f64>(2, 3) > 0.0);
        let plain = mha_pool_cells(cells, tab, heads, 1).unwrap();
        assert_eq!(
            plain,
            mha_pool_cells_ranked(cells, tab, heads, false, 2).unwrap()
        );
    }

    #[test]
    fn uneven_heads_leave_trailing_columns_zero_and_bad_heads_fail() {
        let (n, d) = (3, 5);
        let x = data(n * d, 9, 1.0);
        let w = data(d * d, 10, 1.0);
        let m = Mat::new("w", &w, d, d).unwrap();
        let heads = Heads {
            w_q: m,
            w_k: m,
            w_v: Some(m),
            n_heads: 2,
        };
        let r = multi_head_attention(Mat::new("x", &x, n, d).unwrap(), heads, false, 1).unwrap();
        let out = r.output.unwrap();
        assert!((0..n).all(|i| out[i * d + 4] == 0.0));
        let bad = Heads {
            n_heads: 6,
            ..heads
        };
        let e = multi_head_attention(Mat::new("x", &x, n, d).unwrap(), bad, false, 1);
        assert!(e.unwrap_err().0.contains("n_heads"));
    }
}
