//! The pyo3 layer: checks and converts numpy arrays, releases the GIL, maps errors.
//!
//! No arithmetic lives here. Every array is read in place (no copy); a non-contiguous array
//! or one of the wrong dtype is refused with a `TypeError`/`ValueError` naming the argument.

use numpy::{
    Element, IntoPyArray, PyArray1, PyArrayDescrMethods, PyReadonlyArray1, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// Calls `f::<f32>(...)` when `like` is a float32 numpy array, else `f::<f64>(...)` (whose
/// argument checks then name the expected dtype).
macro_rules! by_float {
    ($like:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        if $crate::python::has_dtype::<f32>($like) {
            $f::<f32>($($arg),*)
        } else {
            $f::<f64>($($arg),*)
        }
    };
}

mod aggregate;
mod attention;
mod bert;
mod fused;
mod genohoption;
mod layer;
mod perturb;

use crate::error::KernelError;
use crate::tokenize::{rank_encode_csr, CsrView, RankParams};

impl From<KernelError> for PyErr {
    fn from(e: KernelError) -> Self {
        PyValueError::new_err(e.0)
    }
}

/// Borrows a 1-D contiguous array as a slice, with an error that names the argument.
pub(crate) fn slice1<'a, T: Element>(
    name: &str,
    a: &'a PyReadonlyArray1<'_, T>,
) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be C-contiguous (use numpy.ascontiguousarray)"
        ))
    })
}

/// Extracts a 1-D array of dtype `T`, or a `TypeError` naming the argument and dtype.
pub(crate) fn array1<'py, T: Element>(
    name: &str,
    dtype: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<PyReadonlyArray1<'py, T>> {
    obj.extract::<PyReadonlyArray1<'py, T>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name} must be a 1-D numpy array of dtype {dtype}, got {}",
            describe(obj)
        ))
    })
}

/// `"dtype X with N dimensions"` of whatever was passed, for error messages.
pub(crate) fn describe(obj: &Bound<'_, PyAny>) -> String {
    let dtype = obj
        .getattr("dtype")
        .map(|d| d.to_string())
        .unwrap_or_else(|_| obj.get_type().to_string());
    let ndim = obj
        .cast::<numpy::PyUntypedArray>()
        .map(|a| a.ndim().to_string())
        .unwrap_or_else(|_| "?".into());
    format!("dtype {dtype} with {ndim} dimensions")
}

/// Whether `obj` is a numpy array of dtype `T`.
pub(crate) fn has_dtype<T: Element>(obj: &Bound<'_, PyAny>) -> bool {
    obj.cast::<numpy::PyUntypedArray>()
        .map(|a| a.dtype().is_equiv_to(&numpy::dtype::<T>(obj.py())))
        .unwrap_or(false)
}

/// `(tokens int32, offsets int64)` as returned to Python.
type RaggedArrays<'py> = (Bound<'py, PyArray1<i32>>, Bound<'py, PyArray1<i64>>);

fn threads(n_threads: usize) -> PyResult<usize> {
    crate::pool::pool(n_threads)?;
    Ok(n_threads)
}

/// rank_encode_csr(indptr, indices, data, gene_token, gene_median, n_counts, target_sum, max_len, n_threads)
///
/// Geneformer rank-value encoding of a CSR matrix (float32 or float64 data). Returns
/// (tokens int32, offsets int64).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (indptr, indices, data, gene_token, gene_median, n_counts, target_sum, max_len, n_threads))]
#[pyo3(name = "rank_encode_csr")]
fn rank_encode_csr_py<'py>(
    py: Python<'py>,
    indptr: &Bound<'py, PyAny>,
    indices: &Bound<'py, PyAny>,
    data: &Bound<'py, PyAny>,
    gene_token: &Bound<'py, PyAny>,
    gene_median: &Bound<'py, PyAny>,
    n_counts: &Bound<'py, PyAny>,
    target_sum: f64,
    max_len: usize,
    n_threads: usize,
) -> PyResult<RaggedArrays<'py>> {
    let n_threads = threads(n_threads)?;
    let indptr = array1::<i64>("indptr", "int64", indptr)?;
    let indices = array1::<i32>("indices", "int32", indices)?;
    let gene_token = array1::<i32>("gene_token", "int32", gene_token)?;
    let gene_median = array1::<f64>("gene_median", "float64", gene_median)?;
    let n_counts = array1::<f64>("n_counts", "float64", n_counts)?;
    let (ip, ix) = (slice1("indptr", &indptr)?, slice1("indices", &indices)?);
    let params = RankParams {
        gene_token: slice1("gene_token", &gene_token)?,
        gene_median: slice1("gene_median", &gene_median)?,
        n_counts: slice1("n_counts", &n_counts)?,
        target_sum,
        max_len,
    };
    let n_cols = params.gene_token.len();
    let out = if let Ok(d) = data.extract::<PyReadonlyArray1<'py, f32>>() {
        let d = slice1("data", &d)?;
        let x = CsrView {
            indptr: ip,
            indices: ix,
            data: d,
            n_cols,
        };
        py.detach(|| rank_encode_csr(x, params, n_threads))?
    } else {
        let d = array1::<f64>("data", "float32 or float64", data)?;
        let d = slice1("data", &d)?;
        let x = CsrView {
            indptr: ip,
            indices: ix,
            data: d,
            n_cols,
        };
        py.detach(|| rank_encode_csr(x, params, n_threads))?
    };
    Ok((out.tokens.into_pyarray(py), out.offsets.into_pyarray(py)))
}

#[pymodule]
fn _kernels(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(rank_encode_csr_py, m)?)?;
    attention::register(m)?;
    aggregate::register(m)?;
    perturb::register(m)?;
    bert::register(m)?;
    genohoption::register(m)?;
    fused::register(m)?;
    Ok(())
}
