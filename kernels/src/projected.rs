//! Token-table rows projected once per batch of cells.
//!
//! A cell's queries and keys are rows of a token table times `W_Q` and `W_K`. Cells of a
//! batch share most of their genes, so projecting every row a batch uses once, instead of
//! once per cell that holds it, removes the per-cell projection GEMMs (about a sixth of the
//! work of a 900-token cell at d = 64). Row `r` of a projection is `table[r] @ w`, computed
//! in fixed blocks of [`PROJECT_ROWS`] rows, so the values do not depend on the thread
//! count.

use rayon::prelude::*;

use crate::matrix::{gemm, Mat, Ragged, TokenId, View, ViewMut};
use crate::real::Real;

/// Rows per block of a parallel projection.
pub const PROJECT_ROWS: usize = 128;

/// `x @ w` for `x` (`rows x w.rows`, row-major), row blocks in parallel (call inside the
/// pool).
pub(crate) fn project_par<T: Real>(x: &[T], w: &Mat<'_, T>) -> Vec<T> {
    let rows = x.len() / w.rows;
    let mut out = vec![T::ZERO; rows * w.cols];
    out.par_chunks_mut(PROJECT_ROWS * w.cols)
        .zip(x.par_chunks(PROJECT_ROWS * w.rows))
        .for_each(|(o, xb)| {
            let r = xb.len() / w.rows;
            gemm(
                T::ONE,
                View::rowmajor(xb, r, w.rows),
                w.view(),
                T::ZERO,
                ViewMut::rowmajor(o, r, w.cols),
            );
        });
    out
}

/// The table rows used by a batch of cells, each projected by every matrix of a list.
#[derive(Debug)]
pub(crate) struct ProjectedRows<T> {
    /// Table row -> compact row, `u32::MAX` for rows no cell uses.
    slot: Vec<u32>,
    /// One `used x w.cols` row-major matrix per projection.
    outs: Vec<(usize, Vec<T>)>,
}

impl<T: Real> ProjectedRows<T> {
    /// Projects the rows of `table` that occur in `cells` by each of `ws` (call inside the
    /// pool; `cells` must be validated against `table.rows`).
    pub fn new<I: TokenId>(cells: &Ragged<'_, I>, table: &Mat<'_, T>, ws: &[&Mat<'_, T>]) -> Self {
        let mut used = vec![false; table.rows];
        for t in cells.tokens {
            used[t.get() as usize] = true;
        }
        let mut slot = vec![u32::MAX; table.rows];
        let mut x = Vec::new();
        for (compact, r) in (0..table.rows).filter(|&r| used[r]).enumerate() {
            slot[r] = compact as u32;
            x.extend_from_slice(table.row(r));
        }
        let outs = ws.iter().map(|w| (w.cols, project_par(&x, w))).collect();
        Self { slot, outs }
    }

    /// Row `token` of projection `p`.
    #[inline]
    pub fn row(&self, p: usize, token: usize) -> &[T] {
        let (cols, data) = (&self.outs[p].0, &self.outs[p].1);
        let r = self.slot[token] as usize;
        &data[r * cols..(r + 1) * cols]
    }

    /// Gathers projection `p`'s rows of `tokens` into `out`, row `i` scaled by `1 / (i + 1)`
    /// when `rank_scale` (projection is linear, so this equals projecting the scaled rows).
    pub fn gather<I: TokenId>(&self, p: usize, tokens: &[I], rank_scale: bool, out: &mut Vec<T>) {
        out.clear();
        out.reserve(tokens.len() * self.outs[p].0);
        for (i, t) in tokens.iter().enumerate() {
            let row = self.row(p, t.get() as usize);
            if rank_scale {
                let w = T::ONE / (T::from_f64(i as f64) + T::ONE);
                out.extend(row.iter().map(|&x| x * w));
            } else {
                out.extend_from_slice(row);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_equal_projecting_each_row() {
        // 5-row table, 3 columns; cells use rows 4, 1 and 1, 2 (row 0 and 3 unused)
        let table: Vec<f64> = (0..15).map(|i| (i as f64 * 0.37).sin()).collect();
        let w: Vec<f64> = (0..6).map(|i| (i as f64 * 0.91).cos()).collect();
        let t = Mat::new("table", &table, 5, 3).unwrap();
        let wm = Mat::new("w", &w, 3, 2).unwrap();
        let tokens: [i64; 4] = [4, 1, 1, 2];
        let cells = Ragged {
            tokens: &tokens,
            offsets: &[0, 2, 4],
        };
        let p = ProjectedRows::new(&cells, &t, &[&wm, &wm]);
        for r in [1usize, 2, 4] {
            for c in 0..2 {
                let want: f64 = (0..3).map(|k| table[r * 3 + k] * w[k * 2 + c]).sum();
                assert!((p.row(1, r)[c] - want).abs() < 1e-15);
            }
        }
        let mut out = Vec::new();
        p.gather(0, &tokens[..2], true, &mut out);
        assert_eq!(out.len(), 4);
        assert!((out[2] - p.row(0, 1)[0] / 2.0).abs() < 1e-16);
    }
}
