//! Multi-head attention of many cells, fused with its aggregation into gene x gene sums.
//!
//! For each cell (rows `cells.cell(c)` of `table`) the head-averaged attention `A` (`n x n`,
//! the formula of [`crate::multihead`]) is computed block by block and only the columns of
//! *universe* tokens are kept. With `u(t)` the universe index of token `t` (or none):
//!
//! - `sums[u_i, u_j] += A[i, j]` for every pair of universe tokens `i`, `j` of the cell;
//! - `incoming[u_j] += sum_i A[i, j]` over *all* query rows `i` of the cell.
//!
//! No `n x n` matrix is kept: per cell, a block of query rows at a time, and the
//! `m x m` universe part (`m` universe tokens) until it is added.
//!
//! Determinism: a cell's contribution is computed by one thread in a fixed order. Cells run
//! in batches; the contributions of a batch are computed in parallel and then added to the
//! sums by threads that each own a fixed range of gene rows, visiting the batch's cells in
//! cell order. Every entry of the sums therefore receives its terms in cell order whatever
//! the thread count or batch size: results are bit-identical for any `n_threads`, and
//! adding cells in several calls (passing the running sums back) equals one call.
//! Memory is `O(G^2 + n_threads * m^2)`, flat in the number of cells.
//!
//! [`mha_module_cells`] keeps the same attention per cell but, instead of gene x gene sums,
//! returns per cell and per gene module the summed attention among the module's genes of
//! the cell, and the number of such gene pairs: the per-cell statistics of a permutation
//! test over cell labels.

use rayon::prelude::*;

use crate::error::KernelResult;
use crate::kerr;
use crate::matrix::{gemm, Mat, Ragged, TokenId, View, ViewMut};
use crate::multihead::Heads;
use crate::projected::ProjectedRows;
use crate::real::Real;
use crate::simd::softmax_row;

/// Query rows per block of a cell's attention.
const BLOCK_ROWS: usize = 64;

/// Gene rows of the sums owned by one task while a batch is added.
const SUM_ROWS: usize = 16;

/// Cells per batch and thread.
const CELLS_PER_THREAD: usize = 2;

/// Universe index of every token id: `index[t]` in `0..n`, or `-1` outside the universe.
#[derive(Debug, Clone, Copy)]
pub struct Universe<'a> {
    pub index: &'a [i64],
    pub n: usize,
}

impl Universe<'_> {
    /// Checks that there is one entry per table row and every entry is `-1` or in `0..n`.
    pub fn validate(&self, vocab: usize) -> KernelResult<()> {
        if self.index.len() != vocab {
            return Err(kerr!(
                "universe must have one entry per table row ({vocab}), got {}",
                self.index.len()
            ));
        }
        let n = self.n as i64;
        if let Some((t, &u)) = self
            .index
            .iter()
            .enumerate()
            .find(|(_, &u)| u < -1 || u >= n)
        {
            return Err(kerr!(
                "universe[{t}] = {u} is neither -1 nor a universe index in 0..{n}"
            ));
        }
        Ok(())
    }

    fn get(&self, token: i64) -> Option<u32> {
        let u = self.index[token as usize];
        (u >= 0).then_some(u as u32)
    }
}

/// Running gene x gene sums: `sums` (`n x n`, row-major) and `incoming` (`n`).
#[derive(Debug)]
pub struct SumsMut<'a> {
    pub sums: &'a mut [f64],
    pub incoming: &'a mut [f64],
}

/// One cell's contribution, universe tokens sorted by (universe index, position).
#[derive(Debug, Default)]
struct CellPart {
    /// Universe index of each of the `m` kept tokens, ascending.
    genes: Vec<u32>,
    /// `m x m` head-averaged attention among the kept tokens.
    block: Vec<f64>,
    /// Column sums of the attention over all query rows, per kept token.
    incoming: Vec<f64>,
}

#[derive(Debug, Default)]
struct Scratch<T> {
    q: Vec<T>,
    k: Vec<T>,
    scores: Vec<T>,
    acc: Vec<f64>,
    /// Positions of the kept tokens in the cell, in the order of `CellPart::genes`.
    cols: Vec<usize>,
    /// For each position of the cell, its row in `CellPart::block`, or `usize::MAX`.
    row_of: Vec<usize>,
}

/// Computes one cell's contribution into `part` (buffers reused).
fn cell_part<T: Real, I: TokenId>(
    tokens: &[I],
    qk: &ProjectedRows<T>,
    heads: &Heads<'_, T>,
    universe: &Universe<'_>,
    dh: usize,
    s: &mut Scratch<T>,
    part: &mut CellPart,
) {
    let n = tokens.len();
    let d = heads.w_q.cols;
    // kept tokens, sorted by universe index then position
    let mut kept: Vec<(u32, usize)> = tokens
        .iter()
        .enumerate()
        .filter_map(|(i, t)| universe.get(t.get()).map(|u| (u, i)))
        .collect();
    kept.sort_unstable();
    let m = kept.len();
    part.genes.clear();
    part.genes.extend(kept.iter().map(|&(u, _)| u));
    s.cols.clear();
    s.cols.extend(kept.iter().map(|&(_, i)| i));
    s.row_of.clear();
    s.row_of.resize(n, usize::MAX);
    for (r, &i) in s.cols.iter().enumerate() {
        s.row_of[i] = r;
    }
    part.block.clear();
    part.block.resize(m * m, 0.0);
    part.incoming.clear();
    part.incoming.resize(m, 0.0);
    if m == 0 {
        return;
    }

    qk.gather(0, tokens, false, &mut s.q);
    qk.gather(1, tokens, false, &mut s.k);
    let scale = T::ONE / T::from_f64((dh as f64).sqrt());
    let inv_heads = 1.0 / heads.n_heads as f64;
    for r0 in (0..n).step_by(BLOCK_ROWS) {
        let r1 = (r0 + BLOCK_ROWS).min(n);
        let rows = r1 - r0;
        s.scores.resize(rows * n, T::ZERO);
        s.acc.clear();
        s.acc.resize(rows * m, 0.0);
        for h in 0..heads.n_heads {
            let (c0, c1) = (h * dh, (h + 1) * dh);
            let qh = View::rowmajor(&s.q, n, d).rows(r0, r1).cols(c0, c1);
            let kh = View::rowmajor(&s.k, n, d).cols(c0, c1);
            gemm(
                T::ONE,
                qh,
                kh.t(),
                T::ZERO,
                ViewMut::rowmajor(&mut s.scores, rows, n),
            );
            for (row, acc) in s.scores.chunks_exact_mut(n).zip(s.acc.chunks_exact_mut(m)) {
                softmax_row(row, scale);
                for (a, &j) in acc.iter_mut().zip(&s.cols) {
                    *a += row[j].to_f64();
                }
            }
        }
        for (i, acc) in (r0..r1).zip(s.acc.chunks_exact_mut(m)) {
            for (a, inc) in acc.iter_mut().zip(part.incoming.iter_mut()) {
                *a *= inv_heads;
                *inc += *a;
            }
            let r = s.row_of[i];
            if r != usize::MAX {
                part.block[r * m..(r + 1) * m].copy_from_slice(acc);
            }
        }
    }
}

/// Adds the parts of a batch, in order, to the rows `g0..` of the sums held in `rows`.
fn add_parts(parts: &[CellPart], g0: usize, rows: &mut [f64], incoming: &mut [f64], g: usize) {
    let g1 = g0 + incoming.len();
    for p in parts {
        let m = p.genes.len();
        let a0 = p.genes.partition_point(|&u| (u as usize) < g0);
        let a1 = p.genes.partition_point(|&u| (u as usize) < g1);
        for a in a0..a1 {
            let u = p.genes[a] as usize - g0;
            incoming[u] += p.incoming[a];
            let dst = &mut rows[u * g..(u + 1) * g];
            for (&v, &x) in p.genes.iter().zip(&p.block[a * m..(a + 1) * m]) {
                dst[v as usize] += x;
            }
        }
    }
}

/// Adds the head-averaged multi-head attention of every cell into `out` (see the module
/// docs). `heads.w_v` is ignored. Cells run on `n_threads` threads; the result does not
/// depend on it.
pub fn mha_aggregate_cells<T: Real, I: TokenId>(
    cells: Ragged<'_, I>,
    table: Mat<'_, T>,
    heads: Heads<'_, T>,
    universe: Universe<'_>,
    out: SumsMut<'_>,
    n_threads: usize,
) -> KernelResult<()> {
    cells.validate(table.rows)?;
    let dh = heads.validate(table.cols)?;
    table.check_finite("table")?;
    universe.validate(table.rows)?;
    let g = universe.n;
    if g.checked_mul(g) != Some(out.sums.len()) || out.incoming.len() != g {
        return Err(kerr!(
            "sums must be {g} x {g} and incoming must have {g} entries, got {} and {}",
            out.sums.len(),
            out.incoming.len()
        ));
    }
    if g == 0 {
        return Ok(());
    }
    let batch = CELLS_PER_THREAD * n_threads;
    let mut parts: Vec<CellPart> = (0..batch).map(|_| CellPart::default()).collect();
    let SumsMut { sums, incoming } = out;
    crate::pool::install(n_threads, || {
        let qk = ProjectedRows::new(&cells, &table, &[&heads.w_q, &heads.w_k]);
        for c0 in (0..cells.n_cells()).step_by(batch) {
            let c1 = (c0 + batch).min(cells.n_cells());
            let parts = &mut parts[..c1 - c0];
            parts
                .par_iter_mut()
                .enumerate()
                .for_each_init(Scratch::default, |s, (i, part)| {
                    cell_part(cells.cell(c0 + i), &qk, &heads, &universe, dh, s, part)
                });
            let parts = &*parts;
            sums.par_chunks_mut(SUM_ROWS * g)
                .zip(incoming.par_chunks_mut(SUM_ROWS))
                .enumerate()
                .for_each(|(b, (rows, inc))| add_parts(parts, b * SUM_ROWS, rows, inc, g));
        }
    })?;
    Ok(())
}

/// Per-cell, per-module outputs of [`mha_module_cells`]: `n_cells x n_modules`, row-major.
#[derive(Debug)]
pub struct ModuleSumsMut<'a> {
    /// Summed head-averaged attention among distinct genes of a module present in the cell.
    pub sums: &'a mut [f64],
    /// Number of ordered pairs of distinct genes of a module present in the cell.
    pub pairs: &'a mut [i64],
}

/// Adds one cell's within-module attention and pair counts to `sums` and `pairs` (one
/// entry per module; `module[u]` is the module of universe gene `u`, negative for none).
fn add_module_part(part: &CellPart, module: &[i64], sums: &mut [f64], pairs: &mut [i64]) {
    let m = part.genes.len();
    for (r, &u) in part.genes.iter().enumerate() {
        let k = module[u as usize];
        if k < 0 {
            continue;
        }
        let row = &part.block[r * m..(r + 1) * m];
        let mut total = 0.0;
        for (&v, &x) in part.genes.iter().zip(row) {
            if v != u && module[v as usize] == k {
                total += x;
            }
        }
        sums[k as usize] += total;
    }
    // genes are sorted, so repeats of a token are adjacent: count distinct genes per module
    let mut distinct = vec![0i64; pairs.len()];
    for (a, &u) in part.genes.iter().enumerate() {
        let k = module[u as usize];
        if k >= 0 && (a == 0 || part.genes[a - 1] != u) {
            distinct[k as usize] += 1;
        }
    }
    for (p, &n) in pairs.iter_mut().zip(&distinct) {
        *p = n * (n - 1);
    }
}

/// Within-module attention of every cell: for cell `c` and module `k`,
/// `sums[c, k] = sum A[i, j]` over positions `i`, `j` of the cell whose tokens are distinct
/// universe genes both of module `k` (`A` the head-averaged attention, as in
/// [`mha_aggregate_cells`]), and `pairs[c, k]` the number of ordered pairs of distinct genes
/// of module `k` present in the cell. `module` has one entry per universe gene: its module
/// in `0..n_modules`, or `-1`. Summed over cells, `sums` and `pairs` are the within-module
/// blocks of the gene x gene sums and co-occurrence counts, off the diagonal.
///
/// Each cell is computed by one thread in a fixed order, so the result does not depend on
/// `n_threads`. `out` is overwritten; `heads.w_v` is ignored.
#[allow(clippy::too_many_arguments)]
pub fn mha_module_cells<T: Real, I: TokenId>(
    cells: Ragged<'_, I>,
    table: Mat<'_, T>,
    heads: Heads<'_, T>,
    universe: Universe<'_>,
    module: &[i64],
    n_modules: usize,
    out: ModuleSumsMut<'_>,
    n_threads: usize,
) -> KernelResult<()> {
    cells.validate(table.rows)?;
    let dh = heads.validate(table.cols)?;
    table.check_finite("table")?;
    universe.validate(table.rows)?;
    if module.len() != universe.n {
        return Err(kerr!(
            "modules must have one entry per universe gene ({}), got {}",
            universe.n,
            module.len()
        ));
    }
    let k_max = n_modules as i64;
    if let Some((u, &k)) = module
        .iter()
        .enumerate()
        .find(|(_, &k)| k < -1 || k >= k_max)
    {
        return Err(kerr!(
            "modules[{u}] = {k} is neither -1 nor a module in 0..{n_modules}"
        ));
    }
    let n_cells = cells.n_cells();
    let size = n_cells.checked_mul(n_modules);
    if size != Some(out.sums.len()) || size != Some(out.pairs.len()) {
        return Err(kerr!(
            "sums and pairs must be {n_cells} x {n_modules}, got {} and {} entries",
            out.sums.len(),
            out.pairs.len()
        ));
    }
    let ModuleSumsMut { sums, pairs } = out;
    sums.fill(0.0);
    pairs.fill(0);
    if n_modules == 0 || n_cells == 0 {
        return Ok(());
    }
    // only module genes need attention columns
    let index: Vec<i64> = universe
        .index
        .iter()
        .map(|&u| {
            if u >= 0 && module[u as usize] >= 0 {
                u
            } else {
                -1
            }
        })
        .collect();
    let kept = Universe {
        index: &index,
        n: universe.n,
    };
    crate::pool::install(n_threads, || {
        let qk = ProjectedRows::new(&cells, &table, &[&heads.w_q, &heads.w_k]);
        sums.par_chunks_mut(n_modules)
            .zip(pairs.par_chunks_mut(n_modules))
            .enumerate()
            .for_each_init(
                || (Scratch::default(), CellPart::default()),
                |(s, part), (c, (sum, pair))| {
                    cell_part(cells.cell(c), &qk, &heads, &kept, dh, s, part);
                    add_module_part(part, module, sum, pair);
                },
            );
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::data;

    /// Head-averaged weights straight from the formula.
    fn naive_weights(x: &[f64], n: usize, d: usize, h: usize) -> Vec<f64> {
        let dh = d / h;
        let mut avg = vec![0.0; n * n];
        for hh in 0..h {
            for i in 0..n {
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..dh)
                            .map(|p| x[i * d + hh * dh + p] * x[j * d + hh * dh + p])
                            .sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let mx = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - mx).exp()).collect();
                let tot: f64 = e.iter().sum::<f64>() + 1e-30;
                for j in 0..n {
                    avg[i * n + j] += e[j] / tot / h as f64;
                }
            }
        }
        avg
    }

    fn eye(d: usize) -> Vec<f64> {
        (0..d * d)
            .map(|i| if i / d == i % d { 1.0 } else { 0.0 })
            .collect()
    }

    struct Case {
        vocab: usize,
        d: usize,
        h: usize,
        table: Vec<f64>,
        w: Vec<f64>,
        tokens: Vec<i32>,
        offsets: Vec<i64>,
        index: Vec<i64>,
        g: usize,
    }

    fn case() -> Case {
        let (vocab, d, h) = (150, 8, 2);
        let table = data(vocab * d, 3, 4.0);
        // cells of 0, 1, 70 (two row blocks) and 5 tokens, one with a repeated token
        let mut tokens: Vec<i32> = vec![7];
        tokens.extend((0..70).map(|i| (i * 2 + 1) % vocab as i32));
        tokens.extend([4, 9, 4, 100, 3]);
        let offsets = vec![0, 0, 1, 71, 76];
        // universe: every third token, in scrambled order
        let mut index = vec![-1i64; vocab];
        let mut g = 0;
        for t in (0..vocab).step_by(3).rev() {
            index[t] = g;
            g += 1;
        }
        index[4] = g;
        g += 1;
        Case {
            vocab,
            d,
            h,
            table,
            w: eye(d),
            tokens,
            offsets,
            index,
            g: g as usize,
        }
    }

    fn run(c: &Case, n_threads: usize, cells: std::ops::Range<usize>, out: SumsMut<'_>) {
        let w = Mat::new("w", &c.w, c.d, c.d).unwrap();
        let heads = Heads {
            w_q: w,
            w_k: w,
            w_v: None,
            n_heads: c.h,
        };
        let offs = &c.offsets[cells.start..=cells.end];
        let base = offs[0] as usize;
        let shifted: Vec<i64> = offs.iter().map(|o| o - base as i64).collect();
        let ragged = Ragged {
            tokens: &c.tokens[base..*offs.last().unwrap() as usize],
            offsets: &shifted,
        };
        let table = Mat::new("table", &c.table, c.vocab, c.d).unwrap();
        let u = Universe {
            index: &c.index,
            n: c.g,
        };
        mha_aggregate_cells(ragged, table, heads, u, out, n_threads).unwrap();
    }

    #[test]
    fn matches_naive_sums() {
        let c = case();
        let (mut sums, mut inc) = (vec![0.0; c.g * c.g], vec![0.0; c.g]);
        run(
            &c,
            2,
            0..4,
            SumsMut {
                sums: &mut sums,
                incoming: &mut inc,
            },
        );
        let (mut want, mut want_inc) = (vec![0.0; c.g * c.g], vec![0.0; c.g]);
        for cell in 0..4 {
            let toks = &c.tokens[c.offsets[cell] as usize..c.offsets[cell + 1] as usize];
            let n = toks.len();
            let x: Vec<f64> = toks
                .iter()
                .flat_map(|&t| c.table[t as usize * c.d..(t as usize + 1) * c.d].to_vec())
                .collect();
            let a = naive_weights(&x, n, c.d, c.h);
            for i in 0..n {
                for j in 0..n {
                    let uj = c.index[toks[j] as usize];
                    if uj < 0 {
                        continue;
                    }
                    want_inc[uj as usize] += a[i * n + j];
                    let ui = c.index[toks[i] as usize];
                    if ui >= 0 {
                        want[ui as usize * c.g + uj as usize] += a[i * n + j];
                    }
                }
            }
        }
        for (a, b) in sums.iter().zip(&want).chain(inc.iter().zip(&want_inc)) {
            assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        }
        assert!(want.iter().any(|&v| v > 0.0));
    }

    #[test]
    fn bit_identical_across_threads_and_calls() {
        let c = case();
        let mut results = Vec::new();
        for threads in [1, 2, 3] {
            let (mut sums, mut inc) = (vec![0.0; c.g * c.g], vec![0.0; c.g]);
            run(
                &c,
                threads,
                0..4,
                SumsMut {
                    sums: &mut sums,
                    incoming: &mut inc,
                },
            );
            results.push((sums, inc));
        }
        // the same cells in two calls, accumulating into the same sums
        let (mut sums, mut inc) = (vec![0.0; c.g * c.g], vec![0.0; c.g]);
        for cells in [0..2, 2..4] {
            run(
                &c,
                2,
                cells,
                SumsMut {
                    sums: &mut sums,
                    incoming: &mut inc,
                },
            );
        }
        results.push((sums, inc));
        for r in &results[1..] {
            assert_eq!(r, &results[0]);
        }
    }

    #[test]
    fn bad_input_is_refused() {
        let c = case();
        let w = Mat::new("w", &c.w, c.d, c.d).unwrap();
        let heads = Heads {
            w_q: w,
            w_k: w,
            w_v: None,
            n_heads: c.h,
        };
        let table = Mat::new("table", &c.table, c.vocab, c.d).unwrap();
        let ragged = Ragged {
            tokens: &c.tokens,
            offsets: &c.offsets,
        };
        let (mut sums, mut inc) = (vec![0.0; c.g * c.g], vec![0.0; c.g]);
        let mut bad_index = c.index.clone();
        bad_index[5] = c.g as i64;
        let short = &c.index[..10];
        for (index, n, want) in [
            (&bad_index[..], c.g, "universe[5]"),
            (short, c.g, "one entry per table row"),
            (&c.index[..], c.g + 1, "sums must be"),
        ] {
            let out = SumsMut {
                sums: &mut sums,
                incoming: &mut inc,
            };
            let e = mha_aggregate_cells(ragged, table, heads, Universe { index, n }, out, 1);
            assert!(e.unwrap_err().0.contains(want));
        }
    }

    /// Modules of the test universe: gene `u` in module `u % 3`, every fifth gene in none.
    fn modules_of(g: usize) -> Vec<i64> {
        (0..g)
            .map(|u| if u % 5 == 4 { -1 } else { (u % 3) as i64 })
            .collect()
    }

    fn run_modules(c: &Case, n_threads: usize, module: &[i64], k: usize) -> (Vec<f64>, Vec<i64>) {
        let w = Mat::new("w", &c.w, c.d, c.d).unwrap();
        let heads = Heads {
            w_q: w,
            w_k: w,
            w_v: None,
            n_heads: c.h,
        };
        let ragged = Ragged {
            tokens: &c.tokens,
            offsets: &c.offsets,
        };
        let table = Mat::new("table", &c.table, c.vocab, c.d).unwrap();
        let u = Universe {
            index: &c.index,
            n: c.g,
        };
        let n_cells = c.offsets.len() - 1;
        // garbage in the outputs: they are overwritten
        let (mut sums, mut pairs) = (vec![7.0; n_cells * k], vec![7i64; n_cells * k]);
        let out = ModuleSumsMut {
            sums: &mut sums,
            pairs: &mut pairs,
        };
        mha_module_cells(ragged, table, heads, u, module, k, out, n_threads).unwrap();
        (sums, pairs)
    }

    #[test]
    fn module_cells_match_naive() {
        let mut c = case();
        // a fifth cell with a repeated universe token (4 is in the universe)
        c.tokens.extend([4, 3, 4, 6, 9, 12]);
        c.offsets.push(c.tokens.len() as i64);
        let k = 3;
        let module = modules_of(c.g);
        let (sums, pairs) = run_modules(&c, 2, &module, k);
        for cell in 0..c.offsets.len() - 1 {
            let toks = &c.tokens[c.offsets[cell] as usize..c.offsets[cell + 1] as usize];
            let n = toks.len();
            let x: Vec<f64> = toks
                .iter()
                .flat_map(|&t| c.table[t as usize * c.d..(t as usize + 1) * c.d].to_vec())
                .collect();
            let a = naive_weights(&x, n, c.d, c.h);
            let mut want = vec![0.0; k];
            let mut genes: Vec<Vec<i64>> = vec![Vec::new(); k];
            for i in 0..n {
                let ui = c.index[toks[i] as usize];
                if ui < 0 || module[ui as usize] < 0 {
                    continue;
                }
                let mi = module[ui as usize] as usize;
                if !genes[mi].contains(&ui) {
                    genes[mi].push(ui);
                }
                for j in 0..n {
                    let uj = c.index[toks[j] as usize];
                    if uj >= 0 && uj != ui && module[uj as usize] == mi as i64 {
                        want[mi] += a[i * n + j];
                    }
                }
            }
            for m in 0..k {
                let got = sums[cell * k + m];
                assert!((got - want[m]).abs() < 1e-12, "cell {cell} module {m}");
                let n_m = genes[m].len() as i64;
                assert_eq!(pairs[cell * k + m], n_m * (n_m - 1));
            }
        }
        assert!(sums.iter().any(|&v| v > 0.0));
        assert!(pairs.iter().any(|&v| v > 0));
    }

    #[test]
    fn module_cells_sum_to_aggregate_blocks() {
        // summed over cells, the module sums are the within-module off-diagonal gene x gene sums
        let c = case();
        let k = 3;
        let module = modules_of(c.g);
        let (sums, _) = run_modules(&c, 1, &module, k);
        let (mut agg, mut inc) = (vec![0.0; c.g * c.g], vec![0.0; c.g]);
        run(
            &c,
            1,
            0..4,
            SumsMut {
                sums: &mut agg,
                incoming: &mut inc,
            },
        );
        for m in 0..k {
            let mut want = 0.0;
            for u in 0..c.g {
                for v in 0..c.g {
                    if u != v && module[u] == m as i64 && module[v] == m as i64 {
                        want += agg[u * c.g + v];
                    }
                }
            }
            let got: f64 = (0..4).map(|cell| sums[cell * k + m]).sum();
            assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        }
    }

    #[test]
    fn module_cells_bit_identical_across_threads() {
        let c = case();
        let module = modules_of(c.g);
        let first = run_modules(&c, 1, &module, 3);
        for threads in [2, 3, 5] {
            assert_eq!(run_modules(&c, threads, &module, 3), first);
        }
        // no module at all: zeros, and zero modules: empty outputs
        let none = vec![-1i64; c.g];
        let (s, p) = run_modules(&c, 2, &none, 2);
        assert!(s.iter().all(|&v| v == 0.0) && p.iter().all(|&v| v == 0));
        assert_eq!(run_modules(&c, 2, &none, 0), (vec![], vec![]));
    }

    #[test]
    fn module_cells_bad_input_is_refused() {
        let c = case();
        let w = Mat::new("w", &c.w, c.d, c.d).unwrap();
        let heads = Heads {
            w_q: w,
            w_k: w,
            w_v: None,
            n_heads: c.h,
        };
        let table = Mat::new("table", &c.table, c.vocab, c.d).unwrap();
        let ragged = Ragged {
            tokens: &c.tokens,
            offsets: &c.offsets,
        };
        let u = Universe {
            index: &c.index,
            n: c.g,
        };
        let good = modules_of(c.g);
        let mut bad = good.clone();
        bad[2] = 3;
        let short = &good[..c.g - 1];
        for (module, k, cells, want) in [
            (&bad[..], 3, 4, "modules[2] = 3"),
            (short, 3, 4, "one entry per universe gene"),
            (&good[..], 3, 5, "must be 4 x 3"),
        ] {
            let (mut sums, mut pairs) = (vec![0.0; cells * k], vec![0i64; cells * k]);
            let out = ModuleSumsMut {
                sums: &mut sums,
                pairs: &mut pairs,
            };
            let e = mha_module_cells(ragged, table, heads, u, module, k, out, 1);
            assert!(e.unwrap_err().0.contains(want));
        }
    }
}
