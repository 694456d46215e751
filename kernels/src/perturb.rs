//! In-silico perturbation of one multi-head attention layer, without recomputing it.
//!
//! A cell's embedding is the mean over its query rows of the concatenated heads
//! `o_i = sum_j P_ij v_j` (`P` the row-softmax of `q_i . k_j / sqrt(dh)`). A perturbation
//! that removes the key at position `r` and/or adds a key `a` changes each remaining row to
//!
//! `o'_i = (o_i - P_ir v_r + w_ia v_a) / (1 - P_ir + w_ia)`,  `w_ia = exp(s_ia - lse_i)`,
//!
//! with `lse_i` the row's log-sum-exp: `O(d)` per row instead of `O(n d)`, so all the
//! perturbations of a cell cost one forward pass plus `O(n d)` each. When the denominator
//! is small (the removed key held nearly all of a row's attention) the update would lose
//! precision, and the row is recomputed exactly over the edited keys instead; the results
//! equal a brute-force forward pass of the edited sequence up to round-off.
//!
//! Each edit also names a position excluded from both poolings (the perturbed gene, as
//! Geneformer excludes it when comparing cell embeddings). The added token's own query row
//! is never pooled: it is the perturbed gene.

use rayon::prelude::*;

use crate::error::KernelResult;
use crate::kerr;
use crate::matrix::{gemm, Mat, Ragged, TokenId, View, ViewMut};
use crate::multihead::{rank_weight, Heads};
use crate::projected::ProjectedRows;
use crate::real::Real;
use crate::simd::softmax_row;

/// Query rows per block of the forward pass.
const BLOCK_ROWS: usize = 64;

/// Below this denominator the incremental update is replaced by an exact row.
const EXACT_BELOW: f64 = 1e-6;

/// Edits, one entry each, grouped by cell (`cell` non-decreasing). `remove`, `exclude`
/// are positions in the cell (or -1), `add` a token id (or -1).
#[derive(Debug, Clone, Copy)]
pub struct Edits<'a> {
    pub cell: &'a [i64],
    pub remove: &'a [i64],
    pub add: &'a [i64],
    pub exclude: &'a [i64],
}

impl Edits<'_> {
    pub(crate) fn len(&self) -> usize {
        self.cell.len()
    }

    pub(crate) fn validate<I: TokenId>(
        &self,
        cells: &Ragged<'_, I>,
        vocab: usize,
    ) -> KernelResult<()> {
        let n = self.len();
        if self.remove.len() != n || self.add.len() != n || self.exclude.len() != n {
            return Err(kerr!(
                "edit arrays must have the same length (cell {n}, remove {}, add {}, exclude {})",
                self.remove.len(),
                self.add.len(),
                self.exclude.len()
            ));
        }
        if self.cell.windows(2).any(|w| w[1] < w[0]) {
            return Err(kerr!("edits must be sorted by cell"));
        }
        for e in 0..n {
            let c = self.cell[e];
            if c < 0 || c as usize >= cells.n_cells() {
                return Err(kerr!(
                    "edit {e}: cell {c} is outside 0..{}",
                    cells.n_cells()
                ));
            }
            let len = cells.cell(c as usize).len() as i64;
            for (what, p) in [("remove", self.remove[e]), ("exclude", self.exclude[e])] {
                if p < -1 || p >= len {
                    return Err(kerr!(
                        "edit {e}: {what} position {p} is outside -1..{len} of cell {c}"
                    ));
                }
            }
            let a = self.add[e];
            if a < -1 || a >= vocab as i64 {
                return Err(kerr!("edit {e}: added token {a} is outside -1..{vocab}"));
            }
            if a < 0 && self.remove[e] >= 0 && len == 1 {
                return Err(kerr!("edit {e}: removing the only token of cell {c}"));
            }
        }
        Ok(())
    }
}

/// Mean-pooled concatenated heads of each edit, before `W_O`: `(original, perturbed)`,
/// each `n_edits x d` row-major. The original pools every row of the cell but `exclude`;
/// the perturbed pools every remaining row but `exclude` (and not the added token's row).
/// A pooling over no row gives zeros.
pub fn mha_edit_effects<T: Real, I: TokenId>(
    cells: Ragged<'_, I>,
    table: Mat<'_, T>,
    heads: Heads<'_, T>,
    edits: Edits<'_>,
    n_threads: usize,
) -> KernelResult<(Vec<T>, Vec<T>)> {
    mha_edit_effects_ranked(cells, table, heads, edits, None, n_threads)
}

/// [`mha_edit_effects`] of a model whose values are scaled by their rank weight
/// ([`crate::multihead::rank_weight`]) when `moved` is given: `moved[e]` (or -1) is the new
/// position of the key at `exclude[e]` (a moved token, with no key removed or added), whose
/// value then takes the weight of that position; an added key takes the weight of the first
/// position. The other tokens keep the weights of their original positions, so every edit
/// still costs `O(n d)`.
pub fn mha_edit_effects_ranked<T: Real, I: TokenId>(
    cells: Ragged<'_, I>,
    table: Mat<'_, T>,
    heads: Heads<'_, T>,
    edits: Edits<'_>,
    moved: Option<&[i64]>,
    n_threads: usize,
) -> KernelResult<(Vec<T>, Vec<T>)> {
    cells.validate(table.rows)?;
    let d = table.cols;
    let dh = heads.validate(d)?;
    let w_v = heads
        .w_v
        .ok_or_else(|| kerr!("w_v is required for perturbation effects"))?;
    table.check_finite("table")?;
    edits.validate(&cells, table.rows)?;
    let n_edits = edits.len();
    if let Some(mv) = moved {
        if mv.len() != n_edits {
            return Err(kerr!("moved has {} entries for {n_edits} edits", mv.len()));
        }
        for (e, &t) in mv.iter().enumerate() {
            if t < 0 {
                continue;
            }
            let len = cells.cell(edits.cell[e] as usize).len() as i64;
            if t >= len || edits.exclude[e] < 0 || edits.remove[e] >= 0 || edits.add[e] >= 0 {
                return Err(kerr!(
                    "edit {e}: a move to {t} needs the moved position in exclude, no removed or \
                     added key, and a target inside 0..{len}"
                ));
            }
        }
    }
    let mut original = vec![T::ZERO; n_edits * d];
    let mut perturbed = vec![T::ZERO; n_edits * d];
    // every token a projection is needed for: the cells' and the added ones
    let mut all: Vec<i64> = cells.tokens.iter().map(|t| t.get()).collect();
    all.extend(edits.add.iter().copied().filter(|&a| a >= 0));
    let all_offsets = [0, all.len() as i64];
    let everything = Ragged {
        tokens: &all[..],
        offsets: &all_offsets,
    };
    // contiguous edit ranges of each cell that has edits
    let mut groups: Vec<(usize, usize, usize)> = Vec::new();
    let mut e0 = 0;
    while e0 < n_edits {
        let c = edits.cell[e0];
        let mut e1 = e0;
        while e1 < n_edits && edits.cell[e1] == c {
            e1 += 1;
        }
        groups.push((c as usize, e0, e1));
        e0 = e1;
    }
    let mut jobs = Vec::with_capacity(groups.len());
    let (mut orest, mut prest) = (&mut original[..], &mut perturbed[..]);
    for &(c, a, b) in &groups {
        let (o, or) = std::mem::take(&mut orest).split_at_mut((b - a) * d);
        let (p, pr) = std::mem::take(&mut prest).split_at_mut((b - a) * d);
        (orest, prest) = (or, pr);
        jobs.push((c, a, b, o, p));
    }
    crate::pool::install(n_threads, || {
        let proj = ProjectedRows::new(&everything, &table, &[&heads.w_q, &heads.w_k, &w_v]);
        let layer = Layer {
            proj: &proj,
            n_heads: heads.n_heads,
            d,
            dh,
            moved,
        };
        jobs.into_par_iter()
            .with_max_len(1)
            .for_each(|(c, a, b, o, p)| {
                cell_effects(&layer, cells.cell(c), &edits, a..b, o, p);
            });
    })?;
    Ok((original, perturbed))
}

fn exp<T: Real>(x: T) -> T {
    T::from_f64(x.to_f64().exp())
}

fn ln<T: Real>(x: T) -> T {
    T::from_f64(x.to_f64().ln())
}

struct Layer<'a, T> {
    proj: &'a ProjectedRows<T>,
    n_heads: usize,
    d: usize,
    dh: usize,
    /// Rank-weighted values, and the new position of each edit's moved key (or -1).
    moved: Option<&'a [i64]>,
}

/// One cell's forward pass: per-row outputs `o` (`n x d`), log-sum-exps (`n x H`) and the
/// normalised weights of the columns some edit removes (`n x H` per such column).
struct Forward<T> {
    q: Vec<T>,
    k: Vec<T>,
    v: Vec<T>,
    o: Vec<T>,
    lse: Vec<T>,
    /// (position, `n x H` weights of that key)
    removed: Vec<(usize, Vec<T>)>,
}

fn forward<T: Real, I: TokenId>(
    layer: &Layer<'_, T>,
    tokens: &[I],
    removed: &[usize],
) -> Forward<T> {
    let (n, d, dh, nh) = (tokens.len(), layer.d, layer.dh, layer.n_heads);
    let (mut q, mut k, mut v) = (Vec::new(), Vec::new(), Vec::new());
    layer.proj.gather(0, tokens, false, &mut q);
    layer.proj.gather(1, tokens, false, &mut k);
    layer.proj.gather(2, tokens, false, &mut v);
    if layer.moved.is_some() {
        for (j, row) in v.chunks_exact_mut(d).enumerate() {
            let w = rank_weight::<T>(j, n);
            row.iter_mut().for_each(|x| *x *= w);
        }
    }
    let mut o = vec![T::ZERO; n * d];
    let mut lse = vec![T::ZERO; n * nh];
    let mut cols: Vec<(usize, Vec<T>)> = removed
        .iter()
        .map(|&r| (r, vec![T::ZERO; n * nh]))
        .collect();
    let scale = T::ONE / T::from_f64((dh as f64).sqrt());
    let mut block = Vec::new();
    for r0 in (0..n).step_by(BLOCK_ROWS) {
        let r1 = (r0 + BLOCK_ROWS).min(n);
        block.resize((r1 - r0) * n, T::ZERO);
        for h in 0..nh {
            let (c0, c1) = (h * dh, (h + 1) * dh);
            let qh = View::rowmajor(&q, n, d).rows(r0, r1).cols(c0, c1);
            let kh = View::rowmajor(&k, n, d).cols(c0, c1);
            gemm(
                T::ONE,
                qh,
                kh.t(),
                T::ZERO,
                ViewMut::rowmajor(&mut block, r1 - r0, n),
            );
            for (ii, row) in block.chunks_exact_mut(n).enumerate() {
                let i = r0 + ii;
                // lse = s_ij - ln P_ij for any key j; at the largest score P_ij is largest,
                // so its logarithm is accurate
                let (jm, top) = row
                    .iter()
                    .enumerate()
                    .fold(
                        (0, row[0]),
                        |(bj, bs), (j, &s)| if s > bs { (j, s) } else { (bj, bs) },
                    );
                softmax_row(row, scale);
                lse[i * nh + h] = top * scale - ln(row[jm]);
                for (r, col) in cols.iter_mut() {
                    col[i * nh + h] = row[*r];
                }
            }
            let vh = View::rowmajor(&v, n, d).cols(c0, c1);
            let wv = View::rowmajor(&block[..], r1 - r0, n);
            gemm(
                T::ONE,
                wv,
                vh,
                T::ZERO,
                ViewMut::cols_of(&mut o[r0 * d..r1 * d], r1 - r0, d, c0, c1),
            );
        }
    }
    cols.sort_by_key(|(r, _)| *r);
    Forward {
        q,
        k,
        v,
        o,
        lse,
        removed: cols,
    }
}

/// Head `h` of row `i` over the keys of the cell without `remove` and with `add` (`k_a`,
/// `v_a`), computed from scratch, into `out` (`dh`).
#[allow(clippy::too_many_arguments)]
fn exact_row<T: Real>(
    f: &Forward<T>,
    layer: &Layer<'_, T>,
    i: usize,
    h: usize,
    remove: Option<usize>,
    add: Option<(&[T], &[T])>,
    out: &mut [T],
) {
    let (d, dh) = (layer.d, layer.dh);
    let n = f.o.len() / d;
    let scale = T::ONE / T::from_f64((dh as f64).sqrt());
    let c0 = h * dh;
    let qi = &f.q[i * d + c0..i * d + c0 + dh];
    let dot = |k: &[T]| qi.iter().zip(k).fold(T::ZERO, |s, (&a, &b)| s + a * b) * scale;
    let mut keys: Vec<(T, &[T])> = (0..n)
        .filter(|&j| Some(j) != remove)
        .map(|j| {
            (
                dot(&f.k[j * d + c0..j * d + c0 + dh]),
                &f.v[j * d + c0..j * d + c0 + dh],
            )
        })
        .collect();
    if let Some((ka, va)) = add {
        keys.push((dot(&ka[c0..c0 + dh]), &va[c0..c0 + dh]));
    }
    let m = keys.iter().fold(
        T::from_f64(f64::NEG_INFINITY),
        |m, &(s, _)| if s > m { s } else { m },
    );
    out.fill(T::ZERO);
    let mut z = T::ZERO;
    for (s, vj) in keys {
        let e = exp(s - m);
        z += e;
        for (x, &y) in out.iter_mut().zip(vj) {
            *x += e * y;
        }
    }
    let inv = T::ONE / (z + T::TINY);
    for x in out.iter_mut() {
        *x *= inv;
    }
}

fn cell_effects<T: Real, I: TokenId>(
    layer: &Layer<'_, T>,
    tokens: &[I],
    edits: &Edits<'_>,
    range: std::ops::Range<usize>,
    orig_out: &mut [T],
    pert_out: &mut [T],
) {
    let (n, d, dh, nh) = (tokens.len(), layer.d, layer.dh, layer.n_heads);
    let move_of = |e: usize| -> Option<(usize, usize)> {
        let t = usize::try_from(layer.moved?[e]).ok()?;
        Some((usize::try_from(edits.exclude[e]).ok()?, t))
    };
    // columns whose weights an edit needs: removed keys and moved keys
    let mut removed: Vec<usize> = range
        .clone()
        .filter_map(|e| usize::try_from(edits.remove[e]).ok())
        .chain(range.clone().filter_map(|e| move_of(e).map(|(p, _)| p)))
        .collect();
    removed.sort_unstable();
    removed.dedup();
    let f = forward(layer, tokens, &removed);
    let scale = T::ONE / T::from_f64((dh as f64).sqrt());
    let exact_below = T::from_f64(EXACT_BELOW);
    let mut row = vec![T::ZERO; dh];
    for (slot, e) in range.enumerate() {
        let excl = usize::try_from(edits.exclude[e]).ok();
        let rem = usize::try_from(edits.remove[e]).ok();
        let add = usize::try_from(edits.add[e]).ok();
        // an added key's value takes the first position's rank weight
        let va_owned: Option<Vec<T>> = match (add, layer.moved) {
            (Some(a), Some(_)) => {
                let w = rank_weight::<T>(0, n);
                Some(layer.proj.row(2, a).iter().map(|&x| x * w).collect())
            }
            _ => None,
        };
        let (ka, va) = match add {
            Some(a) => (
                Some(layer.proj.row(1, a)),
                Some(va_owned.as_deref().unwrap_or_else(|| layer.proj.row(2, a))),
            ),
            None => (None, None),
        };
        let column = |r: usize| {
            let at = f
                .removed
                .binary_search_by_key(&r, |(p, _)| *p)
                .expect("collected above");
            &f.removed[at].1
        };
        let pcol = rem.map(column);
        // a moved key: its value is rescaled by w(new) / w(old) in every row
        let mv = move_of(e).map(|(p, t)| {
            let ratio = rank_weight::<T>(t, n) / rank_weight::<T>(p, n);
            (p, ratio - T::ONE, column(p))
        });
        let orig = &mut orig_out[slot * d..(slot + 1) * d];
        let pert = &mut pert_out[slot * d..(slot + 1) * d];
        let (mut n_orig, mut n_pert) = (0usize, 0usize);
        for i in 0..n {
            if Some(i) == excl {
                continue;
            }
            let oi = &f.o[i * d..(i + 1) * d];
            for (x, &y) in orig.iter_mut().zip(oi) {
                *x += y;
            }
            n_orig += 1;
            if Some(i) == rem {
                continue;
            }
            n_pert += 1;
            for h in 0..nh {
                let c0 = h * dh;
                let p_ir = pcol.map_or(T::ZERO, |col| col[i * nh + h]);
                let lse = f.lse[i * nh + h];
                // the added key's weight relative to the row's normaliser, rescaled when it
                // would overflow: numerator and denominator are divided by `big`
                let (w_a, big) = match ka {
                    Some(ka) => {
                        let qi = &f.q[i * d + c0..i * d + c0 + dh];
                        let s = qi
                            .iter()
                            .zip(&ka[c0..c0 + dh])
                            .fold(T::ZERO, |s, (&a, &b)| s + a * b)
                            * scale;
                        let t = s - lse;
                        if t > T::from_f64(30.0) {
                            (T::ONE, exp(t))
                        } else {
                            (exp(t), T::ONE)
                        }
                    }
                    None => (T::ZERO, T::ONE),
                };
                let inv_big = T::ONE / big;
                let denom = (T::ONE - p_ir) * inv_big + w_a;
                if denom < exact_below {
                    let add_kv = ka.zip(va);
                    exact_row(&f, layer, i, h, rem, add_kv, &mut row);
                } else {
                    let inv = T::ONE / denom;
                    for (t, x) in row.iter_mut().enumerate() {
                        let mut num = oi[c0 + t];
                        if let Some(r) = rem {
                            num -= p_ir * f.v[r * d + c0 + t];
                        }
                        if let Some((p, delta, col)) = mv {
                            num += col[i * nh + h] * delta * f.v[p * d + c0 + t];
                        }
                        num *= inv_big;
                        if let Some(va) = va {
                            num += w_a * va[c0 + t];
                        }
                        *x = num * inv;
                    }
                }
                for (x, &y) in pert[c0..c0 + dh].iter_mut().zip(&row) {
                    *x += y;
                }
            }
        }
        for (buf, count) in [(orig, n_orig), (pert, n_pert)] {
            if count > 0 {
                let inv = T::ONE / T::from_f64(count as f64);
                for x in buf.iter_mut() {
                    *x *= inv;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testdata::data;

    /// Mean over pooled rows of the concatenated heads of `x`'s tokens, by the formula.
    fn brute(tab: &[f64], toks: &[i64], d: usize, h: usize, pooled: &[bool]) -> Vec<f64> {
        let n = toks.len();
        let dh = d / h;
        let row = |t: i64| &tab[t as usize * d..(t as usize + 1) * d];
        let mut out = vec![0.0; d];
        let mut count = 0.0;
        for i in 0..n {
            if !pooled[i] {
                continue;
            }
            count += 1.0;
            for hh in 0..h {
                let c0 = hh * dh;
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..dh)
                            .map(|p| row(toks[i])[c0 + p] * row(toks[j])[c0 + p])
                            .sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum::<f64>() + 1e-30;
                for p in 0..dh {
                    out[c0 + p] += (0..n).map(|j| e[j] / z * row(toks[j])[c0 + p]).sum::<f64>();
                }
            }
        }
        if count > 0.0 {
            out.iter_mut().for_each(|x| *x /= count);
        }
        out
    }

    /// [`brute`] with each token's value scaled by `ws[j]` (attention weights unscaled).
    fn brute_w(
        tab: &[f64],
        toks: &[i64],
        ws: &[f64],
        d: usize,
        h: usize,
        pooled: &[bool],
    ) -> Vec<f64> {
        let n = toks.len();
        let dh = d / h;
        let row = |t: i64| &tab[t as usize * d..(t as usize + 1) * d];
        let mut out = vec![0.0; d];
        let mut count = 0.0;
        for i in (0..n).filter(|&i| pooled[i]) {
            count += 1.0;
            for hh in 0..h {
                let c0 = hh * dh;
                let s: Vec<f64> = (0..n)
                    .map(|j| {
                        (0..dh)
                            .map(|p| row(toks[i])[c0 + p] * row(toks[j])[c0 + p])
                            .sum::<f64>()
                            / (dh as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - m).exp()).collect();
                let z: f64 = e.iter().sum::<f64>() + 1e-30;
                for p in 0..dh {
                    out[c0 + p] += (0..n)
                        .map(|j| e[j] / z * ws[j] * row(toks[j])[c0 + p])
                        .sum::<f64>();
                }
            }
        }
        if count > 0.0 {
            out.iter_mut().for_each(|x| *x /= count);
        }
        out
    }

    #[test]
    fn ranked_edits_equal_brute_force_with_fixed_weights() {
        let (d, h, vocab) = (8, 2, 12);
        let tab = data(vocab * d, 7, 3.0);
        let eye: Vec<f64> = (0..d * d)
            .map(|i| if i / d == i % d { 1.0 } else { 0.0 })
            .collect();
        let tokens = [3i64, 7, 1, 9, 4, 0];
        let offsets = [0i64, 6];
        let cells = Ragged {
            tokens: &tokens,
            offsets: &offsets,
        };
        let n = tokens.len();
        let w: Vec<f64> = (0..n).map(|j| rank_weight::<f64>(j, n)).collect();
        // delete position 2; move 4 -> 1; move 0 -> 5; add token 11 (drop the last)
        let cell = [0i64, 0, 0, 0];
        let remove = [2i64, -1, -1, n as i64 - 1];
        let add = [-1i64, -1, -1, 11];
        let exclude = [2i64, 4, 0, -1];
        let moved = [-1i64, 1, 5, -1];
        let edits = Edits {
            cell: &cell,
            remove: &remove,
            add: &add,
            exclude: &exclude,
        };
        let heads = Heads {
            w_q: Mat::new("w_q", &eye, d, d).unwrap(),
            w_k: Mat::new("w_k", &eye, d, d).unwrap(),
            w_v: Some(Mat::new("w_v", &eye, d, d).unwrap()),
            n_heads: h,
        };
        let table = Mat::new("table", &tab, vocab, d).unwrap();
        let (orig, pert) =
            mha_edit_effects_ranked(cells, table, heads, edits, Some(&moved), 2).unwrap();
        let all = vec![true; n];
        let mut expect = Vec::new();
        // delete 2
        let t0: Vec<i64> = tokens
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != 2)
            .map(|(_, &t)| t)
            .collect();
        let w0: Vec<f64> = w
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != 2)
            .map(|(_, &x)| x)
            .collect();
        expect.push((t0, w0, vec![true; n - 1], 2usize));
        // moves: same tokens, the moved value takes its new weight, its row is not pooled
        for (p, t) in [(4usize, 1usize), (0, 5)] {
            let mut wm = w.clone();
            wm[p] = rank_weight::<f64>(t, n);
            let mut pooled = all.clone();
            pooled[p] = false;
            expect.push((tokens.to_vec(), wm, pooled, p));
        }
        // add 11 with the first weight, the last token dropped, the added row not pooled
        let mut ta: Vec<i64> = tokens[..n - 1].to_vec();
        ta.push(11);
        let mut wa: Vec<f64> = w[..n - 1].to_vec();
        wa.push(rank_weight::<f64>(0, n));
        let mut pa = vec![true; n];
        pa[n - 1] = false;
        expect.push((ta, wa, pa, usize::MAX));
        for (e, (toks, ws, pooled, excl)) in expect.iter().enumerate() {
            let want = brute_w(&tab, toks, ws, d, h, pooled);
            for (a, b) in pert[e * d..(e + 1) * d].iter().zip(&want) {
                assert!((a - b).abs() < 1e-10, "edit {e}: {a} vs {b}");
            }
            let mut po = all.clone();
            if *excl < n {
                po[*excl] = false;
            }
            let want_o = brute_w(&tab, &tokens, &w, d, h, &po);
            for (a, b) in orig[e * d..(e + 1) * d].iter().zip(&want_o) {
                assert!((a - b).abs() < 1e-10, "original {e}: {a} vs {b}");
            }
        }
        // a move must name its position in exclude and nothing else
        let bad = [-1i64, 1, -1, 2];
        assert!(mha_edit_effects_ranked(cells, table, heads, edits, Some(&bad), 1).is_err());
        // without ranks the plain kernel is unchanged
        let (o1, p1) = mha_edit_effects(cells, table, heads, edits, 1).unwrap();
        let (o2, p2) = mha_edit_effects_ranked(cells, table, heads, edits, None, 2).unwrap();
        assert_eq!((o1, p1), (o2, p2));
    }

    #[test]
    fn edits_equal_brute_force_recomputation() {
        let (d, h, vocab) = (8, 2, 12);
        for (seed, scale) in [(1u64, 1.0), (2, 6.0), (3, 40.0)] {
            let tab = data(vocab * d, seed, scale);
            let eye: Vec<f64> = (0..d * d)
                .map(|i| if i / d == i % d { 1.0 } else { 0.0 })
                .collect();
            let w = Mat::new("w", &eye, d, d).unwrap();
            let heads = Heads {
                w_q: w,
                w_k: w,
                w_v: Some(w),
                n_heads: h,
            };
            let tokens: Vec<i64> = vec![3, 7, 1, 9, 4, 2, 5, 11, 0];
            let cells = Ragged {
                tokens: &tokens,
                offsets: &[0, 6, 9],
            };
            // cell 0: delete pos 2; overexpress absent token 10 (drop last); a no-op move;
            // cell 1: delete pos 0
            let edits = Edits {
                cell: &[0, 0, 0, 1],
                remove: &[2, 5, -1, 0],
                add: &[-1, 10, -1, -1],
                exclude: &[2, -1, 3, 0],
            };
            let t = Mat::new("table", &tab, vocab, d).unwrap();
            let (orig, pert) = mha_edit_effects(cells, t, heads, edits, 2).unwrap();
            let c0: Vec<i64> = tokens[..6].to_vec();
            let c1: Vec<i64> = tokens[6..].to_vec();
            let keep =
                |n: usize, skip: &[usize]| (0..n).map(|i| !skip.contains(&i)).collect::<Vec<_>>();
            let cases: Vec<(Vec<f64>, Vec<f64>)> = vec![
                (
                    brute(&tab, &c0, d, h, &keep(6, &[2])),
                    brute(&tab, &[3, 7, 9, 4, 2], d, h, &keep(5, &[])),
                ),
                (
                    brute(&tab, &c0, d, h, &keep(6, &[])),
                    brute(&tab, &[10, 3, 7, 1, 9, 4], d, h, &keep(6, &[0])),
                ),
                (
                    brute(&tab, &c0, d, h, &keep(6, &[3])),
                    brute(&tab, &c0, d, h, &keep(6, &[3])),
                ),
                (
                    brute(&tab, &c1, d, h, &keep(3, &[0])),
                    brute(&tab, &[11, 0], d, h, &keep(2, &[])),
                ),
            ];
            for (e, (want_o, want_p)) in cases.iter().enumerate() {
                for j in 0..d {
                    let tol = 1e-10 * (1.0 + want_p[j].abs());
                    assert!(
                        (orig[e * d + j] - want_o[j]).abs() < tol,
                        "seed {seed} edit {e} orig"
                    );
                    assert!(
                        (pert[e * d + j] - want_p[j]).abs() < tol,
                        "seed {seed} edit {e} pert {} vs {}",
                        pert[e * d + j],
                        want_p[j]
                    );
                }
            }
        }
    }

    #[test]
    fn bad_edits_are_errors() {
        let tab = data(4 * 4, 1, 1.0);
        let eye: Vec<f64> = (0..16)
            .map(|i| if i / 4 == i % 4 { 1.0 } else { 0.0 })
            .collect();
        let w = Mat::new("w", &eye, 4, 4).unwrap();
        let heads = Heads {
            w_q: w,
            w_k: w,
            w_v: Some(w),
            n_heads: 2,
        };
        let t = Mat::new("table", &tab, 4, 4).unwrap();
        let tokens: [i64; 3] = [0, 1, 2];
        let cells = Ragged {
            tokens: &tokens,
            offsets: &[0, 3],
        };
        let bad = Edits {
            cell: &[0],
            remove: &[3],
            add: &[-1],
            exclude: &[-1],
        };
        let err = mha_edit_effects(cells, t, heads, bad, 1).unwrap_err();
        assert!(err.0.contains("remove position 3"), "{}", err.0);
        let bad = Edits {
            cell: &[1, 0],
            remove: &[0, 0],
            add: &[-1, -1],
            exclude: &[0, 0],
        };
        assert!(mha_edit_effects(cells, t, heads, bad, 1).is_err());
        let bad = Edits {
            cell: &[0],
            remove: &[-1],
            add: &[4],
            exclude: &[-1],
        };
        assert!(mha_edit_effects(cells, t, heads, bad, 1)
            .unwrap_err()
            .0
            .contains("added token 4"));
    }
}
