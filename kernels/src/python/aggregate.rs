//! Python bindings of the fused attention -> gene x gene aggregation, and of the per-cell
//! within-module attention.
//!
//! Arrays are read in place; the running sums may be passed in and are then updated in
//! place (so cells can be added in several calls with the same result as one call).

use numpy::ndarray::{Array1, Array2};
use numpy::{
    Element, IntoPyArray, PyReadonlyArray1, PyReadonlyArray2, PyReadwriteArray1, PyReadwriteArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::{array1, describe, has_dtype, slice1, threads};
use crate::aggregate::{mha_aggregate_cells, mha_module_cells, ModuleSumsMut, SumsMut, Universe};
use crate::matrix::{Mat, Ragged, TokenId};
use crate::multihead::Heads;
use crate::real::Real;

/// `(sums, incoming)` as returned to Python.
type SumsPair<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

/// A C-contiguous 2-D array of dtype `T` as a matrix; `like` names the argument that fixed
/// the dtype.
fn matrix<'a, 'py, T: Real + Element>(
    name: &str,
    like: &str,
    obj: &Bound<'py, PyAny>,
    keep: &'a mut Option<PyReadonlyArray2<'py, T>>,
) -> PyResult<Mat<'a, T>> {
    let a = obj.extract::<PyReadonlyArray2<'py, T>>().map_err(|_| {
        let want = if name == like {
            "float32 or float64".to_string()
        } else {
            format!("{} (the dtype of {like})", T::DTYPE)
        };
        PyTypeError::new_err(format!(
            "{name} must be a 2-D numpy array of dtype {want}, got {}",
            describe(obj)
        ))
    })?;
    let a = keep.insert(a);
    let shape = a.shape().to_vec();
    let s = a.as_slice().map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be C-contiguous (use numpy.ascontiguousarray)"
        ))
    })?;
    Ok(Mat::new(name, s, shape[0], shape[1])?)
}

/// The arguments after the float and token dtypes are fixed.
struct Args<'a, 'py> {
    tokens: &'a Bound<'py, PyAny>,
    offsets: &'a [i64],
    table: &'a Bound<'py, PyAny>,
    w_q: &'a Bound<'py, PyAny>,
    w_k: &'a Bound<'py, PyAny>,
    n_heads: usize,
    universe: Universe<'a>,
    n_threads: usize,
}

fn run<T: Real + Element, I: TokenId + Element>(
    py: Python<'_>,
    a: Args<'_, '_>,
    out: SumsMut<'_>,
) -> PyResult<()> {
    let toks = array1::<I>("tokens", "int32 or int64", a.tokens)?;
    let (mut ta, mut qa, mut ka) = (None, None, None);
    let table = matrix::<T>("table", "table", a.table, &mut ta)?;
    let heads = Heads {
        w_q: matrix::<T>("w_q", "table", a.w_q, &mut qa)?,
        w_k: matrix::<T>("w_k", "table", a.w_k, &mut ka)?,
        w_v: None,
        n_heads: a.n_heads,
    };
    let cells = Ragged {
        tokens: slice1("tokens", &toks)?,
        offsets: a.offsets,
    };
    let (universe, n_threads) = (a.universe, a.n_threads);
    py.detach(|| mha_aggregate_cells(cells, table, heads, universe, out, n_threads))?;
    Ok(())
}

fn dispatch(py: Python<'_>, a: Args<'_, '_>, out: SumsMut<'_>) -> PyResult<()> {
    match (has_dtype::<f32>(a.table), has_dtype::<i64>(a.tokens)) {
        (true, false) => run::<f32, i32>(py, a, out),
        (true, true) => run::<f32, i64>(py, a, out),
        (false, false) => run::<f64, i32>(py, a, out),
        (false, true) => run::<f64, i64>(py, a, out),
    }
}

fn writeable<'py, A: for<'a> FromPyObject<'a, 'py, Error = PyErr>>(
    name: &str,
    shape: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<A> {
    obj.extract::<A>().map_err(|e| {
        PyTypeError::new_err(format!(
            "{name} must be a writeable {shape} numpy array of dtype float64, not shared with \
             another argument; got {} ({e})",
            describe(obj)
        ))
    })
}

fn contiguous<'s>(
    name: &str,
    s: Result<&'s mut [f64], numpy::AsSliceError>,
) -> PyResult<&'s mut [f64]> {
    s.map_err(|_| PyValueError::new_err(format!("{name} must be C-contiguous")))
}

/// mha_aggregate_cells(tokens, offsets, table, w_q, w_k, n_heads, universe, n_universe, *, n_threads=1, sums=None, incoming=None)
///
/// Head-averaged multi-head attention of every cell (tokens[offsets[c]:offsets[c+1]], rows of
/// table), aggregated over the universe (universe[token] = index in 0..n_universe or -1):
/// sums[u_i, u_j] += A[i, j] over pairs of universe tokens, incoming[u_j] += sum_i A[i, j]
/// over all query rows. Returns (sums (G, G) float64, incoming (G,) float64); when sums and
/// incoming are given they are added into in place and returned. Bit-identical for any
/// n_threads.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (tokens, offsets, table, w_q, w_k, n_heads, universe, n_universe, *, n_threads = 1, sums = None, incoming = None))]
#[pyo3(name = "mha_aggregate_cells")]
fn mha_aggregate_cells_py<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    table: &Bound<'py, PyAny>,
    w_q: &Bound<'py, PyAny>,
    w_k: &Bound<'py, PyAny>,
    n_heads: usize,
    universe: &Bound<'py, PyAny>,
    n_universe: usize,
    n_threads: usize,
    sums: Option<&Bound<'py, PyAny>>,
    incoming: Option<&Bound<'py, PyAny>>,
) -> PyResult<SumsPair<'py>> {
    let n_threads = threads(n_threads)?;
    let offs = array1::<i64>("offsets", "int64", offsets)?;
    let uni: PyReadonlyArray1<'py, i64> = array1::<i64>("universe", "int64", universe)?;
    let args = Args {
        tokens,
        offsets: slice1("offsets", &offs)?,
        table,
        w_q,
        w_k,
        n_heads,
        universe: Universe {
            index: slice1("universe", &uni)?,
            n: n_universe,
        },
        n_threads,
    };
    let g = n_universe;
    match (sums, incoming) {
        (Some(s), Some(i)) => {
            let mut sa: PyReadwriteArray2<'py, f64> = writeable("sums", "2-D", s)?;
            let mut ia: PyReadwriteArray1<'py, f64> = writeable("incoming", "1-D", i)?;
            if sa.shape() != [g, g] || ia.shape() != [g] {
                return Err(PyValueError::new_err(format!(
                    "sums must have shape ({g}, {g}) and incoming ({g},), got {:?} and {:?}",
                    sa.shape(),
                    ia.shape()
                )));
            }
            let out = SumsMut {
                sums: contiguous("sums", sa.as_slice_mut())?,
                incoming: contiguous("incoming", ia.as_slice_mut())?,
            };
            dispatch(py, args, out)?;
            Ok((s.clone(), i.clone()))
        }
        (None, None) => {
            let size = g
                .checked_mul(g)
                .ok_or_else(|| PyValueError::new_err("n_universe is too large"))?;
            let (mut s, mut i) = (vec![0.0f64; size], vec![0.0f64; g]);
            let out = SumsMut {
                sums: &mut s,
                incoming: &mut i,
            };
            dispatch(py, args, out)?;
            let s = Array2::from_shape_vec((g, g), s)
                .map_err(|e| PyValueError::new_err(format!("internal shape error: {e}")))?;
            Ok((
                s.into_pyarray(py).into_any(),
                Array1::from_vec(i).into_pyarray(py).into_any(),
            ))
        }
        _ => Err(PyValueError::new_err(
            "give both sums and incoming, or neither",
        )),
    }
}

fn run_modules<T: Real + Element, I: TokenId + Element>(
    py: Python<'_>,
    a: Args<'_, '_>,
    module: &[i64],
    n_modules: usize,
    out: ModuleSumsMut<'_>,
) -> PyResult<()> {
    let toks = array1::<I>("tokens", "int32 or int64", a.tokens)?;
    let (mut ta, mut qa, mut ka) = (None, None, None);
    let table = matrix::<T>("table", "table", a.table, &mut ta)?;
    let heads = Heads {
        w_q: matrix::<T>("w_q", "table", a.w_q, &mut qa)?,
        w_k: matrix::<T>("w_k", "table", a.w_k, &mut ka)?,
        w_v: None,
        n_heads: a.n_heads,
    };
    let cells = Ragged {
        tokens: slice1("tokens", &toks)?,
        offsets: a.offsets,
    };
    let (universe, n_threads) = (a.universe, a.n_threads);
    py.detach(|| {
        mha_module_cells(
            cells, table, heads, universe, module, n_modules, out, n_threads,
        )
    })?;
    Ok(())
}

/// `(sums, pairs)` per cell and module as returned to Python.
type ModuleArrays<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

/// mha_module_cells(tokens, offsets, table, w_q, w_k, n_heads, universe, modules, n_modules, *, n_threads=1)
///
/// Within-module attention of every cell (tokens[offsets[c]:offsets[c+1]], rows of table).
/// universe[token] is the universe index of a token (0 .. len(modules) - 1) or -1;
/// modules[u] is the module of universe gene u (0 .. n_modules - 1) or -1. Returns
/// (sums (n_cells, n_modules) float64, pairs (n_cells, n_modules) int64): sums[c, k] is the
/// head-averaged attention A[i, j] summed over positions i, j of cell c holding distinct genes
/// of module k, pairs[c, k] the number of ordered pairs of distinct module-k genes in cell c.
/// Bit-identical for any n_threads.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (tokens, offsets, table, w_q, w_k, n_heads, universe, modules, n_modules, *, n_threads = 1))]
#[pyo3(name = "mha_module_cells")]
fn mha_module_cells_py<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    table: &Bound<'py, PyAny>,
    w_q: &Bound<'py, PyAny>,
    w_k: &Bound<'py, PyAny>,
    n_heads: usize,
    universe: &Bound<'py, PyAny>,
    modules: &Bound<'py, PyAny>,
    n_modules: usize,
    n_threads: usize,
) -> PyResult<ModuleArrays<'py>> {
    let n_threads = threads(n_threads)?;
    let offs = array1::<i64>("offsets", "int64", offsets)?;
    let uni: PyReadonlyArray1<'py, i64> = array1::<i64>("universe", "int64", universe)?;
    let mods: PyReadonlyArray1<'py, i64> = array1::<i64>("modules", "int64", modules)?;
    let module = slice1("modules", &mods)?;
    let offsets = slice1("offsets", &offs)?;
    let args = Args {
        tokens,
        offsets,
        table,
        w_q,
        w_k,
        n_heads,
        universe: Universe {
            index: slice1("universe", &uni)?,
            n: module.len(),
        },
        n_threads,
    };
    let n_cells = offsets.len().saturating_sub(1);
    let size = n_cells
        .checked_mul(n_modules)
        .ok_or_else(|| PyValueError::new_err("n_modules is too large"))?;
    let (mut s, mut p) = (vec![0.0f64; size], vec![0i64; size]);
    let out = ModuleSumsMut {
        sums: &mut s,
        pairs: &mut p,
    };
    match (has_dtype::<f32>(args.table), has_dtype::<i64>(args.tokens)) {
        (true, false) => run_modules::<f32, i32>(py, args, module, n_modules, out),
        (true, true) => run_modules::<f32, i64>(py, args, module, n_modules, out),
        (false, false) => run_modules::<f64, i32>(py, args, module, n_modules, out),
        (false, true) => run_modules::<f64, i64>(py, args, module, n_modules, out),
    }?;
    let shape_err =
        |e: numpy::ndarray::ShapeError| PyValueError::new_err(format!("internal shape error: {e}"));
    let s = Array2::from_shape_vec((n_cells, n_modules), s).map_err(shape_err)?;
    let p = Array2::from_shape_vec((n_cells, n_modules), p).map_err(shape_err)?;
    Ok((s.into_pyarray(py).into_any(), p.into_pyarray(py).into_any()))
}

/// Adds the functions of this file to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(mha_aggregate_cells_py, m)?)?;
    m.add_function(wrap_pyfunction!(mha_module_cells_py, m)?)?;
    Ok(())
}
