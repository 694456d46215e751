//! Attention of many cells, fused with its aggregation into gene x gene sums.
//!
//! For each cell the head-averaged attention `A` (`n x n`) is computed block by block of
//! query rows and only the columns of *universe* tokens are kept. With `u(t)` the universe
//! index of token `t` (or none):
//!
//! - `sums[u_i, u_j] += A[i, j]` for every pair of universe tokens `i`, `j` of the cell;
//! - `incoming[u_j] += sum_i A[i, j]` over *all* query rows `i` of the cell.
//!
//! Where the attention comes from is a [`CellScores`]: the single-layer multi-head
//! attention of a study model ([`mha_aggregate_cells`], the formula of
//! [`crate::multihead`]) or one layer of a BERT checkpoint ([`bert_aggregate_cells`], see
//! [`bert`]). Everything after the raw scores `q_h k_h^T` (softmax, head average, keeping
//! the universe columns, adding into the sums) is the same code for both.
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
//! [`mha_module_cells`] and [`bert_module_cells`] keep the same attention per cell but,
//! instead of gene x gene sums, return per cell and per gene module the summed attention
//! among the module's genes of the cell, and the number of such gene pairs: the per-cell
//! statistics of a permutation test over cell labels.

mod bert;

use rayon::prelude::*;

pub use bert::{bert_aggregate_cells, bert_module_cells, LayerHeads};

use crate::error::KernelResult;
use crate::kerr;
use crate::matrix::{Mat, Ragged, TokenId};
use crate::multihead::{score_block, score_scale, Heads};
use crate::projected::ProjectedRows;
use crate::real::Real;
use crate::simd::softmax_row;

/// Query rows per block of a cell's attention.
const BLOCK_ROWS: usize = 64;

/// Gene rows of the sums owned by one task while a batch is added.
pub(crate) const SUM_ROWS: usize = 16;

/// Cells per batch and thread.
pub(crate) const CELLS_PER_THREAD: usize = 2;

/// Universe index of every token id: `index[t]` in `0..n`, or `-1` outside the universe.
#[derive(Debug, Clone, Copy)]
pub struct Universe<'a> {
    pub index: &'a [i64],
    pub n: usize,
}

impl Universe<'_> {
    /// Checks that there is one entry per token id (`vocab` of them, the rows of `rows`)
    /// and every entry is `-1` or in `0..n`.
    pub fn validate(&self, vocab: usize, rows: &str) -> KernelResult<()> {
        if self.index.len() != vocab {
            return Err(kerr!(
                "universe must have one entry per {rows} ({vocab}), got {}",
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

    pub(crate) fn get(&self, token: i64) -> Option<u32> {
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

/// Per-cell, per-module outputs of the `*_module_cells` kernels: `n_cells x n_modules`,
/// row-major.
#[derive(Debug)]
pub struct ModuleSumsMut<'a> {
    /// Summed head-averaged attention among distinct genes of a module present in the cell.
    pub sums: &'a mut [f64],
    /// Number of ordered pairs of distinct genes of a module present in the cell.
    pub pairs: &'a mut [i64],
}

/// The raw attention scores of one cell at a time, one head and block of query rows at a
/// time: what differs between the attention models the sums are taken over.
pub trait CellScores<T>: Sync {
    /// Per-thread buffers of a cell.
    type Scratch: Default + Send;

    /// The heads averaged, in the order they are added.
    fn heads(&self) -> &[usize];

    /// Factor of the scores inside the softmax.
    fn scale(&self) -> T;

    /// Prepares the cell of `tokens` (only called for cells with a kept token).
    fn prepare<I: TokenId>(&self, tokens: &[I], s: &mut Self::Scratch);

    /// Raw scores `q_h k_h^T` of head `h` for query rows `r0..r1` of the prepared cell
    /// into `out` (`(r1 - r0) x n`, `n` the cell's length).
    fn scores(&self, s: &Self::Scratch, h: usize, r0: usize, r1: usize, out: &mut [T]);
}

/// One cell's contribution, universe tokens sorted by (universe index, position).
#[derive(Debug, Default)]
pub(crate) struct CellPart {
    /// Universe index of each of the `m` kept tokens, ascending.
    pub(crate) genes: Vec<u32>,
    /// `m x m` head-averaged attention among the kept tokens.
    pub(crate) block: Vec<f64>,
    /// Column sums of the attention over all query rows, per kept token.
    pub(crate) incoming: Vec<f64>,
}

impl CellPart {
    /// Starts the part of the cell of `tokens`: its universe tokens sorted by (universe
    /// index, position) into `genes`, `block` and `incoming` zeroed for them, `cols` the
    /// positions of the kept tokens in that order and `row_of` each position's row (or
    /// `usize::MAX`). Returns the number `m` of kept tokens.
    pub(crate) fn start<I: TokenId>(
        &mut self,
        tokens: &[I],
        universe: &Universe<'_>,
        cols: &mut Vec<usize>,
        row_of: &mut Vec<usize>,
    ) -> usize {
        let mut kept: Vec<(u32, usize)> = tokens
            .iter()
            .enumerate()
            .filter_map(|(i, t)| universe.get(t.get()).map(|u| (u, i)))
            .collect();
        kept.sort_unstable();
        let m = kept.len();
        self.genes.clear();
        self.genes.extend(kept.iter().map(|&(u, _)| u));
        cols.clear();
        cols.extend(kept.iter().map(|&(_, i)| i));
        row_of.clear();
        row_of.resize(tokens.len(), usize::MAX);
        for (r, &i) in cols.iter().enumerate() {
            row_of[i] = r;
        }
        self.block.clear();
        self.block.resize(m * m, 0.0);
        self.incoming.clear();
        self.incoming.resize(m, 0.0);
        m
    }
}

/// Per-thread buffers of [`cell_part`].
#[derive(Debug, Default)]
struct Scratch<T, S> {
    /// The source's own buffers.
    source: S,
    scores: Vec<T>,
    acc: Vec<f64>,
    /// Positions of the kept tokens in the cell, in the order of `CellPart::genes`.
    cols: Vec<usize>,
    /// For each position of the cell, its row in `CellPart::block`, or `usize::MAX`.
    row_of: Vec<usize>,
}

/// Computes one cell's contribution into `part` (buffers reused): the attention of `src`
/// averaged over its heads, softmax rows a block at a time, universe columns kept.
fn cell_part<T: Real, I: TokenId, S: CellScores<T>>(
    tokens: &[I],
    src: &S,
    universe: &Universe<'_>,
    s: &mut Scratch<T, S::Scratch>,
    part: &mut CellPart,
) {
    let n = tokens.len();
    let m = part.start(tokens, universe, &mut s.cols, &mut s.row_of);
    if m == 0 {
        return;
    }

    src.prepare(tokens, &mut s.source);
    let scale = src.scale();
    let inv_heads = 1.0 / src.heads().len() as f64;
    for r0 in (0..n).step_by(BLOCK_ROWS) {
        let r1 = (r0 + BLOCK_ROWS).min(n);
        let rows = r1 - r0;
        s.scores.resize(rows * n, T::ZERO);
        s.acc.clear();
        s.acc.resize(rows * m, 0.0);
        for &h in src.heads() {
            src.scores(&s.source, h, r0, r1, &mut s.scores[..rows * n]);
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
pub(crate) fn add_parts(
    parts: &[CellPart],
    g0: usize,
    rows: &mut [f64],
    incoming: &mut [f64],
    g: usize,
) {
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

/// Checks that the sums fit a universe of `g` genes.
pub(crate) fn check_sums(g: usize, out: &SumsMut<'_>) -> KernelResult<()> {
    if g.checked_mul(g) != Some(out.sums.len()) || out.incoming.len() != g {
        return Err(kerr!(
            "sums must be {g} x {g} and incoming must have {g} entries, got {} and {}",
            out.sums.len(),
            out.incoming.len()
        ));
    }
    Ok(())
}

/// Adds the attention of every cell into `out` in batches (see the module docs); call
/// inside the pool of `n_threads` threads, with validated inputs. `source` is only called
/// when there is something to compute.
fn aggregate_in_pool<T: Real, I: TokenId, S: CellScores<T>>(
    cells: &Ragged<'_, I>,
    source: impl FnOnce() -> S,
    universe: &Universe<'_>,
    out: SumsMut<'_>,
    n_threads: usize,
) {
    let g = universe.n;
    if g == 0 || cells.n_cells() == 0 {
        return;
    }
    let src = &source();
    let batch = CELLS_PER_THREAD * n_threads;
    let mut parts: Vec<CellPart> = (0..batch).map(|_| CellPart::default()).collect();
    let SumsMut { sums, incoming } = out;
    for c0 in (0..cells.n_cells()).step_by(batch) {
        let c1 = (c0 + batch).min(cells.n_cells());
        let parts = &mut parts[..c1 - c0];
        parts
            .par_iter_mut()
            .enumerate()
            .for_each_init(Scratch::default, |s, (i, part)| {
                cell_part(cells.cell(c0 + i), src, universe, s, part)
            });
        let parts = &*parts;
        sums.par_chunks_mut(SUM_ROWS * g)
            .zip(incoming.par_chunks_mut(SUM_ROWS))
            .enumerate()
            .for_each(|(b, (rows, inc))| add_parts(parts, b * SUM_ROWS, rows, inc, g));
    }
}

/// Checks a gene -> module assignment and the outputs for `n_cells` cells; returns the
/// universe restricted to module genes (only they need attention columns).
pub(crate) fn check_modules(
    universe: &Universe<'_>,
    module: &[i64],
    n_modules: usize,
    n_cells: usize,
    out: &ModuleSumsMut<'_>,
) -> KernelResult<Vec<i64>> {
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
    let size = n_cells.checked_mul(n_modules);
    if size != Some(out.sums.len()) || size != Some(out.pairs.len()) {
        return Err(kerr!(
            "sums and pairs must be {n_cells} x {n_modules}, got {} and {} entries",
            out.sums.len(),
            out.pairs.len()
        ));
    }
    Ok(universe
        .index
        .iter()
        .map(|&u| {
            if u >= 0 && module[u as usize] >= 0 {
                u
            } else {
                -1
            }
        })
        .collect())
}

/// Adds one cell's within-module attention and pair counts to `sums` and `pairs` (one
/// entry per module; `module[u]` is the module of universe gene `u`, negative for none).
pub(crate) fn add_module_part(
    part: &CellPart,
    module: &[i64],
    sums: &mut [f64],
    pairs: &mut [i64],
) {
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

/// Overwrites `out` with every cell's within-module attention; call inside the pool, with
/// inputs checked by [`check_modules`] (`kept` is what it returned). `source` is only
/// called when there is something to compute.
fn modules_in_pool<T: Real, I: TokenId, S: CellScores<T>>(
    cells: &Ragged<'_, I>,
    source: impl FnOnce() -> S,
    kept: &Universe<'_>,
    module: &[i64],
    n_modules: usize,
    out: ModuleSumsMut<'_>,
) {
    let ModuleSumsMut { sums, pairs } = out;
    sums.fill(0.0);
    pairs.fill(0);
    if n_modules == 0 || cells.n_cells() == 0 {
        return;
    }
    let src = &source();
    sums.par_chunks_mut(n_modules)
        .zip(pairs.par_chunks_mut(n_modules))
        .enumerate()
        .for_each_init(
            || (Scratch::default(), CellPart::default()),
            |(s, part), (c, (sum, pair))| {
                cell_part(cells.cell(c), src, kept, s, part);
                add_module_part(part, module, sum, pair);
            },
        );
}

/// The multi-head attention of a study model: token-table rows projected by `W_Q` and
/// `W_K` once per call, gathered per cell.
struct MhaScores<T> {
    qk: ProjectedRows<T>,
    heads: Vec<usize>,
    d: usize,
    dh: usize,
}

impl<T: Real> MhaScores<T> {
    /// Projects the rows `cells` use (call inside the pool, inputs validated).
    fn new<I: TokenId>(cells: &Ragged<'_, I>, table: &Mat<'_, T>, heads: &Heads<'_, T>) -> Self {
        let d = table.cols;
        Self {
            qk: ProjectedRows::new(cells, table, &[&heads.w_q, &heads.w_k]),
            heads: (0..heads.n_heads).collect(),
            d,
            dh: d / heads.n_heads,
        }
    }
}

impl<T: Real> CellScores<T> for MhaScores<T> {
    /// Queries and keys of the cell, `n x d` each.
    type Scratch = (Vec<T>, Vec<T>);

    fn heads(&self) -> &[usize] {
        &self.heads
    }

    fn scale(&self) -> T {
        score_scale(self.dh)
    }

    fn prepare<I: TokenId>(&self, tokens: &[I], (q, k): &mut Self::Scratch) {
        self.qk.gather(0, tokens, false, q);
        self.qk.gather(1, tokens, false, k);
    }

    fn scores(&self, (q, k): &Self::Scratch, h: usize, r0: usize, r1: usize, out: &mut [T]) {
        let n = q.len() / self.d;
        score_block(q, k, n, self.d, self.dh, h, r0, r1, out);
    }
}

/// Checks cells, table and heads of the study-model kernels; returns the heads' width.
fn check_mha<T: Real, I: TokenId>(
    cells: &Ragged<'_, I>,
    table: &Mat<'_, T>,
    heads: &Heads<'_, T>,
    universe: &Universe<'_>,
) -> KernelResult<usize> {
    cells.validate(table.rows)?;
    let dh = heads.validate(table.cols)?;
    table.check_finite("table")?;
    universe.validate(table.rows, "table row")?;
    Ok(dh)
}

/// Adds the head-averaged multi-head attention of every cell (rows `cells.cell(c)` of
/// `table`, the formula of [`crate::multihead`]) into `out` (see the module docs).
/// `heads.w_v` is ignored. Cells run on `n_threads` threads; the result does not depend
/// on it.
pub fn mha_aggregate_cells<T: Real, I: TokenId>(
    cells: Ragged<'_, I>,
    table: Mat<'_, T>,
    heads: Heads<'_, T>,
    universe: Universe<'_>,
    out: SumsMut<'_>,
    n_threads: usize,
) -> KernelResult<()> {
    check_mha(&cells, &table, &heads, &universe)?;
    check_sums(universe.n, &out)?;
    let source = || MhaScores::new(&cells, &table, &heads);
    crate::pool::install(n_threads, || {
        aggregate_in_pool(&cells, source, &universe, out, n_threads)
    })
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
    check_mha(&cells, &table, &heads, &universe)?;
    let index = check_modules(&universe, module, n_modules, cells.n_cells(), &out)?;
    let kept = Universe {
        index: &index,
        n: universe.n,
    };
    let source = || MhaScores::new(&cells, &table, &heads);
    crate::pool::install(n_threads, || {
        modules_in_pool(&cells, source, &kept, module, n_modules, out)
    })
}

#[cfg(test)]
pub(crate) mod tests {
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

    /// Head-averaged weights of one cell of the test case.
    fn naive_cell(c: &Case, toks: &[i32]) -> Vec<f64> {
        let x: Vec<f64> = toks
            .iter()
            .flat_map(|&t| c.table[t as usize * c.d..(t as usize + 1) * c.d].to_vec())
            .collect();
        naive_weights(&x, toks.len(), c.d, c.h)
    }

    /// Adds one cell's attention `a` (`n x n`) to gene x gene sums by the definition.
    pub(crate) fn naive_add<I: TokenId>(
        a: &[f64],
        toks: &[I],
        index: &[i64],
        g: usize,
        sums: &mut [f64],
        incoming: &mut [f64],
    ) {
        let n = toks.len();
        for i in 0..n {
            for j in 0..n {
                let uj = index[toks[j].get() as usize];
                if uj < 0 {
                    continue;
                }
                incoming[uj as usize] += a[i * n + j];
                let ui = index[toks[i].get() as usize];
                if ui >= 0 {
                    sums[ui as usize * g + uj as usize] += a[i * n + j];
                }
            }
        }
    }

    /// One cell's within-module sums and ordered pairs of distinct genes, by the definition.
    pub(crate) fn naive_modules<I: TokenId>(
        a: &[f64],
        toks: &[I],
        index: &[i64],
        module: &[i64],
        k: usize,
    ) -> (Vec<f64>, Vec<i64>) {
        let n = toks.len();
        let mut sums = vec![0.0; k];
        let mut genes: Vec<Vec<i64>> = vec![Vec::new(); k];
        for i in 0..n {
            let ui = index[toks[i].get() as usize];
            if ui < 0 || module[ui as usize] < 0 {
                continue;
            }
            let mi = module[ui as usize] as usize;
            if !genes[mi].contains(&ui) {
                genes[mi].push(ui);
            }
            for j in 0..n {
                let uj = index[toks[j].get() as usize];
                if uj >= 0 && uj != ui && module[uj as usize] == mi as i64 {
                    sums[mi] += a[i * n + j];
                }
            }
        }
        let pairs = genes
            .iter()
            .map(|g| (g.len() * g.len().saturating_sub(1)) as i64);
        (sums, pairs.collect())
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

    impl Case {
        /// The test heads: `w` as both the query and the key projection.
        fn heads(&self) -> Heads<'_, f64> {
            let w = Mat::new("w", &self.w, self.d, self.d).unwrap();
            Heads {
                w_q: w,
                w_k: w,
                w_v: None,
                n_heads: self.h,
            }
        }
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
        let heads = c.heads();
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
            let a = naive_cell(&c, toks);
            naive_add(&a, toks, &c.index, c.g, &mut want, &mut want_inc);
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
        let heads = c.heads();
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
    pub(crate) fn modules_of(g: usize) -> Vec<i64> {
        (0..g)
            .map(|u| if u % 5 == 4 { -1 } else { (u % 3) as i64 })
            .collect()
    }

    fn run_modules(c: &Case, n_threads: usize, module: &[i64], k: usize) -> (Vec<f64>, Vec<i64>) {
        let heads = c.heads();
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
            let a = naive_cell(&c, toks);
            let (want, want_pairs) = naive_modules(&a, toks, &c.index, &module, k);
            for m in 0..k {
                let got = sums[cell * k + m];
                assert!((got - want[m]).abs() < 1e-12, "cell {cell} module {m}");
            }
            assert_eq!(pairs[cell * k..(cell + 1) * k], want_pairs);
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
        let heads = c.heads();
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
