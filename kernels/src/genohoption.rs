//! GenoHoption (seed 001): graph-sparse attention with multi-hop diffusion of the values.
//!
//! Per cell and head, with `q_i`, `k_j`, `v_j` the head's query, key and value rows:
//!
//! 1. **Seq2Graph** ([`CellGraph::build`]): the prior graph among the cell's own tokens. The
//!    prior is a CSR over token ids ([`Prior`]): row `t` lists the tokens `t` attends to.
//!    Position `i` attends to position `j` when the prior links token `t_i` to `t_j`
//!    (`t_i != t_j`: the prior's diagonal is ignored), and to itself: every position gets a
//!    self-loop, as the authors' graphs (`dgl.add_self_loop`). Positions of tokens the prior
//!    does not know (special tokens, genes outside the prior) therefore only attend to
//!    themselves.
//! 2. **Edge softmax** ([`edge_weights`]): `A_ij = softmax_j(q_i . k_j / sqrt(dh))` over the
//!    neighbours `j` of `i` only (max-subtracted, as the dense kernels). A row without any
//!    neighbour (possible only in a graph given directly, [`CellGraph::from_csr`]) is taken as
//!    a self-loop: `A_ii = 1`, so **a node without neighbours keeps its own value** through
//!    every propagation step.
//! 3. **Iteration** ([`diffuse`]), `K` steps of
//!    - personalised PageRank (GenoHoption-p, eq. 8): `V_0 = V`,
//!      `V_k = (1 - alpha) A V_(k-1) + alpha V`; the result is `V_K`;
//!    - heat kernel (GenoHoption-h, eq. 10): `H_0 = e^(-t) V`, `H_k = A H_(k-1)`; the result is
//!      `sum_(k=0..K) t^k / k! H_k = e^(-t) sum_(k=0..K) t^k / k! A^k V` (eq. 11).
//!
//!    Both equal `M V` with the diffusion matrix `M = sum_k theta_k A^k` of eqs. 5 to 7
//!    truncated as in eqs. 9 and 11 ([`Params::coefficients`]): PPR `theta_k = alpha
//!    (1 - alpha)^k` for `k < K` and `theta_K = (1 - alpha)^K` (rows of `M` sum to 1); heat
//!    `theta_k = e^(-t) t^k / k!` for `k <= K` (rows sum to less than 1, 0.76 for `t = 5`,
//!    `K = 6`, as in the seed; not renormalised).
//! 4. **Graph2Seq**: the diffused values are the head's attention output, in sequence order.
//!
//! Cost per cell and head: `O(E dh)` for the edge scores and `O(E K dh)` for the diffusion
//! (`E` the cell graph's edges) instead of `O(n^2 dh)`. No parameters are added.
//!
//! Differences from the authors' `gn_attn.py` (DGL), checked by the tests: their heat loop
//! runs `for k in range(1, iter_num)`, i.e. powers `0 .. iter_num - 1`, where eq. 11 and this
//! module use `0 ..= K` (so their `iter_num` is our `iterations + 1`); their PPR loop runs
//! `iter_num` steps of eq. 8 like ours. Their DGL edge `u -> v` lets `v` attend to `u`
//! (score `k_u . q_v`, softmax over the edges into `v`), so their edge list is our prior
//! transposed (the same for a symmetric prior such as the PPI).
//!
//! The effective multi-hop attention of a head, `M` itself, is what the aggregation kernels
//! ([`aggregate`]) sum into gene x gene arrays: [`effective_columns`] computes columns of `M`
//! by diffusing indicator columns, in `O(E K)` per column.

pub mod aggregate;
pub mod perturb;

use rayon::prelude::*;

use crate::error::KernelResult;
use crate::kerr;
use crate::matrix::TokenId;
use crate::real::Real;
use crate::simd::{axpy, softmax_row};

/// Upper bound on the number of diffusion steps (the seed uses 6; more is a mistake).
pub const MAX_ITERATIONS: usize = 1000;

/// Indicator columns diffused at a time by [`effective_columns`] callers.
pub const COLUMN_BLOCK: usize = 64;

/// Which diffusion, with its parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Diffusion {
    /// Personalised PageRank with teleport probability `alpha` in `(0, 1]`.
    Ppr { alpha: f64 },
    /// Heat kernel with diffusion time `t > 0`.
    Heat { t: f64 },
}

/// The diffusion and its number of steps `K`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub diffusion: Diffusion,
    pub iterations: usize,
}

impl Params {
    /// Builds the parameters from their names (`"ppr"` or `"heat"`), checked.
    pub fn from_name(name: &str, alpha: f64, t: f64, iterations: usize) -> KernelResult<Self> {
        let diffusion = match name {
            "ppr" => Diffusion::Ppr { alpha },
            "heat" => Diffusion::Heat { t },
            other => return Err(kerr!("diffusion must be 'ppr' or 'heat', got {other:?}")),
        };
        let p = Self {
            diffusion,
            iterations,
        };
        p.validate()?;
        Ok(p)
    }

    /// Checks the parameter ranges.
    pub fn validate(&self) -> KernelResult<()> {
        match self.diffusion {
            Diffusion::Ppr { alpha } if !(alpha > 0.0 && alpha <= 1.0) => {
                return Err(kerr!("alpha must lie in (0, 1], got {alpha}"));
            }
            Diffusion::Heat { t } if !(t.is_finite() && t > 0.0) => {
                return Err(kerr!("t must be finite and > 0, got {t}"));
            }
            _ => {}
        }
        if self.iterations > MAX_ITERATIONS {
            return Err(kerr!(
                "iterations must be at most {MAX_ITERATIONS}, got {}",
                self.iterations
            ));
        }
        Ok(())
    }

    /// `theta_0 ..= theta_K` of the truncated diffusion matrix `sum_k theta_k A^k` that `K`
    /// steps compute (see the module docs).
    pub fn coefficients(&self) -> Vec<f64> {
        let k_max = self.iterations;
        match self.diffusion {
            Diffusion::Ppr { alpha } => (0..=k_max)
                .map(|k| {
                    let decay = (1.0 - alpha).powi(k as i32);
                    if k < k_max {
                        alpha * decay
                    } else {
                        decay
                    }
                })
                .collect(),
            Diffusion::Heat { t } => {
                let mut c = (-t).exp();
                let mut out = vec![c];
                for k in 1..=k_max {
                    c *= t / k as f64;
                    out.push(c);
                }
                out
            }
        }
    }
}

/// GenoHoption's configuration: the prior graph over token ids and the diffusion.
#[derive(Debug, Clone, Copy)]
pub struct GenoHoption<'a> {
    pub prior: Prior<'a>,
    pub params: Params,
}

impl GenoHoption<'_> {
    /// Checks the parameters and that the prior has one row per token id (`vocab`, the
    /// rows of `rows`).
    pub fn validate(&self, vocab: usize, rows: &str) -> KernelResult<()> {
        self.params.validate()?;
        self.prior.validate(vocab, rows)
    }
}

/// How an encoder layer attends: dense softmax attention over all tokens, or GenoHoption.
#[derive(Debug, Clone, Copy, Default)]
pub enum AttentionMode<'a> {
    #[default]
    Dense,
    GenoHoption(GenoHoption<'a>),
}

/// A graph over token ids in CSR form: row `t` (`indices[indptr[t]..indptr[t + 1]]`) lists
/// the tokens `t` attends to. Only the pattern is used (no weights).
#[derive(Debug, Clone, Copy)]
pub struct Prior<'a> {
    pub indptr: &'a [i64],
    pub indices: &'a [i64],
}

impl Prior<'_> {
    /// Number of token ids (rows).
    pub fn n(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// Checks the CSR structure and that it has one row per token id (`vocab`, the rows of
    /// `rows`).
    pub fn validate(&self, vocab: usize, rows: &str) -> KernelResult<()> {
        check_csr(
            "prior",
            self.indptr,
            self.indices,
            vocab,
            &format!("{rows} ({vocab})"),
        )
    }

    #[inline]
    fn row(&self, t: usize) -> &[i64] {
        &self.indices[self.indptr[t] as usize..self.indptr[t + 1] as usize]
    }
}

/// Checks a CSR pattern of `n` rows whose indices lie in `0..n`.
fn check_csr(
    name: &str,
    indptr: &[i64],
    indices: &[i64],
    n: usize,
    what: &str,
) -> KernelResult<()> {
    if indptr.len() != n + 1 {
        return Err(kerr!(
            "{name} indptr must have one entry per {what} plus one ({}), got {}",
            n + 1,
            indptr.len()
        ));
    }
    if indptr[0] != 0 {
        return Err(kerr!("{name} indptr must start at 0, got {}", indptr[0]));
    }
    if indptr.windows(2).any(|w| w[1] < w[0]) {
        return Err(kerr!("{name} indptr must be non-decreasing"));
    }
    if indptr[n] as usize != indices.len() {
        return Err(kerr!(
            "{name} indptr ends at {} but there are {} indices",
            indptr[n],
            indices.len()
        ));
    }
    if let Some((e, &j)) = indices
        .iter()
        .enumerate()
        .find(|(_, &j)| j < 0 || j as usize >= n)
    {
        return Err(kerr!("{name} indices[{e}] = {j} is outside 0..{n}"));
    }
    Ok(())
}

/// Reusable buffers of [`CellGraph::build`]: for each token id its latest position in the
/// cell (a chain through `next` lists repeated tokens), reset after every build.
#[derive(Debug, Default)]
pub struct GraphScratch {
    head: Vec<u32>,
    next: Vec<u32>,
}

const NONE: u32 = u32::MAX;

/// The graph among the positions of one cell, CSR: row `i` lists the positions `i` attends
/// to, ascending, without repeats.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CellGraph {
    indptr: Vec<usize>,
    indices: Vec<u32>,
}

impl CellGraph {
    /// Number of positions.
    pub fn n(&self) -> usize {
        self.indptr.len().saturating_sub(1)
    }

    /// Number of edges (self-loops included).
    pub fn n_edges(&self) -> usize {
        self.indices.len()
    }

    /// Row pointers (`n + 1`).
    pub fn indptr(&self) -> &[usize] {
        &self.indptr
    }

    /// Neighbour positions of all rows, row after row.
    pub fn indices(&self) -> &[u32] {
        &self.indices
    }

    /// The positions `i` attends to.
    #[inline]
    pub fn row(&self, i: usize) -> &[u32] {
        &self.indices[self.indptr[i]..self.indptr[i + 1]]
    }

    /// Seq2Graph: the prior among the tokens of one cell (tokens checked against the prior's
    /// rows by the caller), with a self-loop on every position (see the module docs).
    pub fn build<I: TokenId>(&mut self, tokens: &[I], prior: &Prior<'_>, s: &mut GraphScratch) {
        let n = tokens.len();
        s.head.resize(prior.n(), NONE);
        s.next.clear();
        s.next.resize(n, NONE);
        for (i, t) in tokens.iter().enumerate() {
            let t = t.get() as usize;
            s.next[i] = s.head[t];
            s.head[t] = i as u32;
        }
        self.indptr.clear();
        self.indices.clear();
        self.indptr.push(0);
        for (i, t) in tokens.iter().enumerate() {
            let start = self.indices.len();
            self.indices.push(i as u32);
            let t = t.get() as usize;
            for &u in prior.row(t) {
                let u = u as usize;
                if u == t {
                    continue;
                }
                let mut j = s.head[u];
                while j != NONE {
                    self.indices.push(j);
                    j = s.next[j as usize];
                }
            }
            sort_dedup(&mut self.indices, start);
            self.indptr.push(self.indices.len());
        }
        for t in tokens {
            s.head[t.get() as usize] = NONE;
        }
    }

    /// A graph given directly as a CSR over `n` positions, used as is except that rows are
    /// sorted and de-duplicated and an empty row gets a self-loop (the node keeps its value).
    pub fn from_csr(indptr: &[i64], indices: &[i64], n: usize) -> KernelResult<Self> {
        check_csr("graph", indptr, indices, n, "position")?;
        let mut g = Self {
            indptr: vec![0],
            indices: Vec::with_capacity(indices.len()),
        };
        for i in 0..n {
            let start = g.indices.len();
            let row = &indices[indptr[i] as usize..indptr[i + 1] as usize];
            g.indices.extend(row.iter().map(|&j| j as u32));
            if row.is_empty() {
                g.indices.push(i as u32);
            }
            sort_dedup(&mut g.indices, start);
            g.indptr.push(g.indices.len());
        }
        Ok(g)
    }
}

/// Sorts `v[start..]` and removes repeats from it.
fn sort_dedup(v: &mut Vec<u32>, start: usize) {
    v[start..].sort_unstable();
    let mut w = start;
    for r in start..v.len() {
        if r == start || v[r] != v[w - 1] {
            v[w] = v[r];
            w += 1;
        }
    }
    v.truncate(w);
}

/// Rows of one projection in a row-major buffer: row `i` of head `h` is
/// `data[i * rs + c0 + h * dh ..][..dh]`.
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a, T> {
    pub data: &'a [T],
    /// Distance between rows.
    pub rs: usize,
    /// Column of head 0.
    pub c0: usize,
}

impl<T> Strided<'_, T> {
    #[inline]
    fn row(&self, i: usize, h: usize, dh: usize) -> &[T] {
        let s = i * self.rs + self.c0 + h * dh;
        &self.data[s..s + dh]
    }
}

/// The queries, keys and (when the output is wanted) values of one cell's heads.
#[derive(Debug, Clone, Copy)]
pub struct CellHeads<'a, T> {
    pub q: Strided<'a, T>,
    pub k: Strided<'a, T>,
    pub v: Option<Strided<'a, T>>,
    /// Positions.
    pub n: usize,
    pub n_heads: usize,
    /// Head width.
    pub dh: usize,
    /// Factor of the scores inside the softmax (`1 / sqrt(dh)`).
    pub scale: T,
}

/// The edge softmax of head `h` into `w` (one weight per edge of `graph`, in its order):
/// `softmax_j(scale * q_i . k_j)` over the neighbours `j` of each position `i`.
pub fn edge_weights<T: Real>(
    heads: &CellHeads<'_, T>,
    graph: &CellGraph,
    h: usize,
    w: &mut Vec<T>,
) {
    let dh = heads.dh;
    w.clear();
    w.resize(graph.n_edges(), T::ZERO);
    let (q, k) = (&heads.q, &heads.k);
    let (qo, ko) = (q.c0 + h * dh, k.c0 + h * dh);
    edge_scores(
        &graph.indptr,
        &graph.indices,
        (q.data, q.rs, qo),
        (k.data, k.rs, ko),
        dh,
        w,
    );
    for i in 0..graph.n() {
        softmax_row(&mut w[graph.indptr[i]..graph.indptr[i + 1]], heads.scale);
    }
}

crate::simd_fn! {
    /// Raw scores `q_i . k_j` of every edge into `w` (queries and keys given as `(data, row
    /// stride, column of the head)`), compiled with AVX2 whole like [`propagate_rows`].
    fn edge_scores<T: Real>(
        indptr: &[usize],
        indices: &[u32],
        q: (&[T], usize, usize),
        k: (&[T], usize, usize),
        dh: usize,
        w: &mut [T],
    ) {
        for i in 0..indptr.len() - 1 {
            let qi = &q.0[i * q.1 + q.2..i * q.1 + q.2 + dh];
            for e in indptr[i]..indptr[i + 1] {
                let j = indices[e] as usize;
                let kj = &k.0[j * k.1 + k.2..j * k.1 + k.2 + dh];
                let mut s = T::ZERO;
                for (&a, &b) in qi.iter().zip(kj) {
                    s += a * b;
                }
                w[e] = s;
            }
        }
    }
}

/// `out = A x` for `x` (`n x width`, row-major), `A` the graph with edge weights `w`.
fn propagate<T: Real>(graph: &CellGraph, w: &[T], x: &[T], width: usize, out: &mut [T]) {
    propagate_rows(&graph.indptr, &graph.indices, w, x, width, out);
}

crate::simd_fn! {
    /// [`propagate`] on the CSR arrays, one body so that it is compiled with AVX2 whole
    /// (a call per edge would cost as much as its `width` multiply-adds).
    fn propagate_rows<T: Real>(
        indptr: &[usize],
        indices: &[u32],
        w: &[T],
        x: &[T],
        width: usize,
        out: &mut [T],
    ) {
        for (i, o) in out.chunks_exact_mut(width).enumerate() {
            for v in o.iter_mut() {
                *v = T::ZERO;
            }
            let (e0, e1) = (indptr[i], indptr[i + 1]);
            for (&j, &a) in indices[e0..e1].iter().zip(&w[e0..e1]) {
                let j = j as usize;
                for (v, &b) in o.iter_mut().zip(&x[j * width..(j + 1) * width]) {
                    *v += a * b;
                }
            }
        }
    }
}

/// Buffers of [`diffuse`].
#[derive(Debug, Default)]
pub struct DiffuseScratch<T> {
    h: Vec<T>,
    next: Vec<T>,
}

/// The diffusion of `params` applied to `x` (`n x width`, row-major) into `out` (same
/// shape): `M x` with `M` the truncated diffusion matrix of `A` (graph and edge weights
/// `w`), by the iterations of eqs. 8 and 10 (see the module docs).
pub fn diffuse<T: Real>(
    graph: &CellGraph,
    w: &[T],
    params: &Params,
    x: &[T],
    width: usize,
    s: &mut DiffuseScratch<T>,
    out: &mut [T],
) {
    let len = x.len();
    s.next.resize(len, T::ZERO);
    match params.diffusion {
        Diffusion::Ppr { alpha } => {
            let keep = T::from_f64(1.0 - alpha);
            let teleport = T::from_f64(alpha);
            out.copy_from_slice(x);
            for _ in 0..params.iterations {
                propagate(graph, w, out, width, &mut s.next);
                for ((o, &a), &v) in out.iter_mut().zip(&s.next).zip(x) {
                    *o = keep * a + teleport * v;
                }
            }
        }
        Diffusion::Heat { t } => {
            let e = T::from_f64((-t).exp());
            s.h.clear();
            s.h.extend(x.iter().map(|&v| e * v));
            out.copy_from_slice(&s.h);
            let mut c = 1.0f64;
            for k in 1..=params.iterations {
                propagate(graph, w, &s.h, width, &mut s.next);
                std::mem::swap(&mut s.h, &mut s.next);
                c *= t / k as f64;
                axpy(out, T::from_f64(c), &s.h);
            }
        }
    }
}

/// Columns `cols` of the diffusion matrix `M` of one head (graph and edge weights `w`) into
/// `out` (`n x cols.len()`, row-major): the diffusion of the indicator columns `e_c`.
pub fn effective_columns<T: Real>(
    graph: &CellGraph,
    w: &[T],
    params: &Params,
    cols: &[usize],
    x: &mut Vec<T>,
    s: &mut DiffuseScratch<T>,
    out: &mut [T],
) {
    let (n, b) = (graph.n(), cols.len());
    x.clear();
    x.resize(n * b, T::ZERO);
    for (c, &j) in cols.iter().enumerate() {
        x[j * b + c] = T::ONE;
    }
    diffuse(graph, w, params, x, b, s, out);
}

/// Per-head buffers of [`attend`].
#[derive(Debug, Default)]
pub struct HeadScratch<T> {
    w: Vec<T>,
    v: Vec<T>,
    out: Vec<T>,
    diffuse: DiffuseScratch<T>,
    x: Vec<T>,
    cols: Vec<T>,
}

/// Reusable buffers of [`attend`], one set per head.
#[derive(Debug, Default)]
pub struct AttendScratch<T> {
    heads: Vec<HeadScratch<T>>,
}

/// One head: edge weights, its diffused values into `hs.out` (`n x dh`) when values are
/// given, and its diffusion matrix into `m` (`n x n`) when asked.
fn one_head<T: Real>(
    heads: &CellHeads<'_, T>,
    graph: &CellGraph,
    params: &Params,
    h: usize,
    hs: &mut HeadScratch<T>,
    m: Option<&mut [T]>,
) {
    let (n, dh) = (heads.n, heads.dh);
    edge_weights(heads, graph, h, &mut hs.w);
    if let Some(v) = heads.v {
        hs.v.clear();
        for i in 0..n {
            hs.v.extend_from_slice(v.row(i, h, dh));
        }
        hs.out.resize(n * dh, T::ZERO);
        diffuse(
            graph,
            &hs.w,
            params,
            &hs.v,
            dh,
            &mut hs.diffuse,
            &mut hs.out,
        );
    }
    if let Some(m) = m {
        // n x n in blocks of columns
        let mut c0 = 0;
        while c0 < n {
            let c1 = (c0 + COLUMN_BLOCK).min(n);
            let cols: Vec<usize> = (c0..c1).collect();
            hs.cols.resize(n * cols.len(), T::ZERO);
            effective_columns(
                graph,
                &hs.w,
                params,
                &cols,
                &mut hs.x,
                &mut hs.diffuse,
                &mut hs.cols,
            );
            for (dst, src) in m.chunks_exact_mut(n).zip(hs.cols.chunks_exact(cols.len())) {
                dst[c0..c1].copy_from_slice(src);
            }
            c0 = c1;
        }
    }
}

/// The diffusion matrices a caller wants from [`attend`].
#[derive(Debug)]
pub enum Weights<'a, T> {
    /// None.
    None,
    /// One `n x n` matrix per head, one after another.
    PerHead(&'a mut [T]),
    /// Their mean over heads, `n x n`.
    Mean(&'a mut [T]),
}

/// GenoHoption attention of all heads of one cell: head `h`'s diffused values into columns
/// `h * dh .. (h + 1) * dh` of `ctx` (`n` rows `ctx_rs` apart; other columns untouched;
/// requires `heads.v`), and the diffusion matrices as `weights` asks. With `parallel` the
/// heads run side by side on the current rayon pool; the result is the same either way.
pub fn attend<T: Real>(
    heads: &CellHeads<'_, T>,
    graph: &CellGraph,
    params: &Params,
    parallel: bool,
    s: &mut AttendScratch<T>,
    ctx: Option<(&mut [T], usize)>,
    weights: Weights<'_, T>,
) {
    let (n, h_count, dh) = (heads.n, heads.n_heads, heads.dh);
    if n == 0 {
        return;
    }
    s.heads.resize_with(h_count, HeadScratch::default);
    let mut mats: Vec<Option<&mut [T]>> = Vec::with_capacity(h_count);
    let mut mean_buf: Vec<T> = Vec::new();
    let mut mean_dst = None;
    match weights {
        Weights::None => mats.extend((0..h_count).map(|_| None)),
        Weights::PerHead(all) => mats.extend(all.chunks_mut(n * n).map(Some)),
        Weights::Mean(dst) => {
            mean_buf.resize(h_count * n * n, T::ZERO);
            mats.extend(mean_buf.chunks_mut(n * n).map(Some));
            mean_dst = Some(dst);
        }
    }
    let run = |(h, (hs, m)): (usize, (&mut HeadScratch<T>, Option<&mut [T]>))| {
        one_head(heads, graph, params, h, hs, m)
    };
    let items: Vec<_> = s.heads.iter_mut().zip(mats).enumerate().collect();
    if parallel {
        items.into_par_iter().for_each(run);
    } else {
        items.into_iter().for_each(run);
    }
    if let Some(dst) = mean_dst {
        // sum over heads in head order, then scale
        let inv = T::ONE / T::from_f64(h_count as f64);
        dst.copy_from_slice(&mean_buf[..n * n]);
        for m in mean_buf.chunks_exact(n * n).skip(1) {
            for (a, &b) in dst.iter_mut().zip(m) {
                *a += b;
            }
        }
        for a in dst.iter_mut() {
            *a *= inv;
        }
    }
    if let (Some((ctx, rs)), Some(_)) = (ctx, heads.v) {
        for (h, hs) in s.heads.iter().enumerate() {
            for (i, src) in hs.out.chunks_exact(dh).enumerate() {
                ctx[i * rs + h * dh..i * rs + (h + 1) * dh].copy_from_slice(src);
            }
        }
    }
}

/// Buffers a BERT cell keeps for GenoHoption: its graph and the attention's scratch.
#[derive(Debug, Default)]
pub struct LayerScratch {
    pub graph: CellGraph,
    graph_scratch: GraphScratch,
    attend: AttendScratch<f32>,
}

impl LayerScratch {
    /// Seq2Graph of the cell's tokens (once per cell; every layer uses the same graph).
    pub fn build<I: TokenId>(&mut self, tokens: &[I], gh: &GenoHoption<'_>) {
        self.graph.build(tokens, &gh.prior, &mut self.graph_scratch);
    }

    /// One BERT layer's GenoHoption attention: `qkv` holds the cell's queries, keys and
    /// values side by side (`n x 3d`), the heads' outputs go to `ctx` (`n x d`) and, when
    /// `att` is given, the diffusion matrices (`n_heads x n x n` if `per_head`, else their
    /// mean `n x n`).
    #[allow(clippy::too_many_arguments)]
    pub fn layer(
        &mut self,
        qkv: &[f32],
        (n, d, n_heads): (usize, usize, usize),
        params: &Params,
        att: Option<&mut [f32]>,
        per_head: bool,
        parallel: bool,
        ctx: &mut [f32],
    ) {
        let dh = d / n_heads;
        let heads = CellHeads {
            q: Strided {
                data: qkv,
                rs: 3 * d,
                c0: 0,
            },
            k: Strided {
                data: qkv,
                rs: 3 * d,
                c0: d,
            },
            v: Some(Strided {
                data: qkv,
                rs: 3 * d,
                c0: 2 * d,
            }),
            n,
            n_heads,
            dh,
            scale: 1.0 / (dh as f32).sqrt(),
        };
        let weights = match att {
            None => Weights::None,
            Some(a) if per_head => Weights::PerHead(a),
            Some(a) => Weights::Mean(a),
        };
        attend(
            &heads,
            &self.graph,
            params,
            parallel,
            &mut self.attend,
            Some((ctx, d)),
            weights,
        );
    }
}

/// The output of [`genohoption_attention`].
#[derive(Debug, Clone, PartialEq)]
pub struct Output<T> {
    /// `n x d`: the heads side by side (columns past `n_heads * dh` zero).
    pub output: Vec<T>,
    /// `n_heads x n x n` diffusion matrices, when asked.
    pub weights: Option<Vec<T>>,
}

/// GenoHoption attention of one cell given its projections: `q`, `k`, `v` are `n x d`
/// (row-major), head `h` uses columns `h * dh .. (h + 1) * dh` with `dh = d / n_heads`, and
/// `graph` is the cell's graph among its `n` positions. Heads run on `n_threads` threads.
#[allow(clippy::too_many_arguments)]
pub fn genohoption_attention<T: Real>(
    q: &[T],
    k: &[T],
    v: &[T],
    (n, d): (usize, usize),
    n_heads: usize,
    graph: &CellGraph,
    params: &Params,
    want_weights: bool,
    n_threads: usize,
) -> KernelResult<Output<T>> {
    params.validate()?;
    if n_heads == 0 || n_heads > d {
        return Err(kerr!(
            "n_heads must be between 1 and d = {d}, got {n_heads}"
        ));
    }
    for (name, x) in [("queries", q), ("keys", k), ("values", v)] {
        if x.len() != n * d {
            return Err(kerr!("{name} must be {n} x {d}, got {} elements", x.len()));
        }
        if let Some(p) = x.iter().position(|a| !a.is_finite()) {
            return Err(kerr!(
                "{name} has a non-finite value at row {}, column {}",
                p / d,
                p % d
            ));
        }
    }
    if graph.n() != n {
        return Err(kerr!(
            "the graph has {} positions but the inputs have {n} rows",
            graph.n()
        ));
    }
    let dh = d / n_heads;
    let heads = CellHeads {
        q: Strided {
            data: q,
            rs: d,
            c0: 0,
        },
        k: Strided {
            data: k,
            rs: d,
            c0: 0,
        },
        v: Some(Strided {
            data: v,
            rs: d,
            c0: 0,
        }),
        n,
        n_heads,
        dh,
        scale: T::ONE / T::from_f64((dh as f64).sqrt()),
    };
    let mut output = vec![T::ZERO; n * d];
    let mut weights = want_weights.then(|| vec![T::ZERO; n_heads * n * n]);
    crate::pool::install(n_threads, || {
        let w = match weights.as_deref_mut() {
            Some(w) => Weights::PerHead(w),
            None => Weights::None,
        };
        let mut s = AttendScratch::default();
        attend(
            &heads,
            graph,
            params,
            true,
            &mut s,
            Some((&mut output, d)),
            w,
        );
    })?;
    Ok(Output { output, weights })
}

#[cfg(test)]
mod tests;
