//! GenoHoption over many cells: pooled cell embeddings of a study model, and the effective
//! multi-hop attention summed into gene x gene arrays or per-cell module sums.
//!
//! The sums are those of [`crate::aggregate`] with the dense softmax attention `A` replaced
//! by the diffusion matrix `M` of each head ([`super::effective_columns`]), averaged over the
//! heads: `sums[u_i, u_j] += M[i, j]` for positions `i`, `j` holding universe tokens and
//! `incoming[u_j] += sum_i M[i, j]` over all positions `i`. `M` is computed column block by
//! column block of the cell's universe tokens (`O(E K)` per column), never as an `n x n`
//! matrix. Cells are added in batches in cell order exactly as the dense kernels do, so the
//! results are bit-identical for any thread count and any split of the cells into calls.
//!
//! The attention comes from a [`GraphSource`]: a study model's single multi-head layer
//! (token-table rows projected by `W_Q`, `W_K`, Seq2Graph over the prior), or one layer of a
//! BERT checkpoint run in GenoHoption mode ([`bert_sums`], [`bert_modules`]).

use rayon::prelude::*;

use super::{
    attend, edge_weights, effective_columns, AttendScratch, CellGraph, CellHeads, DiffuseScratch,
    GenoHoption, GraphScratch, Strided, Weights, COLUMN_BLOCK,
};
use crate::aggregate::{
    add_module_part, add_parts, check_modules, check_sums, CellPart, ModuleSumsMut, SumsMut,
    Universe, CELLS_PER_THREAD, SUM_ROWS,
};
use crate::bert::{Bert, CellScratch, Encoder};
use crate::error::KernelResult;
use crate::kerr;
use crate::matrix::{Mat, Ragged, TokenId};
use crate::multihead::{rank_weight, score_scale, Heads};
use crate::projected::ProjectedRows;
use crate::real::Real;

/// One cell's queries, keys and graph at a time.
pub(crate) trait GraphSource<T>: Sync {
    /// Per-thread buffers of a cell.
    type Scratch: Default + Send;

    /// The heads averaged, in the order they are added.
    fn heads(&self) -> &[usize];

    /// The diffusion.
    fn genohoption(&self) -> &GenoHoption<'_>;

    /// Prepares the cell of `tokens`.
    fn prepare<I: TokenId>(&self, tokens: &[I], s: &mut Self::Scratch);

    /// The prepared cell's heads and graph.
    fn cell<'s>(&self, s: &'s Self::Scratch) -> (CellHeads<'s, T>, &'s CellGraph);
}

/// Per-thread buffers of [`cell_part`].
#[derive(Debug, Default)]
struct Scratch<T, S> {
    source: S,
    w: Vec<T>,
    w64: Vec<f64>,
    x: Vec<f64>,
    cols_out: Vec<f64>,
    diffuse: DiffuseScratch<f64>,
    /// Positions of the kept tokens, in the order of `CellPart::genes`.
    cols: Vec<usize>,
    /// For each position, its row in `CellPart::block`, or `usize::MAX`.
    row_of: Vec<usize>,
}

/// One cell's contribution (universe tokens sorted by universe index, then position): the
/// head-averaged diffusion matrix among them and its column sums over all positions.
fn cell_part<T: Real, I: TokenId, S: GraphSource<T>>(
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
    let params = src.genohoption().params;
    let (heads, graph) = src.cell(&s.source);
    for &h in src.heads() {
        edge_weights(&heads, graph, h, &mut s.w);
        s.w64.clear();
        s.w64.extend(s.w.iter().map(|w| w.to_f64()));
        for c0 in (0..m).step_by(COLUMN_BLOCK) {
            let c1 = (c0 + COLUMN_BLOCK).min(m);
            let b = c1 - c0;
            s.cols_out.resize(n * b, 0.0);
            effective_columns(
                graph,
                &s.w64,
                &params,
                &s.cols[c0..c1],
                &mut s.x,
                &mut s.diffuse,
                &mut s.cols_out,
            );
            for (i, row) in s.cols_out.chunks_exact(b).enumerate() {
                for (inc, &x) in part.incoming[c0..c1].iter_mut().zip(row) {
                    *inc += x;
                }
                let r = s.row_of[i];
                if r != usize::MAX {
                    for (dst, &x) in part.block[r * m + c0..r * m + c1].iter_mut().zip(row) {
                        *dst += x;
                    }
                }
            }
        }
    }
    let inv_heads = 1.0 / src.heads().len() as f64;
    for v in part.block.iter_mut().chain(part.incoming.iter_mut()) {
        *v *= inv_heads;
    }
}

/// Adds every cell's contribution into `out` in batches, in cell order (call inside the
/// pool of `n_threads` threads, inputs validated).
fn sums_in_pool<T: Real, I: TokenId, S: GraphSource<T>>(
    cells: &Ragged<'_, I>,
    src: &S,
    universe: &Universe<'_>,
    out: SumsMut<'_>,
    n_threads: usize,
) {
    let g = universe.n;
    if g == 0 || cells.n_cells() == 0 {
        return;
    }
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

/// Overwrites `out` with every cell's within-module sums (call inside the pool; `kept` as
/// returned by [`check_modules`]).
fn modules_in_pool<T: Real, I: TokenId, S: GraphSource<T>>(
    cells: &Ragged<'_, I>,
    src: &S,
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

/// A study model's single multi-head layer: rows of the token table projected once per call.
pub(super) struct MhaSource<'a, T> {
    proj: ProjectedRows<T>,
    gh: GenoHoption<'a>,
    heads: Vec<usize>,
    d: usize,
    dh: usize,
    with_values: bool,
}

/// Queries, keys, values and graph of one cell of a study model.
#[derive(Debug, Default)]
pub(super) struct MhaCell<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    graph: CellGraph,
    gs: GraphScratch,
}

impl<'a, T: Real> MhaSource<'a, T> {
    /// Queries, keys, values (row `i` scaled by `value_scale[i]` when given) and graph of
    /// the cell of `tokens`.
    pub(super) fn prepare_scaled<I: TokenId>(
        &self,
        tokens: &[I],
        value_scale: Option<&[T]>,
        s: &mut MhaCell<T>,
    ) {
        self.proj.gather(0, tokens, false, &mut s.q);
        self.proj.gather(1, tokens, false, &mut s.k);
        if self.with_values {
            self.proj.gather(2, tokens, false, &mut s.v);
            if let Some(w) = value_scale {
                for (row, &x) in s.v.chunks_exact_mut(self.d).zip(w) {
                    for v in row.iter_mut() {
                        *v *= x;
                    }
                }
            }
        }
        s.graph.build(tokens, &self.gh.prior, &mut s.gs);
    }

    /// Projects the rows the cells use (inside the pool; inputs validated).
    pub(super) fn new<I: TokenId>(
        cells: &Ragged<'_, I>,
        table: &Mat<'_, T>,
        heads: &Heads<'_, T>,
        gh: GenoHoption<'a>,
    ) -> Self {
        let d = table.cols;
        let mut ws = vec![&heads.w_q, &heads.w_k];
        if let Some(v) = heads.w_v.as_ref() {
            ws.push(v);
        }
        Self {
            proj: ProjectedRows::new(cells, table, &ws),
            gh,
            heads: (0..heads.n_heads).collect(),
            d,
            dh: d / heads.n_heads,
            with_values: heads.w_v.is_some(),
        }
    }
}

impl<T: Real> GraphSource<T> for MhaSource<'_, T> {
    type Scratch = MhaCell<T>;

    fn heads(&self) -> &[usize] {
        &self.heads
    }

    fn genohoption(&self) -> &GenoHoption<'_> {
        &self.gh
    }

    fn prepare<I: TokenId>(&self, tokens: &[I], s: &mut MhaCell<T>) {
        self.prepare_scaled(tokens, None, s);
    }

    fn cell<'s>(&self, s: &'s MhaCell<T>) -> (CellHeads<'s, T>, &'s CellGraph) {
        let strided = |data: &'s [T]| Strided {
            data,
            rs: self.d,
            c0: 0,
        };
        let heads = CellHeads {
            q: strided(&s.q),
            k: strided(&s.k),
            v: self.with_values.then(|| strided(&s.v)),
            n: s.graph.n(),
            n_heads: self.heads.len(),
            dh: self.dh,
            scale: score_scale(self.dh),
        };
        (heads, &s.graph)
    }
}

/// Mean of the rows of `ctx` (`d` columns) but those in `skip` into `out`, summed in f64;
/// zeros when no row is left.
pub(super) fn pool_rows<T: Real>(ctx: &[T], d: usize, skip: &[usize], out: &mut [T]) {
    let mut acc = vec![0.0f64; d];
    let mut count = 0usize;
    for (i, r) in ctx.chunks_exact(d).enumerate() {
        if skip.contains(&i) {
            continue;
        }
        count += 1;
        for (a, &x) in acc.iter_mut().zip(r) {
            *a += x.to_f64();
        }
    }
    let inv = if count == 0 { 0.0 } else { 1.0 / count as f64 };
    for (o, a) in out.iter_mut().zip(&acc) {
        *o = T::from_f64(a * inv);
    }
}

/// Checks the study-model inputs; the prior must have one row per table row.
pub(super) fn check_mha<T: Real, I: TokenId>(
    cells: &Ragged<'_, I>,
    table: &Mat<'_, T>,
    heads: &Heads<'_, T>,
    gh: &GenoHoption<'_>,
) -> KernelResult<()> {
    cells.validate(table.rows)?;
    heads.validate(table.cols)?;
    table.check_finite("table")?;
    gh.validate(table.rows, "table row")
}

/// Mean-pooled GenoHoption attention of many cells (the study model's cell embedding before
/// `W_O`, as [`crate::multihead::mha_pool_cells`] with the dense attention replaced): cell
/// `c`'s inputs are the rows `cells.cell(c)` of `table`; its row of the result
/// (`n_cells x d`) is the mean over positions of the concatenated diffused heads (columns
/// past `n_heads * dh` zero). Cells without tokens give zero rows. With `rank_values` each
/// token's value is scaled by its [`crate::multihead::rank_weight`] (the attention does not
/// change), as `mha_pool_cells_ranked` does. The result does not depend on `n_threads`.
pub fn mha_genohoption_pool_cells<T: Real, I: TokenId>(
    cells: Ragged<'_, I>,
    table: Mat<'_, T>,
    heads: Heads<'_, T>,
    gh: GenoHoption<'_>,
    rank_values: bool,
    n_threads: usize,
) -> KernelResult<Vec<T>> {
    check_mha(&cells, &table, &heads, &gh)?;
    if heads.w_v.is_none() {
        return Err(kerr!("w_v is required to pool cells"));
    }
    let d = table.cols;
    let mut out = vec![T::ZERO; cells.n_cells() * d];
    crate::pool::install(n_threads, || {
        let src = MhaSource::new(&cells, &table, &heads, gh);
        out.par_chunks_mut(d).enumerate().for_each_init(
            || {
                (
                    MhaCell::default(),
                    AttendScratch::default(),
                    Vec::new(),
                    Vec::new(),
                )
            },
            |(cell, att, ctx, scale), (c, row)| {
                let tokens = cells.cell(c);
                let n = tokens.len();
                if n == 0 {
                    return;
                }
                let scale = rank_values.then(|| {
                    scale.clear();
                    scale.extend((0..n).map(|i| rank_weight::<T>(i, n)));
                    &scale[..]
                });
                src.prepare_scaled(tokens, scale, cell);
                let (h, graph) = src.cell(cell);
                ctx.clear();
                ctx.resize(n * d, T::ZERO);
                attend(
                    &h,
                    graph,
                    &gh.params,
                    false,
                    att,
                    Some((ctx, d)),
                    Weights::None,
                );
                pool_rows(ctx, d, &[], row);
            },
        );
    })?;
    Ok(out)
}

/// Adds the head-averaged effective GenoHoption attention of every cell of a study model
/// (rows `cells.cell(c)` of `table`; `heads.w_v` is ignored) into `out`: the sums of
/// [`crate::aggregate::mha_aggregate_cells`] with `M` in place of `A` (see the module
/// docs). Bit-identical for any `n_threads`; adding cells in several calls equals one call.
pub fn mha_genohoption_aggregate_cells<T: Real, I: TokenId>(
    cells: Ragged<'_, I>,
    table: Mat<'_, T>,
    heads: Heads<'_, T>,
    gh: GenoHoption<'_>,
    universe: Universe<'_>,
    out: SumsMut<'_>,
    n_threads: usize,
) -> KernelResult<()> {
    check_mha(&cells, &table, &heads, &gh)?;
    universe.validate(table.rows, "table row")?;
    check_sums(universe.n, &out)?;
    let heads = Heads { w_v: None, ..heads };
    crate::pool::install(n_threads, || {
        let src = MhaSource::new(&cells, &table, &heads, gh);
        sums_in_pool(&cells, &src, &universe, out, n_threads)
    })
}

/// Within-module effective GenoHoption attention of every cell of a study model: the
/// outputs of [`crate::aggregate::mha_module_cells`] with `M` in place of `A`. `out` is
/// overwritten; the result does not depend on `n_threads`.
#[allow(clippy::too_many_arguments)]
pub fn mha_genohoption_module_cells<T: Real, I: TokenId>(
    cells: Ragged<'_, I>,
    table: Mat<'_, T>,
    heads: Heads<'_, T>,
    gh: GenoHoption<'_>,
    universe: Universe<'_>,
    module: &[i64],
    n_modules: usize,
    out: ModuleSumsMut<'_>,
    n_threads: usize,
) -> KernelResult<()> {
    check_mha(&cells, &table, &heads, &gh)?;
    universe.validate(table.rows, "table row")?;
    let index = check_modules(&universe, module, n_modules, cells.n_cells(), &out)?;
    let kept = Universe {
        index: &index,
        n: universe.n,
    };
    let heads = Heads { w_v: None, ..heads };
    crate::pool::install(n_threads, || {
        let src = MhaSource::new(&cells, &table, &heads, gh);
        modules_in_pool(&cells, &src, &kept, module, n_modules, out)
    })
}

/// One layer of a BERT checkpoint in GenoHoption mode: the encoder runs the earlier layers
/// (GenoHoption attention in each) and the layer's query and key projections.
struct BertSource<'a, 'm> {
    enc: Encoder<'a, 'm>,
    gh: GenoHoption<'m>,
    layer: usize,
    heads: Vec<usize>,
}

impl GraphSource<f32> for BertSource<'_, '_> {
    type Scratch = CellScratch;

    fn heads(&self) -> &[usize] {
        &self.heads
    }

    fn genohoption(&self) -> &GenoHoption<'_> {
        &self.gh
    }

    fn prepare<I: TokenId>(&self, tokens: &[I], s: &mut CellScratch) {
        s.queries_keys(&self.enc, tokens, self.layer);
    }

    fn cell<'s>(&self, s: &'s CellScratch) -> (CellHeads<'s, f32>, &'s CellGraph) {
        s.genohoption_heads(self.enc.model)
    }
}

/// The GenoHoption path of [`crate::aggregate::bert_aggregate_cells`] (model in GenoHoption
/// mode, inputs checked there).
pub(crate) fn bert_sums<I: TokenId>(
    cells: &Ragged<'_, I>,
    model: &Bert<'_>,
    gh: GenoHoption<'_>,
    (layer, heads): (usize, Vec<usize>),
    universe: &Universe<'_>,
    out: SumsMut<'_>,
    n_threads: usize,
) -> KernelResult<()> {
    crate::pool::install(n_threads, || {
        let src = BertSource {
            enc: Encoder::new(model, layer + 1),
            gh,
            layer,
            heads,
        };
        sums_in_pool(cells, &src, universe, out, n_threads)
    })
}

/// The GenoHoption path of [`crate::aggregate::bert_module_cells`] (inputs checked there;
/// `kept` as returned by [`check_modules`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn bert_modules<I: TokenId>(
    cells: &Ragged<'_, I>,
    model: &Bert<'_>,
    gh: GenoHoption<'_>,
    (layer, heads): (usize, Vec<usize>),
    kept: &Universe<'_>,
    module: &[i64],
    n_modules: usize,
    out: ModuleSumsMut<'_>,
    n_threads: usize,
) -> KernelResult<()> {
    crate::pool::install(n_threads, || {
        let src = BertSource {
            enc: Encoder::new(model, layer + 1),
            gh,
            layer,
            heads,
        };
        modules_in_pool(cells, &src, kept, module, n_modules, out)
    })
}
