//! In-silico perturbation of a study model in GenoHoption mode.
//!
//! The edits are those of [`crate::perturb`] (keys removed and added, a position left out of
//! both poolings). Dense attention has an `O(n d)` update per edit; GenoHoption has none: a
//! removed or added gene changes its neighbours' edge softmax and the diffusion carries the
//! change `K` hops further. Each edit therefore re-runs the cell's GenoHoption attention
//! over the edited tokens (`O(E K d)`), the edited cell being the original without the
//! removed position and with the added token last (positions do not matter to the study
//! model). An edit that removes and adds nothing (a rank shift) leaves an order-free model
//! unchanged: its perturbed embedding is its original one. A model whose values are scaled
//! by rank ([`crate::multihead::rank_weight`]) sees moves as the dense kernel does
//! ([`crate::perturb::mha_edit_effects_ranked`]): a moved token's value takes the weight of
//! its new position, an added one that of the first position, and the other tokens keep
//! the weights of their original positions.

use rayon::prelude::*;

use super::aggregate::{check_mha, pool_rows, GraphSource, MhaCell, MhaSource};
use super::{attend, AttendScratch, GenoHoption, Weights};
use crate::error::KernelResult;
use crate::kerr;
use crate::matrix::{Mat, Ragged, TokenId};
use crate::multihead::{rank_weight, Heads};
use crate::perturb::Edits;
use crate::real::Real;

/// Per-task buffers.
#[derive(Debug, Default)]
struct Scratch<T> {
    cell: MhaCell<T>,
    attend: AttendScratch<T>,
    ctx: Vec<T>,
    edited: Vec<i64>,
    scale: Vec<T>,
}

/// GenoHoption attention of `tokens` (values scaled by `scale` when given) into `s.ctx`
/// (`n x d`).
fn run<T: Real>(
    src: &MhaSource<'_, T>,
    tokens: &[i64],
    scale: Option<&[T]>,
    d: usize,
    s: &mut Scratch<T>,
) {
    src.prepare_scaled(tokens, scale, &mut s.cell);
    let (heads, graph) = src.cell(&s.cell);
    s.ctx.clear();
    s.ctx.resize(tokens.len() * d, T::ZERO);
    let p = src.genohoption().params;
    let ctx = Some((&mut s.ctx[..], d));
    attend(&heads, graph, &p, false, &mut s.attend, ctx, Weights::None);
}

/// Mean-pooled GenoHoption attention of each edit, before `W_O`: `(original, perturbed)`,
/// each `n_edits x d` row-major, as [`crate::perturb::mha_edit_effects`] defines them (the
/// original pools every position of the cell but `exclude`; the perturbed every remaining
/// position but `exclude` and the added token). With `moved` the values are scaled by rank
/// (see the module docs): `moved[e]` (or -1) is the new position of the token at
/// `exclude[e]`, moved without a key removed or added. The result does not depend on
/// `n_threads`.
pub fn mha_genohoption_edit_effects<T: Real, I: TokenId>(
    cells: Ragged<'_, I>,
    table: Mat<'_, T>,
    heads: Heads<'_, T>,
    gh: GenoHoption<'_>,
    edits: Edits<'_>,
    moved: Option<&[i64]>,
    n_threads: usize,
) -> KernelResult<(Vec<T>, Vec<T>)> {
    check_mha(&cells, &table, &heads, &gh)?;
    if heads.w_v.is_none() {
        return Err(kerr!("w_v is required for perturbation effects"));
    }
    edits.validate(&cells, table.rows)?;
    let d = table.cols;
    let n_edits = edits.len();
    if let Some(mv) = moved {
        if mv.len() != n_edits {
            return Err(kerr!("moved has {} entries for {n_edits} edits", mv.len()));
        }
        for (e, &t) in mv.iter().enumerate() {
            let len = cells.cell(edits.cell[e] as usize).len() as i64;
            let bad = edits.exclude[e] < 0 || edits.remove[e] >= 0 || edits.add[e] >= 0;
            if t >= 0 && (t >= len || bad) {
                return Err(kerr!(
                    "edit {e}: a move to {t} needs the moved position in exclude, no removed or \
                     added key, and a target inside 0..{len}"
                ));
            }
        }
    }
    let ranked = moved.is_some();
    let mut original = vec![T::ZERO; n_edits * d];
    let mut perturbed = vec![T::ZERO; n_edits * d];
    // projections of every token needed: the cells' and the added ones
    let mut all: Vec<i64> = cells.tokens.iter().map(|t| t.get()).collect();
    all.extend(edits.add.iter().copied().filter(|&a| a >= 0));
    let all_offsets = [0, all.len() as i64];
    let everything = Ragged {
        tokens: &all[..],
        offsets: &all_offsets,
    };
    // contiguous edit ranges of each cell (edits are sorted by cell)
    let mut jobs = Vec::new();
    let (mut orest, mut prest) = (&mut original[..], &mut perturbed[..]);
    let mut e0 = 0;
    while e0 < n_edits {
        let c = edits.cell[e0];
        let e1 = e0 + edits.cell[e0..].iter().take_while(|&&x| x == c).count();
        let (o, or) = std::mem::take(&mut orest).split_at_mut((e1 - e0) * d);
        let (p, pr) = std::mem::take(&mut prest).split_at_mut((e1 - e0) * d);
        (orest, prest) = (or, pr);
        jobs.push((c as usize, e0..e1, o, p));
        e0 = e1;
    }
    crate::pool::install(n_threads, || {
        let src = MhaSource::new(&everything, &table, &heads, gh);
        jobs.into_par_iter().with_max_len(1).for_each_init(
            Scratch::default,
            |s, (c, range, orig_out, pert_out)| {
                let tokens: Vec<i64> = cells.cell(c).iter().map(|t| t.get()).collect();
                let n = tokens.len();
                let weights: Vec<T> = if ranked {
                    (0..n).map(|i| rank_weight::<T>(i, n)).collect()
                } else {
                    Vec::new()
                };
                run(&src, &tokens, ranked.then_some(&weights[..]), d, s);
                let full = std::mem::take(&mut s.ctx);
                let outs = orig_out
                    .chunks_exact_mut(d)
                    .zip(pert_out.chunks_exact_mut(d));
                for (e, (o, p)) in range.zip(outs) {
                    let excl = usize::try_from(edits.exclude[e]).ok();
                    let rem = usize::try_from(edits.remove[e]).ok();
                    let add = edits.add[e];
                    let to = moved.and_then(|m| usize::try_from(m[e]).ok());
                    pool_rows(&full, d, excl.as_slice(), o);
                    if let (Some(t), Some(x)) = (to, excl) {
                        // a moved token: the same genes, its value at its new position's weight
                        let mut w = std::mem::take(&mut s.scale);
                        w.clear();
                        w.extend_from_slice(&weights);
                        w[x] = rank_weight::<T>(t, n);
                        run(&src, &tokens, Some(&w), d, s);
                        s.scale = w;
                        pool_rows(&s.ctx, d, &[x], p);
                        continue;
                    }
                    if rem.is_none() && add < 0 {
                        p.copy_from_slice(o);
                        continue;
                    }
                    let mut edited = std::mem::take(&mut s.edited);
                    let mut w = std::mem::take(&mut s.scale);
                    edited.clear();
                    w.clear();
                    for i in (0..n).filter(|&i| Some(i) != rem) {
                        edited.push(tokens[i]);
                        if ranked {
                            w.push(weights[i]);
                        }
                    }
                    let mut skip = Vec::with_capacity(2);
                    if let Some(x) = excl.filter(|&x| Some(x) != rem) {
                        skip.push(if rem.is_some_and(|r| x > r) { x - 1 } else { x });
                    }
                    if add >= 0 {
                        skip.push(edited.len());
                        edited.push(add);
                        if ranked {
                            w.push(rank_weight::<T>(0, n));
                        }
                    }
                    run(&src, &edited, ranked.then_some(&w[..]), d, s);
                    (s.edited, s.scale) = (edited, w);
                    pool_rows(&s.ctx, d, &skip, p);
                }
            },
        );
    })?;
    Ok((original, perturbed))
}
