//! Python bindings of the fused attention -> gene x gene aggregation, and of the per-cell
//! within-module attention, over a study model's attention (`mha_*`) or one layer of a BERT
//! checkpoint (`bert_*`).
//!
//! Arrays are read in place; the running sums may be passed in and are then updated in
//! place (so cells can be added in several calls with the same result as one call).

use numpy::ndarray::{Array1, Array2};
use numpy::{
    Element, IntoPyArray, PyReadonlyArray1, PyReadwriteArray1, PyReadwriteArray2,
    PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use super::attention::Float;
use super::bert::Weights;
use super::genohoption::{attention_mode, GhArgs};
use super::layer::{by_layer_dtypes, LayerArgs};
use super::{array1, describe, has_dtype, slice1, threads};
use crate::aggregate::{
    bert_aggregate_cells, bert_module_cells, mha_aggregate_cells, mha_module_cells, LayerHeads,
    ModuleSumsMut, SumsMut, Universe,
};
use crate::bert::Bert;
use crate::matrix::{Ragged, TokenId};

/// `(sums, incoming)` as returned to Python.
pub(super) type SumsPair<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

/// The arguments of a study-model kernel over a universe.
struct Args<'a, 'py> {
    layer: LayerArgs<'a, 'py>,
    universe: Universe<'a>,
    n_threads: usize,
}

fn run<T: Float, I: TokenId + Element>(
    py: Python<'_>,
    a: Args<'_, '_>,
    out: SumsMut<'_>,
) -> PyResult<()> {
    let (universe, n_threads) = (a.universe, a.n_threads);
    a.layer.with::<T, I, _>(|cells, table, heads| {
        py.detach(|| mha_aggregate_cells(cells, table, heads, universe, out, n_threads))?;
        Ok(())
    })
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
    let offsets = slice1("offsets", &offs)?;
    let uni: PyReadonlyArray1<'py, i64> = array1::<i64>("universe", "int64", universe)?;
    let args = Args {
        layer: LayerArgs::new(tokens, offsets, table, (w_q, w_k, None), n_heads),
        universe: Universe {
            index: slice1("universe", &uni)?,
            n: n_universe,
        },
        n_threads,
    };
    running_sums(py, n_universe, sums, incoming, |out| {
        by_layer_dtypes!(args.layer, run(py, args, out))
    })
}

/// Runs `add` on the running sums over a universe of `g` genes: `sums` and `incoming` when
/// given (checked, added into in place and returned), else new zeroed arrays.
pub(super) fn running_sums<'py>(
    py: Python<'py>,
    g: usize,
    sums: Option<&Bound<'py, PyAny>>,
    incoming: Option<&Bound<'py, PyAny>>,
    add: impl FnOnce(SumsMut<'_>) -> PyResult<()>,
) -> PyResult<SumsPair<'py>> {
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
            add(SumsMut {
                sums: contiguous("sums", sa.as_slice_mut())?,
                incoming: contiguous("incoming", ia.as_slice_mut())?,
            })?;
            Ok((s.clone(), i.clone()))
        }
        (None, None) => {
            let size = g
                .checked_mul(g)
                .ok_or_else(|| PyValueError::new_err("n_universe is too large"))?;
            let (mut s, mut i) = (vec![0.0f64; size], vec![0.0f64; g]);
            add(SumsMut {
                sums: &mut s,
                incoming: &mut i,
            })?;
            let s = Array2::from_shape_vec((g, g), s).map_err(shape_error)?;
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

fn shape_error(e: numpy::ndarray::ShapeError) -> PyErr {
    PyValueError::new_err(format!("internal shape error: {e}"))
}

/// New `(n_cells, n_modules)` float64 sums and int64 pairs, filled by `fill`.
pub(super) fn module_arrays<'py>(
    py: Python<'py>,
    n_cells: usize,
    n_modules: usize,
    fill: impl FnOnce(ModuleSumsMut<'_>) -> PyResult<()>,
) -> PyResult<ModuleArrays<'py>> {
    let size = n_cells
        .checked_mul(n_modules)
        .ok_or_else(|| PyValueError::new_err("n_modules is too large"))?;
    let (mut s, mut p) = (vec![0.0f64; size], vec![0i64; size]);
    fill(ModuleSumsMut {
        sums: &mut s,
        pairs: &mut p,
    })?;
    let s = Array2::from_shape_vec((n_cells, n_modules), s).map_err(shape_error)?;
    let p = Array2::from_shape_vec((n_cells, n_modules), p).map_err(shape_error)?;
    Ok((s.into_pyarray(py).into_any(), p.into_pyarray(py).into_any()))
}

fn run_modules<T: Float, I: TokenId + Element>(
    py: Python<'_>,
    a: Args<'_, '_>,
    module: &[i64],
    n_modules: usize,
    out: ModuleSumsMut<'_>,
) -> PyResult<()> {
    let (universe, n_threads) = (a.universe, a.n_threads);
    a.layer.with::<T, I, _>(|cells, table, heads| {
        py.detach(|| {
            mha_module_cells(
                cells, table, heads, universe, module, n_modules, out, n_threads,
            )
        })?;
        Ok(())
    })
}

/// `(sums, pairs)` per cell and module as returned to Python.
pub(super) type ModuleArrays<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

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
        layer: LayerArgs::new(tokens, offsets, table, (w_q, w_k, None), n_heads),
        universe: Universe {
            index: slice1("universe", &uni)?,
            n: module.len(),
        },
        n_threads,
    };
    let n_cells = offsets.len().saturating_sub(1);
    module_arrays(py, n_cells, n_modules, |out| {
        by_layer_dtypes!(args.layer, run_modules(py, args, module, n_modules, out))
    })
}

/// The arguments of the checkpoint kernels once the weights are borrowed.
struct BertArgs<'a, 'py> {
    tokens: &'a Bound<'py, PyAny>,
    offsets: &'a [i64],
    model: &'a Bert<'a>,
    which: LayerHeads<'a>,
    universe: Universe<'a>,
    n_threads: usize,
}

/// A 0-based index argument.
fn index_arg(name: &str, v: i64) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a 0-based index >= 0, got {v} (BertEncoder takes negative ones)"
        ))
    })
}

/// Runs `f` with the borrowed checkpoint, layer, heads and universe of a call.
#[allow(clippy::too_many_arguments)]
fn with_bert_args<'py, R>(
    tokens: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    embeddings: &[Bound<'py, PyAny>],
    layers: &[Vec<Bound<'py, PyAny>>],
    (n_heads, activation, layer_norm_eps): (usize, &str, f64),
    (layer, heads): (i64, Option<Vec<i64>>),
    (universe, n_universe): (&Bound<'py, PyAny>, usize),
    (n_threads, genohoption): (usize, Option<&Bound<'py, PyAny>>),
    f: impl FnOnce(BertArgs<'_, 'py>) -> PyResult<R>,
) -> PyResult<R> {
    let n_threads = threads(n_threads)?;
    let layer = index_arg("layer", layer)?;
    let heads: Option<Vec<usize>> = heads
        .map(|hs| hs.into_iter().map(|h| index_arg("heads", h)).collect())
        .transpose()?;
    let w = Weights::borrow(embeddings, layers)?;
    let gh = genohoption.map(GhArgs::extract).transpose()?;
    let model = w.model(
        n_heads,
        activation,
        layer_norm_eps,
        attention_mode(gh.as_ref())?,
    )?;
    let offs = array1::<i64>("offsets", "int64", offsets)?;
    let uni: PyReadonlyArray1<'py, i64> = array1::<i64>("universe", "int64", universe)?;
    f(BertArgs {
        tokens,
        offsets: slice1("offsets", &offs)?,
        model: &model,
        which: LayerHeads {
            layer,
            heads: heads.as_deref(),
        },
        universe: Universe {
            index: slice1("universe", &uni)?,
            n: n_universe,
        },
        n_threads,
    })
}

/// Token ids of either dtype as ragged cells.
fn bert_cells<'a, I: TokenId + Element>(
    toks: &'a PyReadonlyArray1<'_, I>,
    offsets: &'a [i64],
) -> PyResult<Ragged<'a, I>> {
    Ok(Ragged {
        tokens: slice1("tokens", toks)?,
        offsets,
    })
}

fn bert_sums<I: TokenId + Element>(
    py: Python<'_>,
    a: &BertArgs<'_, '_>,
    out: SumsMut<'_>,
) -> PyResult<()> {
    let toks = array1::<I>("tokens", "int32 or int64", a.tokens)?;
    let cells = bert_cells(&toks, a.offsets)?;
    let (model, which, universe, n_threads) = (a.model, a.which, a.universe, a.n_threads);
    py.detach(|| bert_aggregate_cells(cells, model, which, universe, out, n_threads))?;
    Ok(())
}

fn bert_modules<I: TokenId + Element>(
    py: Python<'_>,
    a: &BertArgs<'_, '_>,
    (module, n_modules): (&[i64], usize),
    out: ModuleSumsMut<'_>,
) -> PyResult<()> {
    let toks = array1::<I>("tokens", "int32 or int64", a.tokens)?;
    let cells = bert_cells(&toks, a.offsets)?;
    let (model, which, universe, n_threads) = (a.model, a.which, a.universe, a.n_threads);
    py.detach(|| {
        bert_module_cells(
            cells, model, which, universe, module, n_modules, out, n_threads,
        )
    })?;
    Ok(())
}

/// bert_aggregate_cells(tokens, offsets, embeddings, layers, n_heads, activation, layer_norm_eps, layer, universe, n_universe, *, heads=None, n_threads=1, sums=None, incoming=None, genohoption=None)
///
/// The attention of encoder layer `layer` (0-based) of a BERT checkpoint (weights as for
/// bert_forward), averaged over `heads` (None: all), of every cell (input ids
/// tokens[offsets[c]:offsets[c+1]]), aggregated over the universe exactly as
/// mha_aggregate_cells does. Only the layers up to `layer` are run. Returns (sums (G, G)
/// float64, incoming (G,) float64), added into in place when given. Bit-identical for any
/// n_threads and any split of the cells into calls. With `genohoption` (see bert_forward)
/// every layer attends GenoHoption's way and the sums are of layer `layer`'s effective
/// multi-hop attention (the diffusion matrices, averaged over `heads`).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (
    tokens, offsets, embeddings, layers, n_heads, activation, layer_norm_eps, layer, universe,
    n_universe, *, heads = None, n_threads = 1, sums = None, incoming = None, genohoption = None
))]
#[pyo3(name = "bert_aggregate_cells")]
fn bert_aggregate_cells_py<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    embeddings: Vec<Bound<'py, PyAny>>,
    layers: Vec<Vec<Bound<'py, PyAny>>>,
    n_heads: usize,
    activation: &str,
    layer_norm_eps: f64,
    layer: i64,
    universe: &Bound<'py, PyAny>,
    n_universe: usize,
    heads: Option<Vec<i64>>,
    n_threads: usize,
    sums: Option<&Bound<'py, PyAny>>,
    incoming: Option<&Bound<'py, PyAny>>,
    genohoption: Option<&Bound<'py, PyAny>>,
) -> PyResult<SumsPair<'py>> {
    with_bert_args(
        tokens,
        offsets,
        &embeddings,
        &layers,
        (n_heads, activation, layer_norm_eps),
        (layer, heads),
        (universe, n_universe),
        (n_threads, genohoption),
        |args| {
            running_sums(py, n_universe, sums, incoming, |out| {
                if has_dtype::<i64>(tokens) {
                    bert_sums::<i64>(py, &args, out)
                } else {
                    bert_sums::<i32>(py, &args, out)
                }
            })
        },
    )
}

/// bert_module_cells(tokens, offsets, embeddings, layers, n_heads, activation, layer_norm_eps, layer, universe, modules, n_modules, *, heads=None, n_threads=1, genohoption=None)
///
/// Within-module attention of every cell, as mha_module_cells, with the attention of encoder
/// layer `layer` of a BERT checkpoint averaged over `heads` (None: all). Returns (sums
/// (n_cells, n_modules) float64, pairs (n_cells, n_modules) int64). Bit-identical for any
/// n_threads. `genohoption` as for bert_aggregate_cells.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (
    tokens, offsets, embeddings, layers, n_heads, activation, layer_norm_eps, layer, universe,
    modules, n_modules, *, heads = None, n_threads = 1, genohoption = None
))]
#[pyo3(name = "bert_module_cells")]
fn bert_module_cells_py<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    embeddings: Vec<Bound<'py, PyAny>>,
    layers: Vec<Vec<Bound<'py, PyAny>>>,
    n_heads: usize,
    activation: &str,
    layer_norm_eps: f64,
    layer: i64,
    universe: &Bound<'py, PyAny>,
    modules: &Bound<'py, PyAny>,
    n_modules: usize,
    heads: Option<Vec<i64>>,
    n_threads: usize,
    genohoption: Option<&Bound<'py, PyAny>>,
) -> PyResult<ModuleArrays<'py>> {
    let mods: PyReadonlyArray1<'py, i64> = array1::<i64>("modules", "int64", modules)?;
    let module = slice1("modules", &mods)?;
    with_bert_args(
        tokens,
        offsets,
        &embeddings,
        &layers,
        (n_heads, activation, layer_norm_eps),
        (layer, heads),
        (universe, module.len()),
        (n_threads, genohoption),
        |args| {
            let n_cells = args.offsets.len().saturating_sub(1);
            module_arrays(py, n_cells, n_modules, |out| {
                if has_dtype::<i64>(tokens) {
                    bert_modules::<i64>(py, &args, (module, n_modules), out)
                } else {
                    bert_modules::<i32>(py, &args, (module, n_modules), out)
                }
            })
        },
    )
}

/// Adds the functions of this file to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(mha_aggregate_cells_py, m)?)?;
    m.add_function(wrap_pyfunction!(mha_module_cells_py, m)?)?;
    m.add_function(wrap_pyfunction!(bert_aggregate_cells_py, m)?)?;
    m.add_function(wrap_pyfunction!(bert_module_cells_py, m)?)?;
    Ok(())
}
