//! The aggregation kernels over one layer of a BERT checkpoint ([`crate::bert`]).
//!
//! Per cell the encoder runs up to the chosen layer only: the embeddings, the layers before
//! it, and of the layer itself just the query and key projections. Its softmax attention,
//! averaged over the chosen heads, is then aggregated block by block of query rows exactly
//! as the study-model kernels do (see [`super`]); the value and output projections and the
//! feed-forward of that layer, and every later layer, are not computed.

use super::{
    aggregate_in_pool, check_modules, check_sums, modules_in_pool, CellScores, ModuleSumsMut,
    SumsMut, Universe,
};
use crate::bert::{score_scale, Bert, CellScratch, Encoder, Wanted};
use crate::error::KernelResult;
use crate::kerr;
use crate::matrix::{Ragged, TokenId};

/// Which attention of a checkpoint is aggregated.
#[derive(Debug, Clone, Copy)]
pub struct LayerHeads<'a> {
    /// 0-based encoder layer.
    pub layer: usize,
    /// Heads averaged, distinct; `None` for all of them.
    pub heads: Option<&'a [usize]>,
}

/// Which layer and heads of a checkpoint, checked.
struct Choice<'a, 'm> {
    model: &'a Bert<'m>,
    layer: usize,
    heads: Vec<usize>,
}

impl<'a, 'm> Choice<'a, 'm> {
    /// The scores, with the layers up to the chosen one packed (call inside the pool).
    fn scores(self) -> BertScores<'a, 'm> {
        BertScores {
            enc: Encoder::new(self.model, self.layer + 1),
            layer: self.layer,
            heads: self.heads,
        }
    }
}

/// One layer's attention of a checkpoint, cell by cell.
struct BertScores<'a, 'm> {
    enc: Encoder<'a, 'm>,
    layer: usize,
    heads: Vec<usize>,
}

impl CellScores<f32> for BertScores<'_, '_> {
    type Scratch = CellScratch;

    fn heads(&self) -> &[usize] {
        &self.heads
    }

    fn scale(&self) -> f32 {
        score_scale(self.enc.model)
    }

    fn prepare<I: TokenId>(&self, tokens: &[I], s: &mut CellScratch) {
        s.queries_keys(&self.enc, tokens, self.layer);
    }

    fn scores(&self, s: &CellScratch, h: usize, r0: usize, r1: usize, out: &mut [f32]) {
        s.scores(self.enc.model, h, r0, r1, out);
    }
}

/// Checks the model, the cells, the layer, the heads and the universe.
fn check<'a, 'm, I: TokenId>(
    cells: &Ragged<'_, I>,
    model: &'a Bert<'m>,
    which: LayerHeads<'_>,
    universe: &Universe<'_>,
) -> KernelResult<Choice<'a, 'm>> {
    model.validate()?;
    model.check_cells(cells)?;
    let wanted = Wanted {
        attention: vec![which.layer],
        ..Wanted::default()
    };
    wanted.layers_to_run(model.layers.len())?;
    let n_heads = model.n_heads;
    let heads = match which.heads {
        None => (0..n_heads).collect(),
        Some(hs) => {
            if hs.is_empty() {
                return Err(kerr!(
                    "heads must name at least one head (or be None for all)"
                ));
            }
            if let Some(h) = hs.iter().find(|&&h| h >= n_heads) {
                return Err(kerr!(
                    "head {h} does not exist: the model has heads 0 .. {}",
                    n_heads - 1
                ));
            }
            let mut seen = hs.to_vec();
            seen.sort_unstable();
            if seen.windows(2).any(|w| w[0] == w[1]) {
                return Err(kerr!("heads must be distinct, got {hs:?}"));
            }
            hs.to_vec()
        }
    };
    let vocab = model.embeddings.word.rows;
    universe.validate(vocab, "row of the word embeddings")?;
    Ok(Choice {
        model,
        layer: which.layer,
        heads,
    })
}

/// Adds the attention of layer `which.layer` of a BERT encoder, averaged over
/// `which.heads`, of every cell (input ids `cells.cell(c)`) into `out`: the sums of
/// [`super::mha_aggregate_cells`] with the checkpoint's attention. Cells run on
/// `n_threads` threads, one cell per thread; the result does not depend on it, and adding
/// cells in several calls equals one call.
pub fn bert_aggregate_cells<I: TokenId>(
    cells: Ragged<'_, I>,
    model: &Bert<'_>,
    which: LayerHeads<'_>,
    universe: Universe<'_>,
    out: SumsMut<'_>,
    n_threads: usize,
) -> KernelResult<()> {
    let src = check(&cells, model, which, &universe)?;
    check_sums(universe.n, &out)?;
    crate::pool::install(n_threads, || {
        aggregate_in_pool(&cells, || src.scores(), &universe, out, n_threads)
    })
}

/// Within-module attention of every cell (see [`super::mha_module_cells`]) with the
/// attention of layer `which.layer` of a BERT encoder, averaged over `which.heads`. `out`
/// is overwritten; the result does not depend on `n_threads`.
#[allow(clippy::too_many_arguments)]
pub fn bert_module_cells<I: TokenId>(
    cells: Ragged<'_, I>,
    model: &Bert<'_>,
    which: LayerHeads<'_>,
    universe: Universe<'_>,
    module: &[i64],
    n_modules: usize,
    out: ModuleSumsMut<'_>,
    n_threads: usize,
) -> KernelResult<()> {
    let src = check(&cells, model, which, &universe)?;
    let index = check_modules(&universe, module, n_modules, cells.n_cells(), &out)?;
    let kept = Universe {
        index: &index,
        n: universe.n,
    };
    crate::pool::install(n_threads, || {
        modules_in_pool(&cells, || src.scores(), &kept, module, n_modules, out)
    })
}

#[cfg(test)]
mod tests;
