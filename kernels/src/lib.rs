//! Hot loops of geneattn.
//!
//! The crate is a pure Rust core (one module per kernel family, plain slices in and owned
//! vectors out, `cargo test`-able without Python) and a thin pyo3 layer in `python` that
//! only checks and converts numpy arrays, releases the GIL and maps errors to Python
//! exceptions.
//!
//! - [`tokenize`]: Geneformer rank-value encoding of a CSR matrix.
//! - [`gaussian`]: Gaussian attention (scKGBERT), single input and mean-pooled over cells.
//! - [`multihead`]: multi-head scaled dot-product attention (Geneformer), likewise.
//! - [`bert`]: a whole BERT encoder (pretrained Geneformer checkpoints) over ragged cells.
//! - [`aggregate`]: the attention of many cells (a study model's, or one layer of a
//!   checkpoint's) summed into gene x gene arrays or per-cell module sums, fused.
//! - [`knowledge`]: the K-encoder's prior-graph neighbourhood embeddings.
//! - [`sgemm`], [`flash`]: the encoder's packed f32 GEMM and fused softmax attention.
//! - [`matrix`], [`real`], [`simd`]: matrices and GEMM, the f32/f64 trait, vector dispatch.

pub mod aggregate;
pub mod bert;
pub mod error;
pub mod flash;
pub mod gaussian;
pub mod knowledge;
pub mod matrix;
pub mod multihead;
pub mod perturb;
pub mod pool;
pub mod projected;
pub mod real;
pub mod sgemm;
pub mod simd;
pub mod tokenize;

#[cfg(test)]
mod testdata;

mod python;
