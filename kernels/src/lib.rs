//! Hot loops of geneattn.
//!
//! The crate is a pure Rust core (one module per kernel family, plain slices in and owned
//! vectors out, `cargo test`-able without Python) and a thin pyo3 layer in [`python`] that
//! only checks and converts numpy arrays, releases the GIL and maps errors to Python
//! exceptions.

pub mod error;
pub mod pool;
pub mod tokenize;

mod python;
