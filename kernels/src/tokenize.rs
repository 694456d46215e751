//! Geneformer rank-value encoding of a cell x gene CSR matrix.
//!
//! For cell `c` and stored entry `(c, g, x)` the value ranked is
//! `x / n_counts[c] * target_sum / median[g]`, computed in f64 in that order. Entries with
//! `x <= 0`, or whose gene has no token (`gene_token[g] < 0`), are left out. Each cell's
//! tokens are sorted by descending value, ties broken by ascending token id, and truncated
//! to `max_len`. Cells are independent and run in parallel.

use rayon::prelude::*;

use crate::error::KernelResult;
use crate::kerr;

/// Ragged token lists: the tokens of cell `c` are `tokens[offsets[c]..offsets[c + 1]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaggedTokens {
    pub tokens: Vec<i32>,
    pub offsets: Vec<i64>,
}

/// A CSR matrix borrowed from its three arrays.
#[derive(Debug, Clone, Copy)]
pub struct CsrView<'a, T> {
    pub indptr: &'a [i64],
    pub indices: &'a [i32],
    pub data: &'a [T],
    pub n_cols: usize,
}

impl<T> CsrView<'_, T> {
    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// Checks the structure once so the hot loop can index without surprises.
    pub fn validate(&self) -> KernelResult<()> {
        if self.indptr.is_empty() {
            return Err(kerr!("indptr must have at least one entry"));
        }
        if self.indices.len() != self.data.len() {
            return Err(kerr!(
                "indices and data differ in length ({} vs {})",
                self.indices.len(),
                self.data.len()
            ));
        }
        if self.indptr[0] != 0 {
            return Err(kerr!("indptr must start at 0, got {}", self.indptr[0]));
        }
        for w in self.indptr.windows(2) {
            if w[1] < w[0] {
                return Err(kerr!("indptr must be non-decreasing"));
            }
        }
        let last = *self.indptr.last().unwrap_or(&0);
        if last as usize != self.data.len() {
            return Err(kerr!(
                "indptr ends at {last} but there are {} stored entries",
                self.data.len()
            ));
        }
        if let Some(&bad) = self
            .indices
            .iter()
            .find(|&&j| j < 0 || j as usize >= self.n_cols)
        {
            return Err(kerr!("column index {bad} is outside 0..{}", self.n_cols));
        }
        Ok(())
    }
}

/// Per-gene and per-cell parameters of the encoding.
#[derive(Debug, Clone, Copy)]
pub struct RankParams<'a> {
    /// Token id of each column, or a negative value to drop the column.
    pub gene_token: &'a [i32],
    /// Normalisation factor of each column (the nonzero corpus median); must be > 0 for
    /// every kept column.
    pub gene_median: &'a [f64],
    /// Total counts of each cell (over all genes, before any gene is dropped).
    pub n_counts: &'a [f64],
    pub target_sum: f64,
    pub max_len: usize,
}

/// Rank-value encodes every row of `x` on a pool of `n_threads` threads.
pub fn rank_encode_csr<T>(
    x: CsrView<'_, T>,
    p: RankParams<'_>,
    n_threads: usize,
) -> KernelResult<RaggedTokens>
where
    T: Copy + Into<f64> + Sync,
{
    x.validate()?;
    let n_rows = x.n_rows();
    if p.gene_token.len() != x.n_cols || p.gene_median.len() != x.n_cols {
        return Err(kerr!(
            "gene_token ({}) and gene_median ({}) must have one entry per column ({})",
            p.gene_token.len(),
            p.gene_median.len(),
            x.n_cols
        ));
    }
    if p.n_counts.len() != n_rows {
        return Err(kerr!(
            "n_counts has {} entries for {} cells",
            p.n_counts.len(),
            n_rows
        ));
    }
    for (g, (&t, &m)) in p.gene_token.iter().zip(p.gene_median).enumerate() {
        if t >= 0 && !(m.is_finite() && m > 0.0) {
            return Err(kerr!(
                "gene {g} has token {t} but median {m}; medians must be > 0"
            ));
        }
    }
    if !(p.target_sum.is_finite() && p.target_sum > 0.0) {
        return Err(kerr!(
            "target_sum must be a positive number, got {}",
            p.target_sum
        ));
    }

    let per_cell: Vec<Vec<i32>> = crate::pool::install(n_threads, || {
        (0..n_rows)
            .into_par_iter()
            .map(|c| encode_row(&x, &p, c))
            .collect()
    })?;

    let total: usize = per_cell.iter().map(Vec::len).sum();
    let mut tokens = Vec::with_capacity(total);
    let mut offsets = Vec::with_capacity(n_rows + 1);
    offsets.push(0i64);
    for cell in per_cell {
        tokens.extend_from_slice(&cell);
        offsets.push(tokens.len() as i64);
    }
    Ok(RaggedTokens { tokens, offsets })
}

fn encode_row<T: Copy + Into<f64>>(x: &CsrView<'_, T>, p: &RankParams<'_>, c: usize) -> Vec<i32> {
    let (lo, hi) = (x.indptr[c] as usize, x.indptr[c + 1] as usize);
    let n_counts = p.n_counts[c];
    let mut entries: Vec<(f64, i32)> = Vec::with_capacity(hi - lo);
    for k in lo..hi {
        let g = x.indices[k] as usize;
        let tok = p.gene_token[g];
        let v: f64 = x.data[k].into();
        if tok < 0 || v.is_nan() || v <= 0.0 {
            continue;
        }
        let value = v / n_counts * p.target_sum / p.gene_median[g];
        entries.push((value, tok));
    }
    let by_rank = |a: &(f64, i32), b: &(f64, i32)| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1));
    if entries.len() > p.max_len {
        entries.select_nth_unstable_by(p.max_len, by_rank);
        entries.truncate(p.max_len);
    }
    entries.sort_unstable_by(by_rank);
    entries.into_iter().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(
        indptr: &[i64],
        indices: &[i32],
        data: &[f64],
        n_cols: usize,
        medians: &[f64],
        max_len: usize,
    ) -> RaggedTokens {
        let tokens: Vec<i32> = (0..n_cols as i32).collect();
        let n_counts: Vec<f64> = indptr
            .windows(2)
            .map(|w| data[w[0] as usize..w[1] as usize].iter().sum())
            .collect();
        rank_encode_csr(
            CsrView {
                indptr,
                indices,
                data,
                n_cols,
            },
            RankParams {
                gene_token: &tokens,
                gene_median: medians,
                n_counts: &n_counts,
                target_sum: 1e4,
                max_len,
            },
            2,
        )
        .unwrap()
    }

    #[test]
    fn seed_example_uniform_medians() {
        // expression [0, 5, 1, 10, 3] -> [3, 1, 4, 2]
        let r = encode(
            &[0, 4],
            &[1, 2, 3, 4],
            &[5.0, 1.0, 10.0, 3.0],
            5,
            &[1.0; 5],
            2048,
        );
        assert_eq!(r.tokens, vec![3, 1, 4, 2]);
        assert_eq!(r.offsets, vec![0, 4]);
    }

    #[test]
    fn medians_reorder_and_ties_go_to_lower_token() {
        // values 2/1 = 2, 4/2 = 2, 1/0.25 = 4 -> token 2 first, then tie 0 < 1
        let r = encode(
            &[0, 3],
            &[0, 1, 2],
            &[2.0, 4.0, 1.0],
            3,
            &[1.0, 2.0, 0.25],
            2048,
        );
        assert_eq!(r.tokens, vec![2, 0, 1]);
    }

    #[test]
    fn truncates_and_handles_empty_rows() {
        let r = encode(&[0, 0, 3], &[0, 1, 2], &[1.0, 3.0, 2.0], 3, &[1.0; 3], 2);
        assert_eq!(r.tokens, vec![1, 2]);
        assert_eq!(r.offsets, vec![0, 0, 2]);
    }

    #[test]
    fn dropped_genes_and_zeros_are_left_out() {
        let data = [0.0, 3.0, 2.0];
        let r = rank_encode_csr(
            CsrView {
                indptr: &[0, 3],
                indices: &[0, 1, 2],
                data: &data,
                n_cols: 3,
            },
            RankParams {
                gene_token: &[7, -1, 9],
                gene_median: &[1.0, f64::NAN, 1.0],
                n_counts: &[5.0],
                target_sum: 1e4,
                max_len: 10,
            },
            1,
        )
        .unwrap();
        assert_eq!(r.tokens, vec![9]);
    }

    #[test]
    fn bad_structure_is_an_error() {
        let data = [1.0];
        let err = rank_encode_csr(
            CsrView {
                indptr: &[0, 1],
                indices: &[5],
                data: &data,
                n_cols: 3,
            },
            RankParams {
                gene_token: &[0, 1, 2],
                gene_median: &[1.0; 3],
                n_counts: &[1.0],
                target_sum: 1e4,
                max_len: 10,
            },
            1,
        )
        .unwrap_err();
        assert!(err.0.contains("column index 5"));
    }
}
