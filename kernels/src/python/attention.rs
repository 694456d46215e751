//! Python bindings of the attention and knowledge-graph kernels.
//!
//! Float arguments share one dtype, float32 or float64, taken from the first of them; a
//! mismatch, a wrong number of dimensions or a non-contiguous array is refused with an
//! error naming the argument. Results are new arrays owned by numpy (no copy on return).

use numpy::ndarray::Array2;
use numpy::{Element, IntoPyArray, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::layer::{by_layer_dtypes, LayerArgs};
use super::{array1, describe, slice1, threads};
use crate::gaussian::{gaussian_attention, gaussian_pool_cells, Projections};
use crate::knowledge::neighbour_mean;
use crate::matrix::{Mat, TokenId};
use crate::multihead::{mha_pool_cells_ranked, multi_head_attention, Heads};
use crate::real::Real;
use crate::tokenize::CsrView;

/// A float type the bindings accept.
pub(super) trait Float: Real + Element {}
impl Float for f32 {}
impl Float for f64 {}

/// Extracts a 2-D array of dtype `T`; `like` names the argument that fixed the dtype.
pub(super) fn array2<'py, T: Float>(
    name: &str,
    like: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<PyReadonlyArray2<'py, T>> {
    obj.extract::<PyReadonlyArray2<'py, T>>().map_err(|_| {
        let how = if name == like {
            "float32 or float64".to_string()
        } else {
            format!("{} (the dtype of {like})", T::DTYPE)
        };
        PyTypeError::new_err(format!(
            "{name} must be a 2-D numpy array of dtype {how}, got {}",
            describe(obj)
        ))
    })
}

/// Borrows a C-contiguous 2-D array as a matrix.
pub(super) fn mat<'a, T: Float>(
    name: &str,
    a: &'a PyReadonlyArray2<'_, T>,
) -> PyResult<Mat<'a, T>> {
    if !a.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{name} must be C-contiguous (use numpy.ascontiguousarray)"
        )));
    }
    let s = a.as_slice().map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be C-contiguous (use numpy.ascontiguousarray)"
        ))
    })?;
    let shape = a.shape();
    Ok(Mat::new(name, s, shape[0], shape[1])?)
}

pub(super) fn to_numpy<'py, T: Float>(
    py: Python<'py>,
    data: Vec<T>,
    rows: usize,
    cols: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let a = Array2::from_shape_vec((rows, cols), data)
        .map_err(|e| PyValueError::new_err(format!("internal shape error: {e}")))?;
    Ok(a.into_pyarray(py).into_any())
}

/// Either the output alone or `(output, weights)`.
fn attention_result<'py, T: Float>(
    py: Python<'py>,
    out: Option<Vec<T>>,
    weights: Option<Vec<T>>,
    (n, dv, m): (usize, usize, usize),
) -> PyResult<Bound<'py, PyAny>> {
    let out = out.map(|o| to_numpy(py, o, n, dv)).transpose()?;
    let weights = weights.map(|w| to_numpy(py, w, n, m)).transpose()?;
    match (out, weights) {
        (Some(o), Some(w)) => Ok((o, w).into_pyobject(py)?.into_any()),
        (Some(x), None) | (None, Some(x)) => Ok(x),
        (None, None) => Err(PyValueError::new_err("nothing to return")),
    }
}

#[allow(clippy::too_many_arguments)]
fn gaussian_impl<'py, T: Float>(
    py: Python<'py>,
    queries: &Bound<'py, PyAny>,
    keys: &Bound<'py, PyAny>,
    values: Option<&Bound<'py, PyAny>>,
    sigma: f64,
    return_weights: bool,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let qa = array2::<T>("queries", "queries", queries)?;
    let ka = array2::<T>("keys", "queries", keys)?;
    let va = values
        .map(|v| array2::<T>("values", "queries", v))
        .transpose()?;
    let (q, k) = (mat("queries", &qa)?, mat("keys", &ka)?);
    let v = va.as_ref().map(|v| mat("values", v)).transpose()?;
    let r = py.detach(|| gaussian_attention(q, k, v, sigma, return_weights, n_threads))?;
    let dims = (q.rows, v.map_or(0, |v| v.cols), k.rows);
    attention_result(py, r.output, r.weights, dims)
}

/// gaussian_attention(queries, keys, values, sigma, *, return_weights=False, n_threads=1)
///
/// Gaussian attention: weights softmax_j(-|q_i - k_j|^2 / (2 sigma^2)), output weights @ values.
/// Returns the (n, dv) output, or (output, (n, m) weights) when return_weights.
#[pyfunction]
#[pyo3(signature = (queries, keys, values, sigma, *, return_weights = false, n_threads = 1))]
#[pyo3(name = "gaussian_attention")]
fn gaussian_attention_py<'py>(
    py: Python<'py>,
    queries: &Bound<'py, PyAny>,
    keys: &Bound<'py, PyAny>,
    values: &Bound<'py, PyAny>,
    sigma: f64,
    return_weights: bool,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let n_threads = threads(n_threads)?;
    by_float!(
        queries,
        gaussian_impl(
            py,
            queries,
            keys,
            Some(values),
            sigma,
            return_weights,
            n_threads
        )
    )
}

/// gaussian_weights(queries, keys, sigma, *, n_threads=1)
///
/// The (n, m) Gaussian attention weight matrix alone.
#[pyfunction]
#[pyo3(signature = (queries, keys, sigma, *, n_threads = 1))]
#[pyo3(name = "gaussian_weights")]
fn gaussian_weights_py<'py>(
    py: Python<'py>,
    queries: &Bound<'py, PyAny>,
    keys: &Bound<'py, PyAny>,
    sigma: f64,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let n_threads = threads(n_threads)?;
    by_float!(
        queries,
        gaussian_impl(py, queries, keys, None, sigma, true, n_threads)
    )
}

#[allow(clippy::too_many_arguments)]
fn mha_impl<'py, T: Float>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    w_q: &Bound<'py, PyAny>,
    w_k: &Bound<'py, PyAny>,
    w_v: Option<&Bound<'py, PyAny>>,
    n_heads: usize,
    return_weights: bool,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let xa = array2::<T>("x", "x", x)?;
    let qa = array2::<T>("w_q", "x", w_q)?;
    let ka = array2::<T>("w_k", "x", w_k)?;
    let va = w_v.map(|v| array2::<T>("w_v", "x", v)).transpose()?;
    let x = mat("x", &xa)?;
    let heads = Heads {
        w_q: mat("w_q", &qa)?,
        w_k: mat("w_k", &ka)?,
        w_v: va.as_ref().map(|v| mat("w_v", v)).transpose()?,
        n_heads,
    };
    let r = py.detach(|| multi_head_attention(x, heads, return_weights, n_threads))?;
    attention_result(py, r.output, r.weights, (x.rows, x.cols, x.rows))
}

/// multi_head_attention(x, w_q, w_k, w_v, n_heads, *, return_weights=False, n_threads=1)
///
/// Multi-head scaled dot-product self-attention with head h on columns [h*dh, (h+1)*dh) of
/// the d x d projections. Returns the (n, d) concatenated heads before W_O, or (heads,
/// (n, n) head-averaged weights) when return_weights.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (x, w_q, w_k, w_v, n_heads, *, return_weights = false, n_threads = 1))]
#[pyo3(name = "multi_head_attention")]
fn multi_head_attention_py<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    w_q: &Bound<'py, PyAny>,
    w_k: &Bound<'py, PyAny>,
    w_v: &Bound<'py, PyAny>,
    n_heads: usize,
    return_weights: bool,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let n_threads = threads(n_threads)?;
    by_float!(
        x,
        mha_impl(
            py,
            x,
            w_q,
            w_k,
            Some(w_v),
            n_heads,
            return_weights,
            n_threads
        )
    )
}

/// multi_head_weights(x, w_q, w_k, n_heads, *, n_threads=1)
///
/// The (n, n) head-averaged attention weights alone (rows sum to 1).
#[pyfunction]
#[pyo3(signature = (x, w_q, w_k, n_heads, *, n_threads = 1))]
#[pyo3(name = "multi_head_weights")]
fn multi_head_weights_py<'py>(
    py: Python<'py>,
    x: &Bound<'py, PyAny>,
    w_q: &Bound<'py, PyAny>,
    w_k: &Bound<'py, PyAny>,
    n_heads: usize,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let n_threads = threads(n_threads)?;
    by_float!(x, mha_impl(py, x, w_q, w_k, None, n_heads, true, n_threads))
}

fn gaussian_cells_run<'py, T: Float, I: TokenId + Element>(
    py: Python<'py>,
    layer: &LayerArgs<'_, 'py>,
    sigma: f64,
    rank_scale: bool,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    layer.with::<T, I, _>(|cells, table, heads| {
        let w_v = heads
            .w_v
            .ok_or_else(|| PyValueError::new_err("w_v is needed"))?;
        let proj = Projections {
            w_q: heads.w_q,
            w_k: heads.w_k,
            w_v,
        };
        let out =
            py.detach(|| gaussian_pool_cells(cells, table, proj, sigma, rank_scale, n_threads))?;
        to_numpy(py, out, cells.n_cells(), w_v.cols)
    })
}

/// gaussian_encode_cells(tokens, offsets, table, w_q, w_k, w_v, sigma, *, rank_scale, n_threads=1)
///
/// Mean-pooled Gaussian self-attention of many cells: cell c's tokens are the rows
/// tokens[offsets[c]:offsets[c+1]] of table (scaled by 1/(i+1) when rank_scale); returns
/// (n_cells, w_v.shape[1]); cells without tokens give zero rows.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (tokens, offsets, table, w_q, w_k, w_v, sigma, *, rank_scale, n_threads = 1))]
#[pyo3(name = "gaussian_encode_cells")]
fn gaussian_encode_cells_py<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    table: &Bound<'py, PyAny>,
    w_q: &Bound<'py, PyAny>,
    w_k: &Bound<'py, PyAny>,
    w_v: &Bound<'py, PyAny>,
    sigma: f64,
    rank_scale: bool,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let n_threads = threads(n_threads)?;
    let offs = array1::<i64>("offsets", "int64", offsets)?;
    let offsets = slice1("offsets", &offs)?;
    // n_heads 1: unused, the Gaussian kernel has no heads
    let layer = LayerArgs::new(tokens, offsets, table, (w_q, w_k, Some(w_v)), 1);
    by_layer_dtypes!(
        layer,
        gaussian_cells_run(py, &layer, sigma, rank_scale, n_threads)
    )
}

fn mha_cells_run<'py, T: Float, I: TokenId + Element>(
    py: Python<'py>,
    layer: &LayerArgs<'_, 'py>,
    rank_values: bool,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    layer.with::<T, I, _>(|cells, table, heads| {
        let out =
            py.detach(|| mha_pool_cells_ranked(cells, table, heads, rank_values, n_threads))?;
        to_numpy(py, out, cells.n_cells(), table.cols)
    })
}

/// mha_encode_cells(tokens, offsets, table, w_q, w_k, w_v, n_heads, *, rank_values=False, n_threads=1)
///
/// Mean-pooled multi-head self-attention of many cells (concatenated heads before W_O):
/// returns (n_cells, d); cells without tokens give zero rows. With rank_values, each
/// token's value is scaled by ln((n + 1) / (position + 1)).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (tokens, offsets, table, w_q, w_k, w_v, n_heads, *, rank_values = false, n_threads = 1))]
#[pyo3(name = "mha_encode_cells")]
fn mha_encode_cells_py<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    table: &Bound<'py, PyAny>,
    w_q: &Bound<'py, PyAny>,
    w_k: &Bound<'py, PyAny>,
    w_v: &Bound<'py, PyAny>,
    n_heads: usize,
    rank_values: bool,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let n_threads = threads(n_threads)?;
    let offs = array1::<i64>("offsets", "int64", offsets)?;
    let offsets = slice1("offsets", &offs)?;
    let layer = LayerArgs::new(tokens, offsets, table, (w_q, w_k, Some(w_v)), n_heads);
    by_layer_dtypes!(layer, mha_cells_run(py, &layer, rank_values, n_threads))
}

#[allow(clippy::too_many_arguments)]
fn neighbour_impl<'py, T: Float>(
    py: Python<'py>,
    indptr: &Bound<'py, PyAny>,
    indices: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    embeddings: &Bound<'py, PyAny>,
    row_genes: Option<&Bound<'py, PyAny>>,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let ip = array1::<i64>("indptr", "int64", indptr)?;
    let ix = array1::<i32>("indices", "int32", indices)?;
    let da = array1::<T>("data", T::DTYPE, data)?;
    let ea = array2::<T>("embeddings", "embeddings", embeddings)?;
    let rg = row_genes
        .map(|g| array1::<i64>("row_genes", "int64", g))
        .transpose()?;
    let e = mat("embeddings", &ea)?;
    let graph = CsrView {
        indptr: slice1("indptr", &ip)?,
        indices: slice1("indices", &ix)?,
        data: slice1("data", &da)?,
        n_cols: e.rows,
    };
    let rg = rg.as_ref().map(|g| slice1("row_genes", g)).transpose()?;
    let out = py.detach(|| neighbour_mean(graph, e, rg, n_threads))?;
    to_numpy(py, out, graph.n_rows(), e.cols)
}

/// neighbour_embeddings(indptr, indices, data, embeddings, *, row_genes=None, n_threads=1)
///
/// Confidence-weighted mean of neighbour embeddings for each row of a gene x gene CSR graph
/// (int64 indptr, int32 indices, data of the embeddings' dtype): positive entries only,
/// weights c / (sum c + 1e-30); a row without one keeps embeddings[row_genes[r]] (or
/// embeddings[r]). Returns (n_rows, d).
#[pyfunction]
#[pyo3(signature = (indptr, indices, data, embeddings, *, row_genes = None, n_threads = 1))]
#[pyo3(name = "neighbour_embeddings")]
fn neighbour_embeddings_py<'py>(
    py: Python<'py>,
    indptr: &Bound<'py, PyAny>,
    indices: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    embeddings: &Bound<'py, PyAny>,
    row_genes: Option<&Bound<'py, PyAny>>,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let n_threads = threads(n_threads)?;
    by_float!(
        embeddings,
        neighbour_impl(py, indptr, indices, data, embeddings, row_genes, n_threads)
    )
}

/// Adds the functions of this file to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(gaussian_attention_py, m)?)?;
    m.add_function(wrap_pyfunction!(gaussian_weights_py, m)?)?;
    m.add_function(wrap_pyfunction!(multi_head_attention_py, m)?)?;
    m.add_function(wrap_pyfunction!(multi_head_weights_py, m)?)?;
    m.add_function(wrap_pyfunction!(gaussian_encode_cells_py, m)?)?;
    m.add_function(wrap_pyfunction!(mha_encode_cells_py, m)?)?;
    m.add_function(wrap_pyfunction!(neighbour_embeddings_py, m)?)?;
    Ok(())
}
