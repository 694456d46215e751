//! Errors of the pure Rust core. The pyo3 layer maps them to `ValueError`.

use std::fmt;

/// A kernel refused its input. The message says which argument and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelError(pub String);

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KernelError {}

/// Result alias of the core.
pub type KernelResult<T> = Result<T, KernelError>;

/// Builds a [`KernelError`] from a format string.
#[macro_export]
macro_rules! kerr {
    ($($arg:tt)*) => { $crate::error::KernelError(format!($($arg)*)) };
}
