//! A BERT encoder (the `bert` part of Hugging Face `BertForMaskedLM`) over ragged cells, f32.
//!
//! Cell `c` is the token sequence `cells.cell(c)`; it is encoded alone, so no padding is
//! computed, and its result equals the padded Hugging Face computation with the padding
//! mask (masked keys get weight exactly 0 there, which is the same as leaving them out).
//!
//! Per cell: `x = LayerNorm(word[t_i] + position[i] + token_type[0])`, then per layer
//!
//! ```text
//! q, k, v = x W_q^T + b_q, x W_k^T + b_k, x W_v^T + b_v      (one GEMM with W_qkv)
//! head h:   A_h = softmax(q_h k_h^T / sqrt(dh)),  ctx_h = A_h v_h
//! x = LayerNorm(x + ctx W_o^T + b_o)
//! x = LayerNorm(x + act(x W_i^T + b_i) W_2^T + b_2)
//! ```
//!
//! Weights are in Hugging Face's `nn.Linear` layout (`out x in`); the query, key and value
//! weights are stacked into one `3d x d` matrix. An [`Encoder`] packs them once per call
//! for the GEMM of [`crate::sgemm`], shared by every thread. Hidden states are numbered as
//! Hugging Face's `hidden_states`: 0 is the embedding output and `l` the output of layer
//! `l` (1-based). Layers past the last one a request needs are not run.
//!
//! The attention of a layer is one call, [`self_attention`], on one cell's queries, keys
//! and values: the fused attention of [`crate::flash`] (no `n x n` matrix), or, for a
//! layer whose weights are returned, the exact softmax matrix block by block of query rows.
//!
//! Cells shorter than [`GROUP_TOKENS`] are stacked into groups of consecutive cells whose
//! dense layers (projections, attention output, feed-forward) run as one GEMM; the
//! attention stays per cell. Work is split into fixed blocks of rows (dense layers) and of
//! query rows (attention), each computed by one thread in a fixed order, and every row's
//! arithmetic is the same whatever rows it is stacked with, so neither the thread count
//! nor the grouping changes a result: a batch gives bit-identical results to cells one at
//! a time. Groups run side by side, one thread each, except the last few of at least
//! [`LONG_CELL`] tokens when there are fewer of them than threads: those run one after
//! another with their blocks in parallel.
//!
//! [`CellScratch::queries_keys`] and [`CellScratch::scores`] run one cell only as far as one
//! layer's attention scores, for the aggregation kernels of [`crate::aggregate`].

mod activation;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rayon::prelude::*;

pub use activation::Activation;

use crate::error::KernelResult;
use crate::flash::{self, KeysValues};
use crate::genohoption::{AttentionMode, CellGraph, CellHeads, LayerScratch, Strided};
use crate::kerr;
use crate::matrix::{gemm, Mat, Ragged, TokenId, View, ViewMut};
use crate::sgemm::{self, Init, PackedB};
use crate::simd::{add_into, add_scale, softmax_row};

/// Rows per block of the dense layers (attention output and feed-forward, whose
/// intermediate block stays in cache), and per parallel block of the projections.
pub const DENSE_ROWS: usize = 256;

/// Query rows per parallel block of the fused attention (all heads).
pub const FLASH_ROWS: usize = 2 * flash::BQ;

/// Cells shorter than this are stacked, consecutive ones together, into groups of at most
/// this many tokens whose dense layers run as one GEMM.
pub const GROUP_TOKENS: usize = 1024;

/// Query rows per block of the attention: one head's block of weights (`128 x n`, 1 MiB
/// for 2,048 tokens) stays in cache while it is normalised and multiplied by the values.
/// Every block repacks the keys and values, so 64 rows was 10% slower on 2,048 tokens.
pub const ATTN_ROWS: usize = 128;

/// Groups with at least this many tokens may be computed with their blocks in parallel
/// (when there are fewer of them left than threads); smaller ones always run one thread
/// per group.
pub const LONG_CELL: usize = 256;

/// A dense layer in `nn.Linear` layout: `y = x w^T + b`, `w` is `out x in`.
#[derive(Debug, Clone, Copy)]
pub struct Linear<'a> {
    pub w: Mat<'a, f32>,
    pub b: &'a [f32],
}

impl Linear<'_> {
    fn check(&self, name: &str, out: usize, inp: usize) -> KernelResult<()> {
        if (self.w.rows, self.w.cols) != (out, inp) {
            return Err(kerr!(
                "{name} weight must be {out} x {inp}, got {} x {}",
                self.w.rows,
                self.w.cols
            ));
        }
        check_vec(&format!("{name} bias"), self.b, out)?;
        self.w.check_finite(&format!("{name} weight"))
    }
}

/// LayerNorm weight (`gamma`) and bias (`beta`).
#[derive(Debug, Clone, Copy)]
pub struct Norm<'a> {
    pub gamma: &'a [f32],
    pub beta: &'a [f32],
}

impl Norm<'_> {
    fn check(&self, name: &str, d: usize) -> KernelResult<()> {
        check_vec(&format!("{name} weight"), self.gamma, d)?;
        check_vec(&format!("{name} bias"), self.beta, d)
    }

    /// Normalises every row of `x` (`d` columns) in place: `(x - mean) / sqrt(var + eps)`
    /// with the biased variance, then `* gamma + beta`. Sums in f64, over eight fixed lanes.
    fn apply(&self, x: &mut [f32], eps: f32) {
        let d = self.gamma.len();
        for row in x.chunks_exact_mut(d) {
            layer_norm_row(row, self.gamma, self.beta, eps as f64);
        }
    }
}

/// `sum f(v)` over a row in f64, over eight fixed lanes.
#[inline(always)]
fn lane_sum64(row: &[f32], f: impl Fn(f32) -> f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = row.chunks_exact(8);
    for (l, &v) in chunks.remainder().iter().enumerate() {
        acc[l] += f(v);
    }
    for c in chunks {
        for l in 0..8 {
            acc[l] += f(c[l]);
        }
    }
    ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
}

/// [`Norm::apply`] of one row, with AVX2+FMA when the CPU has them.
fn layer_norm_row(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f64) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        unsafe fn wide(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f64) {
            layer_norm_body(row, gamma, beta, eps)
        }
        if crate::simd::has_avx2_fma() {
            // SAFETY: the CPU supports the features `wide` was compiled for.
            unsafe { wide(row, gamma, beta, eps) };
            return;
        }
    }
    layer_norm_body(row, gamma, beta, eps)
}

#[inline(always)]
fn layer_norm_body(row: &mut [f32], gamma: &[f32], beta: &[f32], eps: f64) {
    let d = row.len() as f64;
    let mean = lane_sum64(row, |v| v as f64) / d;
    let var = lane_sum64(row, |v| {
        let c = v as f64 - mean;
        c * c
    }) / d;
    let inv = (1.0 / (var + eps).sqrt()) as f32;
    let mean = mean as f32;
    for ((v, &g), &b) in row.iter_mut().zip(gamma).zip(beta) {
        *v = (*v - mean) * inv * g + b;
    }
}

fn check_vec(name: &str, v: &[f32], len: usize) -> KernelResult<()> {
    if v.len() != len {
        return Err(kerr!("{name} must have {len} entries, got {}", v.len()));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(kerr!("{name} has a non-finite value at entry {i}"));
    }
    Ok(())
}

/// One encoder layer.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    /// Query, key and value stacked: `3d x d` weight, `3d` bias.
    pub qkv: Linear<'a>,
    /// `attention.output.dense`, `d x d`.
    pub attn_out: Linear<'a>,
    /// `attention.output.LayerNorm`.
    pub attn_norm: Norm<'a>,
    /// `intermediate.dense`, `i x d`.
    pub ffn_in: Linear<'a>,
    /// `output.dense`, `d x i`.
    pub ffn_out: Linear<'a>,
    /// `output.LayerNorm`.
    pub out_norm: Norm<'a>,
}

/// The embedding layer.
#[derive(Debug, Clone, Copy)]
pub struct Embeddings<'a> {
    /// `vocab x d`.
    pub word: Mat<'a, f32>,
    /// `max_position x d`.
    pub position: Mat<'a, f32>,
    /// Row 0 of the token type embeddings (every token has type 0), `d`.
    pub token_type: &'a [f32],
    pub norm: Norm<'a>,
}

/// A whole encoder.
#[derive(Debug, Clone)]
pub struct Bert<'a> {
    pub embeddings: Embeddings<'a>,
    pub layers: Vec<Layer<'a>>,
    pub n_heads: usize,
    pub activation: Activation,
    pub eps: f32,
    /// Dense attention, or GenoHoption's graph-sparse attention in every layer.
    pub attention: AttentionMode<'a>,
}

impl Bert<'_> {
    /// Hidden size.
    pub fn d(&self) -> usize {
        self.embeddings.word.cols
    }

    /// Checks every shape and value; returns the intermediate size.
    pub fn validate(&self) -> KernelResult<usize> {
        let e = &self.embeddings;
        let d = self.d();
        if d == 0 {
            return Err(kerr!("word embeddings must have at least one column"));
        }
        if self.n_heads == 0 || !d.is_multiple_of(self.n_heads) {
            return Err(kerr!(
                "the hidden size {d} must be a multiple of the number of heads {}",
                self.n_heads
            ));
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err(kerr!(
                "layer_norm_eps must be finite and >= 0, got {}",
                self.eps
            ));
        }
        if e.position.cols != d {
            return Err(kerr!(
                "position embeddings must have {d} columns like the word embeddings, got {}",
                e.position.cols
            ));
        }
        e.word.check_finite("word embeddings")?;
        e.position.check_finite("position embeddings")?;
        check_vec("token type embedding", e.token_type, d)?;
        e.norm.check("embeddings LayerNorm", d)?;
        if let AttentionMode::GenoHoption(g) = &self.attention {
            g.validate(e.word.rows, "row of the word embeddings")?;
        }
        let inter = self.layers.first().map_or(0, |l| l.ffn_in.w.rows);
        for (i, l) in self.layers.iter().enumerate() {
            let name = |what: &str| format!("layer {i} {what}");
            l.qkv.check(&name("query/key/value"), 3 * d, d)?;
            l.attn_out.check(&name("attention output"), d, d)?;
            l.attn_norm.check(&name("attention LayerNorm"), d)?;
            l.ffn_in.check(&name("intermediate"), inter, d)?;
            l.ffn_out.check(&name("output"), d, inter)?;
            l.out_norm.check(&name("output LayerNorm"), d)?;
        }
        Ok(inter)
    }

    /// Checks cells against the vocabulary (rows of the word embeddings) and the number of
    /// positions.
    pub fn check_cells<I: TokenId>(&self, cells: &Ragged<'_, I>) -> KernelResult<()> {
        let e = &self.embeddings;
        cells.validate(e.word.rows)?;
        let positions = e.position.rows;
        if let Some((c, n)) = (0..cells.n_cells())
            .map(|c| (c, cells.cell(c).len()))
            .find(|&(_, n)| n > positions)
        {
            return Err(kerr!(
                "cell {c} has {n} tokens but the model has only {positions} positions"
            ));
        }
        Ok(())
    }
}

/// How a cell embedding is pooled from one hidden state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMode {
    /// Mean over the tokens `skip_first .. n - skip_last` (zeros when there are none).
    Mean { skip_first: usize, skip_last: usize },
    /// The first token's vector (`<cls>`); zeros for a cell without tokens.
    First,
}

/// A pooled cell embedding of hidden state `layer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pub layer: usize,
    pub mode: PoolMode,
}

/// What a forward pass returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Hidden states returned for every token (0 = embedding output, `l` = layer `l`).
    pub hidden: Vec<usize>,
    /// A pooled cell embedding.
    pub pool: Option<Pool>,
    /// Layers (0-based) whose attention weights are returned.
    pub attention: Vec<usize>,
    /// Attention per head (`n_heads x n x n` per cell) instead of head-averaged (`n x n`).
    pub per_head: bool,
}

impl Wanted {
    /// Checks the request against a model of `n_layers` layers; returns how many layers
    /// must run.
    pub fn layers_to_run(&self, n_layers: usize) -> KernelResult<usize> {
        let mut run = 0;
        for (what, list) in [("hidden", &self.hidden), ("attention", &self.attention)] {
            let mut seen = list.clone();
            seen.sort_unstable();
            if seen.windows(2).any(|w| w[0] == w[1]) {
                return Err(kerr!("{what} layers must be distinct, got {list:?}"));
            }
        }
        for &k in &self.hidden {
            if k > n_layers {
                return Err(kerr!(
                    "hidden state {k} does not exist: the model has {n_layers} layers \
                     (hidden states 0 ..= {n_layers})"
                ));
            }
            run = run.max(k);
        }
        if let Some(p) = self.pool {
            if p.layer > n_layers {
                return Err(kerr!(
                    "cannot pool hidden state {}: the model has {n_layers} layers",
                    p.layer
                ));
            }
            run = run.max(p.layer);
        }
        for &l in &self.attention {
            if l >= n_layers {
                return Err(kerr!(
                    "attention layer {l} does not exist: the model has layers 0 .. {}",
                    n_layers.saturating_sub(1)
                ));
            }
            run = run.max(l + 1);
        }
        Ok(run)
    }

    /// Attention matrices per cell and layer.
    fn heads_out(&self, n_heads: usize) -> usize {
        if self.per_head {
            n_heads
        } else {
            1
        }
    }
}

/// One cell's output buffers, as requested by a [`Wanted`] for a cell of `n` tokens.
#[derive(Debug)]
pub struct CellOut<'o> {
    /// Per `Wanted::hidden` entry: `n x d`.
    pub hidden: Vec<&'o mut [f32]>,
    /// `d`, when `Wanted::pool` is set.
    pub pooled: Option<&'o mut [f32]>,
    /// Per `Wanted::attention` entry: `heads x n x n` (`heads` 1 unless per head).
    pub attention: Vec<&'o mut [f32]>,
}

impl CellOut<'_> {
    /// Buffers for nothing.
    pub fn none() -> Self {
        Self {
            hidden: Vec::new(),
            pooled: None,
            attention: Vec::new(),
        }
    }
}

/// A model's dense weights packed for [`crate::sgemm`].
#[derive(Debug)]
struct PackedLayer {
    qkv: PackedB,
    attn_out: PackedB,
    ffn_in: PackedB,
    ffn_out: PackedB,
}

/// A model with the dense weights of its first layers packed for the GEMM, once per call
/// and shared by every thread.
#[derive(Debug)]
pub struct Encoder<'m, 'a> {
    pub model: &'m Bert<'a>,
    layers: Vec<PackedLayer>,
}

impl<'m, 'a> Encoder<'m, 'a> {
    /// Packs layers `0 .. n_layers` (in parallel on the current rayon pool).
    pub fn new(model: &'m Bert<'a>, n_layers: usize) -> Self {
        let layers = model.layers[..n_layers]
            .par_iter()
            .map(|l| PackedLayer {
                qkv: PackedB::linear(&l.qkv.w),
                attn_out: PackedB::linear(&l.attn_out.w),
                ffn_in: PackedB::linear(&l.ffn_in.w),
                ffn_out: PackedB::linear(&l.ffn_out.w),
            })
            .collect();
        Self { model, layers }
    }
}

/// Reusable per-thread buffers.
#[derive(Debug, Default)]
pub struct CellScratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    inter: Vec<f32>,
    attn: AttentionScratch,
    genohoption: LayerScratch,
}

/// Buffers of [`self_attention`].
#[derive(Debug, Default)]
pub struct AttentionScratch {
    kv: KeysValues,
    tiles: flash::Scratch,
}

impl CellScratch {
    /// Runs the embeddings and layers `0 .. layer` of one cell (tokens checked as for
    /// [`forward_cell`], `layer` a layer packed in `enc`), then only the query and key
    /// projections of layer `layer`: its attention scores are then read block by block
    /// with [`CellScratch::scores`]. Nothing of layer `layer` past its scores is computed.
    pub fn queries_keys<I: TokenId>(&mut self, enc: &Encoder<'_, '_>, tokens: &[I], layer: usize) {
        forward_cell(
            enc,
            tokens,
            &Wanted::default(),
            layer,
            false,
            self,
            CellOut::none(),
        );
        let d = enc.model.d();
        let n = tokens.len();
        // the first 2d columns of the stacked projection are the queries and keys
        self.qkv.resize(n * 2 * d, 0.0);
        let lin = &enc.model.layers[layer].qkv;
        let packed = &enc.layers[layer].qkv;
        let bias = Init::Bias(&lin.b[..2 * d]);
        sgemm::gemm_cols(n, &self.x, d, packed, 2 * d, &mut self.qkv, 2 * d, bias);
    }

    /// Raw scores `q_h k_h^T` (before scaling and softmax) of head `h` for query rows
    /// `r0..r1` of the cell of the last [`CellScratch::queries_keys`] into `out`
    /// (`(r1 - r0) x n`).
    pub fn scores(&self, model: &Bert<'_>, h: usize, r0: usize, r1: usize, out: &mut [f32]) {
        let d = model.d();
        let head = HeadBlock {
            qkv: &self.qkv,
            width: 2 * d,
            n: self.qkv.len() / (2 * d),
            d,
            dh: d / model.n_heads,
            scale: score_scale(model),
        };
        head.scores(h, r0, r1, out);
    }
}

impl CellScratch {
    /// The queries and keys of the last [`CellScratch::queries_keys`] call of a model in
    /// GenoHoption mode, and the cell's graph.
    pub fn genohoption_heads(&self, model: &Bert<'_>) -> (CellHeads<'_, f32>, &CellGraph) {
        let d = model.d();
        let dh = d / model.n_heads;
        let at = |c0| Strided {
            data: &self.qkv[..],
            rs: 2 * d,
            c0,
        };
        let heads = CellHeads {
            q: at(0),
            k: at(d),
            v: None,
            n: self.qkv.len() / (2 * d),
            n_heads: model.n_heads,
            dh,
            scale: score_scale(model),
        };
        (heads, &self.genohoption.graph)
    }
}

/// The attention's score scale `1 / sqrt(dh)`.
pub fn score_scale(model: &Bert<'_>) -> f32 {
    1.0 / ((model.d() / model.n_heads) as f32).sqrt()
}

/// Runs `f` on every item, in parallel on the current rayon pool or in order; `init`
/// makes the per-task scratch.
fn for_blocks<A: Send, S>(
    parallel: bool,
    items: Vec<A>,
    init: impl Fn() -> S + Sync + Send,
    f: impl Fn(&mut S, A) + Sync + Send,
) {
    if parallel {
        items.into_par_iter().for_each_init(init, f);
    } else {
        let mut s = init();
        for a in items {
            f(&mut s, a);
        }
    }
}

/// Encodes one cell (tokens already checked against the vocabulary and the position
/// table, `wanted` against the model) into `out`, running `n_run` layers (packed in
/// `enc`). With `parallel` its blocks are spread over the current rayon pool; the result
/// is the same either way.
///
/// This is the building block for callers that consume each cell's output at once (for
/// example adding its attention into gene x gene sums) instead of keeping all cells.
pub fn forward_cell<I: TokenId>(
    enc: &Encoder<'_, '_>,
    tokens: &[I],
    wanted: &Wanted,
    n_run: usize,
    parallel: bool,
    s: &mut CellScratch,
    out: CellOut<'_>,
) {
    forward_group(enc, &[tokens], wanted, n_run, parallel, s, vec![out]);
}

/// Encodes a group of cells together: their rows are stacked for the dense layers (one
/// GEMM each), the attention runs cell by cell. Every cell's result is bit-identical to
/// [`forward_cell`] on it alone.
fn forward_group<I: TokenId>(
    enc: &Encoder<'_, '_>,
    cells: &[&[I]],
    wanted: &Wanted,
    n_run: usize,
    parallel: bool,
    s: &mut CellScratch,
    mut outs: Vec<CellOut<'_>>,
) {
    let model = enc.model;
    let d = model.d();
    let mut starts = vec![0usize];
    for c in cells {
        starts.push(starts.last().unwrap() + c.len());
    }
    let rows = starts[cells.len()];
    embed(model, cells, &mut s.x);
    let emit_all = |k: usize, x: &[f32], outs: &mut [CellOut<'_>]| {
        for (c, out) in outs.iter_mut().enumerate() {
            emit(k, &x[starts[c] * d..starts[c + 1] * d], d, wanted, out);
        }
    };
    emit_all(0, &s.x, &mut outs);
    if rows == 0 {
        return;
    }
    let graph_mode = match &model.attention {
        AttentionMode::GenoHoption(g) => Some(g),
        AttentionMode::Dense => None,
    };
    // one cell: its graph now, which CellScratch::genohoption_heads reads after the layers
    if let (Some(g), [only]) = (graph_mode, cells) {
        s.genohoption.build(only, g);
    }
    for (l, layer) in model.layers[..n_run].iter().enumerate() {
        let packed = &enc.layers[l];
        s.qkv.resize(rows * 3 * d, 0.0);
        project(&packed.qkv, layer.qkv.b, &s.x, &mut s.qkv, parallel);
        s.ctx.resize(rows * d, 0.0);
        for (c, out) in outs.iter_mut().enumerate() {
            let (a, b) = (starts[c], starts[c + 1]);
            let weights = wanted
                .attention
                .iter()
                .position(|&a| a == l)
                .map(|j| AttentionWeights {
                    out: std::mem::take(&mut out.attention[j]),
                    per_head: wanted.per_head,
                });
            let qkv = Qkv {
                data: &s.qkv[a * 3 * d..b * 3 * d],
                n: b - a,
                d,
            };
            let ctx = &mut s.ctx[a * d..b * d];
            if let Some(g) = graph_mode {
                // GenoHoption: attention over the prior's edges among the cell's genes
                if cells.len() > 1 {
                    s.genohoption.build(cells[c], g);
                }
                let per_head = weights.as_ref().is_some_and(|w| w.per_head);
                let dims = (b - a, d, model.n_heads);
                let att = weights.map(|w| w.out);
                s.genohoption
                    .layer(qkv.data, dims, &g.params, att, per_head, parallel, ctx);
                continue;
            }
            self_attention(model, qkv, ctx, weights, parallel, &mut s.attn);
        }
        dense_and_ffn(
            model,
            layer,
            packed,
            &mut s.x,
            &s.ctx,
            &mut s.inter,
            parallel,
        );
        emit_all(l + 1, &s.x, &mut outs);
    }
}

/// `x = LayerNorm(word[t_i] + position[i] + token_type)`, the cells' rows one after another.
fn embed<I: TokenId>(model: &Bert<'_>, cells: &[&[I]], x: &mut Vec<f32>) {
    let e = &model.embeddings;
    let d = model.d();
    x.clear();
    x.resize(cells.iter().map(|c| c.len()).sum::<usize>() * d, 0.0);
    let mut rows = x.chunks_exact_mut(d);
    for tokens in cells {
        // tokens first: zip stops on them without taking a row of the next cell
        for (i, (t, row)) in tokens.iter().zip(rows.by_ref()).enumerate() {
            let w = e.word.row(t.get() as usize);
            let p = e.position.row(i);
            for (((v, &a), &b), &c) in row.iter_mut().zip(w).zip(p).zip(e.token_type) {
                *v = a + b + c;
            }
        }
    }
    e.norm.apply(x, model.eps);
}

/// Copies hidden state `k` of one cell (`x`, its rows) where it is wanted and pools it.
fn emit(k: usize, x: &[f32], d: usize, wanted: &Wanted, out: &mut CellOut<'_>) {
    let n = x.len() / d;
    for (j, &h) in wanted.hidden.iter().enumerate() {
        if h == k {
            out.hidden[j].copy_from_slice(x);
        }
    }
    let (Some(p), Some(dst)) = (wanted.pool, out.pooled.as_deref_mut()) else {
        return;
    };
    if p.layer != k {
        return;
    }
    if n == 0 {
        dst.fill(0.0);
        return;
    }
    match p.mode {
        PoolMode::First => dst.copy_from_slice(&x[..d]),
        PoolMode::Mean {
            skip_first,
            skip_last,
        } => {
            let hi = n.saturating_sub(skip_last);
            if skip_first >= hi {
                dst.fill(0.0);
                return;
            }
            let mut acc = vec![0.0f64; d];
            for row in x[skip_first * d..hi * d].chunks_exact(d) {
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += v as f64;
                }
            }
            let inv = 1.0 / (hi - skip_first) as f64;
            for (o, a) in dst.iter_mut().zip(&acc) {
                *o = (a * inv) as f32;
            }
        }
    }
}

/// `out = x w^T + b` for a packed `w`, block by block of [`DENSE_ROWS`] rows in parallel,
/// or in one call.
fn project(w: &PackedB, b: &[f32], x: &[f32], out: &mut [f32], parallel: bool) {
    let (o, i) = (w.n(), w.k());
    let rows = x.len() / i;
    if !parallel {
        sgemm::gemm(rows, x, i, w, out, o, Init::Bias(b));
        return;
    }
    let blocks: Vec<_> = x
        .chunks(DENSE_ROWS * i)
        .zip(out.chunks_mut(DENSE_ROWS * o))
        .collect();
    for_blocks(
        parallel,
        blocks,
        || (),
        |_, (xb, ob)| sgemm::gemm(xb.len() / i, xb, i, w, ob, o, Init::Bias(b)),
    );
}

/// One cell's queries, keys and values of one layer: row `i` is `data[i * 3d ..]`, its
/// query in columns `0 .. d`, key in `d .. 2d` and value in `2d .. 3d` (head `h` in
/// columns `h * dh .. (h + 1) * dh` of each).
#[derive(Debug, Clone, Copy)]
pub struct Qkv<'a> {
    pub data: &'a [f32],
    pub n: usize,
    pub d: usize,
}

/// Where the attention weights of a layer go, when they are returned.
#[derive(Debug)]
pub struct AttentionWeights<'o> {
    /// `heads x n x n` when `per_head`, else `n x n` (head-averaged).
    pub out: &'o mut [f32],
    pub per_head: bool,
}

/// The self-attention of one layer for one cell: from its queries, keys and values, the
/// context (`n x d`, heads side by side, before the output projection) into `ctx`. With
/// `weights` the softmax matrices are computed exactly and kept; without, the fused
/// attention of [`crate::flash`] runs (no `n x n` matrix). With `parallel` blocks of query
/// rows run on the current rayon pool; the result does not depend on it.
///
/// This is the encoder's only attention call site per layer.
pub fn self_attention(
    model: &Bert<'_>,
    qkv: Qkv<'_>,
    ctx: &mut [f32],
    weights: Option<AttentionWeights<'_>>,
    parallel: bool,
    s: &mut AttentionScratch,
) {
    let (n, d) = (qkv.n, qkv.d);
    if n == 0 {
        return;
    }
    if let Some(w) = weights {
        exact_attention(model, qkv, ctx, w, parallel);
        return;
    }
    let heads = model.n_heads;
    let dh = d / heads;
    let scale = score_scale(model);
    let ld = 3 * d;
    s.kv.pack(&qkv.data[d..], &qkv.data[2 * d..], ld, n, heads, dh);
    let kv = &s.kv;
    let run = |tiles: &mut flash::Scratch, r0: usize, ctx: &mut [f32]| {
        let rows = ctx.len() / d;
        for h in 0..heads {
            let q = &qkv.data[r0 * ld + h * dh..];
            flash::attend(q, ld, rows, kv, h, scale, &mut ctx[h * dh..], d, tiles);
        }
    };
    if parallel {
        let items: Vec<_> = ctx.chunks_mut(FLASH_ROWS * d).enumerate().collect();
        for_blocks(true, items, flash::Scratch::default, |t, (b, c)| {
            run(t, b * FLASH_ROWS, c)
        });
    } else {
        run(&mut s.tiles, 0, ctx);
    }
}

/// [`self_attention`] with the weights kept: per block of query rows and head, the score
/// block, its softmax rows (into `w.out` when per head) and their product with the values.
fn exact_attention(
    model: &Bert<'_>,
    qkv: Qkv<'_>,
    ctx: &mut [f32],
    w: AttentionWeights<'_>,
    parallel: bool,
) {
    let (n, d) = (qkv.n, qkv.d);
    let h_count = model.n_heads;
    let dh = d / h_count;
    let per_head = w.per_head;
    let nb = n.div_ceil(ATTN_ROWS);
    let mut dests: Vec<Vec<&mut [f32]>> = (0..nb).map(|_| Vec::new()).collect();
    for region in w.out.chunks_mut(n * n) {
        for (b, rows) in region.chunks_mut(ATTN_ROWS * n).enumerate() {
            dests[b].push(rows);
        }
    }
    let items: Vec<_> = ctx
        .chunks_mut(ATTN_ROWS * d)
        .zip(dests)
        .enumerate()
        .collect();
    let inv_heads = 1.0 / h_count as f32;
    let head = HeadBlock {
        qkv: qkv.data,
        width: 3 * d,
        n,
        d,
        dh,
        scale: score_scale(model),
    };
    for_blocks(
        parallel,
        items,
        Vec::new,
        |scores: &mut Vec<f32>, (b, (ctx, mut dest)): (usize, (&mut [f32], Vec<&mut [f32]>))| {
            let (r0, r1) = (b * ATTN_ROWS, ((b + 1) * ATTN_ROWS).min(n));
            if per_head {
                // the weights are computed in their destination
                for (h, w) in dest.iter_mut().enumerate() {
                    head.run(h, r0, r1, w, ctx);
                }
                return;
            }
            scores.resize((r1 - r0) * n, 0.0);
            let avg = dest.pop().expect("one head-averaged block");
            for h in 0..h_count {
                head.run(h, r0, r1, scores, ctx);
                // sum over heads, scaled by 1/H with the last one
                if h == 0 {
                    avg.copy_from_slice(scores);
                } else if h + 1 < h_count {
                    add_into(avg, scores);
                } else {
                    add_scale(avg, scores, inv_heads);
                }
            }
        },
    );
}

/// One head of one block of query rows.
struct HeadBlock<'a> {
    /// `n x width`: queries, keys (and values when `width` is `3d`) side by side.
    qkv: &'a [f32],
    width: usize,
    n: usize,
    d: usize,
    dh: usize,
    scale: f32,
}

impl HeadBlock<'_> {
    /// Raw scores `q_h k_h^T` of head `h` for query rows `r0..r1` into `w` (`(r1 - r0) x n`).
    fn scores(&self, h: usize, r0: usize, r1: usize, w: &mut [f32]) {
        let (n, d, dh) = (self.n, self.d, self.dh);
        let c = h * dh;
        let all = View::rowmajor(self.qkv, n, self.width);
        let q = all.rows(r0, r1).cols(c, c + dh);
        let k = all.cols(d + c, d + c + dh);
        gemm(1.0, q, k.t(), 0.0, ViewMut::rowmajor(w, r1 - r0, n));
    }

    /// Weights of head `h` for query rows `r0..r1` into `w` (`(r1 - r0) x n`), and their
    /// product with the values into the head's columns of `ctx` (`(r1 - r0) x d`).
    fn run(&self, h: usize, r0: usize, r1: usize, w: &mut [f32], ctx: &mut [f32]) {
        let (n, d, dh) = (self.n, self.d, self.dh);
        let rows = r1 - r0;
        let c = h * dh;
        self.scores(h, r0, r1, w);
        for row in w.chunks_exact_mut(n) {
            softmax_row(row, self.scale);
        }
        let all = View::rowmajor(self.qkv, n, self.width);
        let v = all.cols(2 * d + c, 2 * d + c + dh);
        let o = ViewMut::cols_of(ctx, rows, d, c, c + dh);
        gemm(1.0, View::rowmajor(w, rows, n), v, 0.0, o);
    }
}

/// `x = LayerNorm(x + ctx W_o^T + b_o)`, then
/// `x = LayerNorm(x + act(x W_i^T + b_i) W_2^T + b_2)`, block by block of [`DENSE_ROWS`]
/// rows (`inter` holds a block's intermediate activations when the blocks run in order).
fn dense_and_ffn(
    model: &Bert<'_>,
    layer: &Layer<'_>,
    packed: &PackedLayer,
    x: &mut [f32],
    ctx: &[f32],
    inter: &mut Vec<f32>,
    parallel: bool,
) {
    let d = model.d();
    let width = layer.ffn_in.w.rows;
    let block = |h: &mut Vec<f32>, (xb, cb): (&mut [f32], &[f32])| {
        let rows = xb.len() / d;
        for r in xb.chunks_exact_mut(d) {
            add_into(r, layer.attn_out.b);
        }
        sgemm::gemm(rows, cb, d, &packed.attn_out, xb, d, Init::Accumulate);
        layer.attn_norm.apply(xb, model.eps);
        h.resize(rows * width, 0.0);
        let bias = Init::Bias(layer.ffn_in.b);
        sgemm::gemm(rows, xb, d, &packed.ffn_in, h, width, bias);
        model.activation.apply(h);
        for r in xb.chunks_exact_mut(d) {
            add_into(r, layer.ffn_out.b);
        }
        sgemm::gemm(rows, h, width, &packed.ffn_out, xb, d, Init::Accumulate);
        layer.out_norm.apply(xb, model.eps);
    };
    let blocks = x.chunks_mut(DENSE_ROWS * d).zip(ctx.chunks(DENSE_ROWS * d));
    if parallel {
        for_blocks(true, blocks.collect(), Vec::new, block);
    } else {
        for b in blocks {
            block(inter, b);
        }
    }
}

/// The outputs of [`bert_forward`] for a batch of cells.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchOutput {
    /// Per `Wanted::hidden` entry: `total_tokens x d`, cell `c` on rows
    /// `offsets[c] .. offsets[c + 1]`.
    pub hidden: Vec<Vec<f32>>,
    /// `n_cells x d`.
    pub pooled: Option<Vec<f32>>,
    /// Per `Wanted::attention` entry: the cells' `heads x n x n` blocks one after another,
    /// cell `c` at `attention_offsets[c] .. attention_offsets[c + 1]`.
    pub attention: Vec<Vec<f32>>,
    /// `n_cells + 1` element offsets into each `attention` buffer.
    pub attention_offsets: Vec<usize>,
}

/// A zeroed buffer, or an error instead of an abort when memory runs out.
fn alloc(len: usize, what: &str) -> KernelResult<Vec<f32>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| {
        kerr!(
            "cannot allocate {:.1} GiB for {what}; pass fewer cells per call",
            len as f64 * 4.0 / (1u64 << 30) as f64
        )
    })?;
    v.resize(len, 0.0);
    Ok(v)
}

/// Splits `buf` into consecutive pieces of the given sizes.
fn split_sizes(mut buf: &mut [f32], sizes: impl Iterator<Item = usize>) -> Vec<&mut [f32]> {
    let mut parts = Vec::new();
    for s in sizes {
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(s);
        parts.push(head);
        buf = tail;
    }
    parts
}

/// Runs `f` on every item, in order of the list, on `n_workers` tasks of the current pool
/// that each take the next item when they finish one (so long items do not queue behind
/// each other on one thread).
fn each_once<A: Send>(items: Vec<A>, n_workers: usize, f: impl Fn(A) + Sync) {
    if items.is_empty() {
        return;
    }
    let slots: Vec<Mutex<Option<A>>> = items.into_iter().map(|a| Mutex::new(Some(a))).collect();
    let next = AtomicUsize::new(0);
    (0..n_workers.min(slots.len()))
        .into_par_iter()
        .for_each(|_| loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(slot) = slots.get(i) else { break };
            let item = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(a) = item {
                f(a);
            }
        });
}

/// Consecutive cells encoded together (see [`forward_group`]).
struct Group<'c, 'o, I> {
    tokens: usize,
    cells: Vec<&'c [I]>,
    outs: Vec<CellOut<'o>>,
}

/// Encodes many cells: cell `c` is `cells.cell(c)` (token ids, rows of the word
/// embeddings). Returns what `wanted` asks for; cells run on a pool of `n_threads`.
pub fn bert_forward<I: TokenId>(
    cells: Ragged<'_, I>,
    model: &Bert<'_>,
    wanted: &Wanted,
    n_threads: usize,
) -> KernelResult<BatchOutput> {
    model.validate()?;
    model.check_cells(&cells)?;
    let n_cells = cells.n_cells();
    let lens: Vec<usize> = (0..n_cells).map(|c| cells.cell(c).len()).collect();
    let n_run = wanted.layers_to_run(model.layers.len())?;
    let d = model.d();
    let total = cells.tokens.len();
    let heads = wanted.heads_out(model.n_heads);
    let mut attention_offsets = vec![0usize; n_cells + 1];
    for (c, &n) in lens.iter().enumerate() {
        let size = n
            .checked_mul(n)
            .and_then(|x| x.checked_mul(heads))
            .and_then(|x| x.checked_add(attention_offsets[c]))
            .ok_or_else(|| kerr!("attention output too large"))?;
        attention_offsets[c + 1] = size;
    }
    let n_att = attention_offsets[n_cells];
    let mut hidden = Vec::new();
    for _ in &wanted.hidden {
        hidden.push(alloc(total * d, "hidden states")?);
    }
    let mut pooled = match wanted.pool {
        Some(_) => Some(alloc(n_cells * d, "cell embeddings")?),
        None => None,
    };
    let mut att = Vec::new();
    for _ in &wanted.attention {
        att.push(alloc(n_att, "attention weights")?);
    }
    {
        let mut h_parts: Vec<_> = hidden
            .iter_mut()
            .map(|b| split_sizes(b, lens.iter().map(|&n| n * d)).into_iter())
            .collect();
        let mut a_parts: Vec<_> = att
            .iter_mut()
            .map(|b| split_sizes(b, attention_offsets.windows(2).map(|w| w[1] - w[0])).into_iter())
            .collect();
        let mut p_parts = pooled.as_deref_mut().map(|p| p.chunks_mut(d.max(1)));
        // consecutive short cells stacked into groups of at most GROUP_TOKENS tokens
        let mut groups: Vec<Group<'_, '_, I>> = Vec::new();
        for (c, &n) in lens.iter().enumerate() {
            let out = CellOut {
                hidden: h_parts.iter_mut().map(|it| it.next().unwrap()).collect(),
                pooled: p_parts.as_mut().and_then(|it| it.next()),
                attention: a_parts.iter_mut().map(|it| it.next().unwrap()).collect(),
            };
            match groups.last_mut() {
                Some(g) if n < GROUP_TOKENS && g.tokens + n <= GROUP_TOKENS => {
                    g.tokens += n;
                    g.cells.push(cells.cell(c));
                    g.outs.push(out);
                }
                _ => groups.push(Group {
                    tokens: n,
                    cells: vec![cells.cell(c)],
                    outs: vec![out],
                }),
            }
        }
        let (mut long, short): (Vec<_>, Vec<_>) =
            groups.into_iter().partition(|g| g.tokens >= LONG_CELL);
        // Largest first. While every thread can have a long group of its own, long groups
        // run side by side, one thread each (nothing to wait for inside a group); the last
        // fewer than n_threads run one at a time with their blocks spread over the threads.
        long.sort_by_key(|g| std::cmp::Reverse(g.tokens));
        let rest = long.split_off(long.len() - long.len() % n_threads);
        crate::pool::install(n_threads, || {
            let enc = Encoder::new(model, n_run);
            let run = |g: Group<'_, '_, I>, parallel: bool, s: &mut CellScratch| {
                forward_group(&enc, &g.cells, wanted, n_run, parallel, s, g.outs)
            };
            each_once(long, n_threads, |g| {
                run(g, false, &mut CellScratch::default())
            });
            let mut s = CellScratch::default();
            for g in rest {
                run(g, n_threads > 1, &mut s);
            }
            drop(s);
            short
                .into_par_iter()
                .for_each_init(CellScratch::default, |s, g| run(g, false, s));
        })?;
    }
    Ok(BatchOutput {
        hidden,
        pooled,
        attention: att,
        attention_offsets,
    })
}

#[cfg(test)]
pub(crate) mod tests;
