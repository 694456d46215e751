//! The K-encoder's neighbourhood embeddings (scKGBERT; seed 000, section 1.2).
//!
//! For gene `g` with prior-graph row `c_g`, `h_g = sum_{j: c_gj > 0} w_j e_j` with
//! `w_j = c_gj / (sum_{j: c_gj > 0} c_gj + 1e-30)`; a gene without a positive entry keeps
//! its own embedding `e_g`. `h_g` depends on `g` only, so a whole vocabulary's table is
//! computed once and the cells then gather from it.

use rayon::prelude::*;

use crate::error::KernelResult;
use crate::kerr;
use crate::matrix::Mat;
use crate::real::Real;
use crate::simd::axpy;
use crate::tokenize::CsrView;

/// Neighbourhood embeddings of the rows of a gene x gene CSR matrix `graph` (columns index
/// the rows of `embeddings`). Row `r` falls back to `embeddings[row_genes[r]]` (to
/// `embeddings[r]` without `row_genes`) when it has no positive entry. Returns
/// `graph.n_rows() x d`, row-major.
pub fn neighbour_mean<T: Real>(
    graph: CsrView<'_, T>,
    embeddings: Mat<'_, T>,
    row_genes: Option<&[i64]>,
    n_threads: usize,
) -> KernelResult<Vec<T>> {
    graph.validate()?;
    if graph.n_cols != embeddings.rows {
        return Err(kerr!(
            "the graph has {} columns but there are {} embeddings",
            graph.n_cols,
            embeddings.rows
        ));
    }
    embeddings.check_has_cols("embeddings")?;
    embeddings.check_finite("embeddings")?;
    let n_rows = graph.n_rows();
    match row_genes {
        Some(g) if g.len() != n_rows => {
            return Err(kerr!(
                "row_genes has {} entries for {n_rows} graph rows",
                g.len()
            ))
        }
        Some(g) => {
            if let Some(&bad) = g.iter().find(|&&x| x < 0 || x as usize >= embeddings.rows) {
                return Err(kerr!(
                    "row_genes entry {bad} is outside 0..{}",
                    embeddings.rows
                ));
            }
        }
        None if n_rows > embeddings.rows => {
            return Err(kerr!(
                "the graph has {n_rows} rows but only {} embeddings to fall back on",
                embeddings.rows
            ))
        }
        None => {}
    }
    let d = embeddings.cols;
    let mut out = vec![T::ZERO; n_rows * d];
    crate::pool::install(n_threads, || {
        out.par_chunks_mut(d).enumerate().for_each(|(r, h)| {
            let (lo, hi) = (graph.indptr[r] as usize, graph.indptr[r + 1] as usize);
            let (cols, vals) = (&graph.indices[lo..hi], &graph.data[lo..hi]);
            let total: T = vals.iter().filter(|&&c| c > T::ZERO).copied().sum();
            if vals.iter().any(|&c| c > T::ZERO) {
                let denom = total + T::TINY;
                for (&j, &c) in cols.iter().zip(vals) {
                    if c > T::ZERO {
                        axpy(h, c / denom, embeddings.row(j as usize));
                    }
                }
            } else {
                let g = row_genes.map_or(r, |g| g[r] as usize);
                h.copy_from_slice(embeddings.row(g));
            }
        });
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_mean_and_fallback() {
        // 3 genes, 2-d embeddings; gene 0 - 1 (0.5), gene 0 - 2 (1.5); gene 1 has only a
        // negative entry, so it keeps its own embedding; gene 2 links to 0.
        let emb = [1.0, 0.0, 0.0, 1.0, 2.0, 2.0];
        let graph = CsrView {
            indptr: &[0, 2, 3, 4],
            indices: &[1, 2, 0, 0],
            data: &[0.5, 1.5, -1.0, 0.25],
            n_cols: 3,
        };
        let e = Mat::new("embeddings", &emb, 3, 2).unwrap();
        let h = neighbour_mean(graph, e, None, 2).unwrap();
        let want: [f64; 6] = [
            0.25 * 0.0 + 0.75 * 2.0,
            0.25 * 1.0 + 0.75 * 2.0,
            0.0,
            1.0,
            1.0,
            0.0,
        ];
        for (a, b) in h.iter().zip(want) {
            assert!((a - b).abs() < 1e-15, "{h:?}");
        }
        // two selected rows, with the genes they stand for
        let sub = CsrView {
            indptr: &[0, 1, 1],
            indices: &[0],
            data: &[0.3],
            n_cols: 3,
        };
        let h = neighbour_mean(sub, e, Some(&[2, 2]), 1).unwrap();
        assert_eq!(h, vec![1.0, 0.0, 2.0, 2.0]);
        let err = neighbour_mean(sub, e, Some(&[2, 3]), 1).unwrap_err();
        assert!(err.0.contains("row_genes entry 3"));
    }
}
