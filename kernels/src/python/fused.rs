//! Python bindings of the encoder's building blocks: the packed GEMM ([`crate::sgemm`]) and
//! the fused attention ([`crate::flash`]), float32, exposed for tests against numpy.

use numpy::{PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;

use super::attention::{mat, to_numpy};
use super::{array1, describe, slice1, threads};
use crate::flash;
use crate::sgemm;

/// A 2-D float32 array, or a `TypeError` naming the argument.
fn f32_2d<'py>(name: &str, obj: &Bound<'py, PyAny>) -> PyResult<PyReadonlyArray2<'py, f32>> {
    obj.extract::<PyReadonlyArray2<'py, f32>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name} must be a 2-D numpy array of dtype float32, got {}",
            describe(obj)
        ))
    })
}

/// linear(x, w, b=None, *, n_threads=1)
///
/// x @ w.T + b for float32 x (m, k), w (n, k) in nn.Linear layout and b (n,) or None, with
/// the encoder's packed GEMM. Returns (m, n) float32.
#[pyfunction]
#[pyo3(signature = (x, w, b = None, *, n_threads = 1))]
#[pyo3(name = "linear")]
fn linear_py<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    w: &Bound<'py, PyAny>,
    b: Option<&Bound<'py, PyAny>>,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let n_threads = threads(n_threads)?;
    let xa = f32_2d("x", x)?;
    let wa = f32_2d("w", w)?;
    let ba: Option<PyReadonlyArray1<'py, f32>> =
        b.map(|b| array1::<f32>("b", "float32", b)).transpose()?;
    let (xm, wm) = (mat("x", &xa)?, mat("w", &wa)?);
    let bias = ba.as_ref().map(|b| slice1("b", b)).transpose()?;
    let out = py.detach(|| sgemm::linear(xm, wm, bias, n_threads))?;
    to_numpy(py, out, xm.rows, wm.rows)
}

/// flash_attention(queries, keys, values, n_heads, *, scale=None, n_threads=1)
///
/// Multi-head softmax attention with the encoder's fused kernel (no n x m matrix): head h of
/// row i is sum_j softmax_j(scale q_ih . k_jh) v_jh, heads side by side in the columns.
/// float32 queries (n, d), keys and values (m, d); scale defaults to 1 / sqrt(d / n_heads).
/// Returns (n, d) float32.
#[pyfunction]
#[pyo3(signature = (queries, keys, values, n_heads, *, scale = None, n_threads = 1))]
#[pyo3(name = "flash_attention")]
fn flash_attention_py<'py>(
    py: Python<'py>,
    queries: &Bound<'py, PyAny>,
    keys: &Bound<'py, PyAny>,
    values: &Bound<'py, PyAny>,
    n_heads: usize,
    scale: Option<f64>,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let n_threads = threads(n_threads)?;
    let qa = f32_2d("queries", queries)?;
    let ka = f32_2d("keys", keys)?;
    let va = f32_2d("values", values)?;
    let (q, k, v) = (mat("queries", &qa)?, mat("keys", &ka)?, mat("values", &va)?);
    let dh = q.cols.checked_div(n_heads).unwrap_or(0);
    let scale = scale.unwrap_or(1.0 / (dh.max(1) as f64).sqrt()) as f32;
    let out = py.detach(|| flash::attention(q, k, v, n_heads, scale, n_threads))?;
    to_numpy(py, out, q.rows, q.cols)
}

/// Adds the functions of this file to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(linear_py, m)?)?;
    m.add_function(wrap_pyfunction!(flash_attention_py, m)?)?;
    Ok(())
}
