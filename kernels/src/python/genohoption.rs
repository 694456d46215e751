//! Python bindings of GenoHoption ([`crate::genohoption`]): one cell's attention over a
//! given graph, Seq2Graph, and the study-model kernels over many cells. The checkpoint
//! kernels (`bert_forward`, `bert_aggregate_cells`, `bert_module_cells`) take the same
//! `genohoption` dict as a keyword argument.
//!
//! The `genohoption` argument is a dict: `indptr`, `indices` (int64, the prior over token
//! ids as a CSR pattern: row `t` lists the tokens `t` attends to), `diffusion` (`"ppr"` or
//! `"heat"`), `alpha`, `t` and `iterations`.

use numpy::ndarray::Array3;
use numpy::{Element, IntoPyArray, PyReadonlyArray1};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::aggregate::{module_arrays, running_sums, ModuleArrays, SumsPair};
use super::attention::{array2, mat, to_numpy, Float};
use super::layer::{by_layer_dtypes, EditArrays, LayerArgs};
use super::perturb::EditEffects;
use super::{array1, has_dtype, slice1, threads};
use crate::aggregate::{ModuleSumsMut, SumsMut, Universe};
use crate::genohoption::aggregate::{
    mha_genohoption_aggregate_cells, mha_genohoption_module_cells, mha_genohoption_pool_cells,
};
use crate::genohoption::perturb::mha_genohoption_edit_effects;
use crate::genohoption::{
    genohoption_attention, AttentionMode, CellGraph, GenoHoption, GraphScratch, Params, Prior,
};
use crate::matrix::{Ragged, TokenId};

/// The keys of a `genohoption` dict.
const KEYS: [&str; 6] = ["indptr", "indices", "diffusion", "alpha", "t", "iterations"];

/// A `genohoption` dict, its arrays borrowed.
pub(super) struct GhArgs<'py> {
    indptr: PyReadonlyArray1<'py, i64>,
    indices: PyReadonlyArray1<'py, i64>,
    params: Params,
}

impl<'py> GhArgs<'py> {
    /// Reads and checks a `genohoption` dict.
    pub(super) fn extract(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        let dict = obj.cast::<PyDict>().map_err(|_| {
            PyTypeError::new_err(format!(
                "genohoption must be a dict with keys {}, got {}",
                KEYS.join(", "),
                obj.get_type()
            ))
        })?;
        for key in dict.keys() {
            let k: String = key.str()?.to_string();
            if !KEYS.contains(&k.as_str()) {
                return Err(PyValueError::new_err(format!(
                    "genohoption has an unknown key {k:?} (expected {})",
                    KEYS.join(", ")
                )));
            }
        }
        let get = |key: &str| {
            dict.get_item(key)?
                .ok_or_else(|| PyValueError::new_err(format!("genohoption lacks the key {key:?}")))
        };
        let indptr = array1::<i64>("genohoption['indptr']", "int64", &get("indptr")?)?;
        let indices = array1::<i64>("genohoption['indices']", "int64", &get("indices")?)?;
        let diffusion: String = typed(get("diffusion")?.extract(), "diffusion", "a string")?;
        let alpha: f64 = typed(get("alpha")?.extract(), "alpha", "a float")?;
        let t: f64 = typed(get("t")?.extract(), "t", "a float")?;
        let iterations: usize = typed(
            get("iterations")?.extract(),
            "iterations",
            "an integer >= 0",
        )?;
        let params = Params::from_name(&diffusion, alpha, t, iterations)?;
        Ok(Self {
            indptr,
            indices,
            params,
        })
    }

    /// The configuration over the borrowed arrays.
    pub(super) fn get(&self) -> PyResult<GenoHoption<'_>> {
        Ok(GenoHoption {
            prior: Prior {
                indptr: slice1("genohoption['indptr']", &self.indptr)?,
                indices: slice1("genohoption['indices']", &self.indices)?,
            },
            params: self.params,
        })
    }
}

/// A value of a `genohoption` dict, or a `TypeError` naming the key.
fn typed<T>(r: PyResult<T>, key: &str, what: &str) -> PyResult<T> {
    r.map_err(|e| PyTypeError::new_err(format!("genohoption[{key:?}] must be {what} ({e})")))
}

/// The attention mode of an optional `genohoption` dict.
pub(super) fn attention_mode<'a>(gh: Option<&'a GhArgs<'_>>) -> PyResult<AttentionMode<'a>> {
    Ok(match gh {
        None => AttentionMode::Dense,
        Some(g) => AttentionMode::GenoHoption(g.get()?),
    })
}

/// A prior given as two int64 arrays.
fn prior<'a>(
    indptr: &'a PyReadonlyArray1<'_, i64>,
    indices: &'a PyReadonlyArray1<'_, i64>,
) -> PyResult<Prior<'a>> {
    Ok(Prior {
        indptr: slice1("prior_indptr", indptr)?,
        indices: slice1("prior_indices", indices)?,
    })
}

#[allow(clippy::too_many_arguments)]
fn attention_impl<'py, T: Float>(
    py: Python<'py>,
    (queries, keys, values): (&Bound<'py, PyAny>, &Bound<'py, PyAny>, &Bound<'py, PyAny>),
    graph: &CellGraph,
    n_heads: usize,
    params: &Params,
    return_weights: bool,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let qa = array2::<T>("queries", "queries", queries)?;
    let ka = array2::<T>("keys", "queries", keys)?;
    let va = array2::<T>("values", "queries", values)?;
    let (q, k, v) = (mat("queries", &qa)?, mat("keys", &ka)?, mat("values", &va)?);
    let (n, d) = (q.rows, q.cols);
    for (name, m) in [("keys", &k), ("values", &v)] {
        if (m.rows, m.cols) != (n, d) {
            return Err(PyValueError::new_err(format!(
                "{name} must have the shape of queries ({n}, {d}), got ({}, {})",
                m.rows, m.cols
            )));
        }
    }
    let r = py.detach(|| {
        genohoption_attention(
            q.data,
            k.data,
            v.data,
            (n, d),
            n_heads,
            graph,
            params,
            return_weights,
            n_threads,
        )
    })?;
    let out = to_numpy(py, r.output, n, d)?;
    match r.weights {
        None => Ok(out),
        Some(w) => {
            let w = Array3::from_shape_vec((n_heads, n, n), w)
                .map_err(|e| PyValueError::new_err(format!("internal shape error: {e}")))?;
            Ok((out, w.into_pyarray(py)).into_pyobject(py)?.into_any())
        }
    }
}

/// genohoption_attention(queries, keys, values, indptr, indices, n_heads, *, diffusion="ppr", alpha=0.25, t=5.0, iterations=6, return_weights=False, n_threads=1)
///
/// GenoHoption attention of one cell over a given graph among its n positions (CSR:
/// indices[indptr[i]:indptr[i+1]] are the positions i attends to; an empty row is a
/// self-loop). queries, keys, values: (n, d), float32 or float64; head h uses columns
/// h*dh .. (h+1)*dh, dh = d // n_heads. Returns the (n, d) output (columns past
/// n_heads*dh zero), or (output, (n_heads, n, n) diffusion matrices) when return_weights.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (
    queries, keys, values, indptr, indices, n_heads, *, diffusion = "ppr", alpha = 0.25,
    t = 5.0, iterations = 6, return_weights = false, n_threads = 1
))]
#[pyo3(name = "genohoption_attention")]
fn genohoption_attention_py<'py>(
    py: Python<'py>,
    queries: &Bound<'py, PyAny>,
    keys: &Bound<'py, PyAny>,
    values: &Bound<'py, PyAny>,
    indptr: &Bound<'py, PyAny>,
    indices: &Bound<'py, PyAny>,
    n_heads: usize,
    diffusion: &str,
    alpha: f64,
    t: f64,
    iterations: usize,
    return_weights: bool,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let n_threads = threads(n_threads)?;
    let params = Params::from_name(diffusion, alpha, t, iterations)?;
    let ip = array1::<i64>("indptr", "int64", indptr)?;
    let ix = array1::<i64>("indices", "int64", indices)?;
    let n = slice1("indptr", &ip)?.len().saturating_sub(1);
    let graph = CellGraph::from_csr(slice1("indptr", &ip)?, slice1("indices", &ix)?, n)?;
    let qkv = (queries, keys, values);
    by_float!(
        queries,
        attention_impl(py, qkv, &graph, n_heads, &params, return_weights, n_threads)
    )
}

/// `(indptr, indices)` int64 arrays as returned to Python.
type Csr<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

fn seq2graph_impl<'py, I: TokenId + Element>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    prior: &Prior<'_>,
) -> PyResult<Csr<'py>> {
    let toks = array1::<I>("tokens", "int32 or int64", tokens)?;
    let toks = slice1("tokens", &toks)?;
    let cells = Ragged {
        tokens: toks,
        offsets: &[0, toks.len() as i64],
    };
    cells.validate(prior.n())?;
    let mut g = CellGraph::default();
    g.build(toks, prior, &mut GraphScratch::default());
    let indptr: Vec<i64> = g.indptr().iter().map(|&x| x as i64).collect();
    let indices: Vec<i64> = g.indices().iter().map(|&x| x as i64).collect();
    Ok((
        indptr.into_pyarray(py).into_any(),
        indices.into_pyarray(py).into_any(),
    ))
}

/// seq2graph(tokens, prior_indptr, prior_indices)
///
/// Seq2Graph of one cell: the prior over token ids (int64 CSR pattern, row t = the tokens t
/// attends to) restricted to the cell's tokens (int32 or int64), with a self-loop on every
/// position; the prior's diagonal is ignored. Returns (indptr, indices), int64: the
/// positions each position attends to, ascending.
#[pyfunction]
#[pyo3(signature = (tokens, prior_indptr, prior_indices))]
#[pyo3(name = "seq2graph")]
fn seq2graph_py<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    prior_indptr: &Bound<'py, PyAny>,
    prior_indices: &Bound<'py, PyAny>,
) -> PyResult<Csr<'py>> {
    let ip = array1::<i64>("prior_indptr", "int64", prior_indptr)?;
    let ix = array1::<i64>("prior_indices", "int64", prior_indices)?;
    let p = prior(&ip, &ix)?;
    p.validate(p.n(), "token id")?;
    if has_dtype::<i64>(tokens) {
        seq2graph_impl::<i64>(py, tokens, &p)
    } else {
        seq2graph_impl::<i32>(py, tokens, &p)
    }
}

fn edges_impl<I: TokenId + Element>(
    py: Python<'_>,
    tokens: &Bound<'_, PyAny>,
    offsets: &[i64],
    prior: &Prior<'_>,
    n_threads: usize,
) -> PyResult<Vec<i64>> {
    use rayon::prelude::*;
    let toks = array1::<I>("tokens", "int32 or int64", tokens)?;
    let cells = Ragged {
        tokens: slice1("tokens", &toks)?,
        offsets,
    };
    cells.validate(prior.n())?;
    let out = py.detach(|| {
        crate::pool::install(n_threads, || {
            (0..cells.n_cells())
                .into_par_iter()
                .map_init(
                    || (CellGraph::default(), GraphScratch::default()),
                    |(g, s), c| {
                        g.build(cells.cell(c), prior, s);
                        g.n_edges() as i64
                    },
                )
                .collect()
        })
    })?;
    Ok(out)
}

/// seq2graph_edges(tokens, offsets, prior_indptr, prior_indices, *, n_threads=1)
///
/// Number of edges of each cell's Seq2Graph (self-loops included), int64 (n_cells,).
#[pyfunction]
#[pyo3(signature = (tokens, offsets, prior_indptr, prior_indices, *, n_threads = 1))]
#[pyo3(name = "seq2graph_edges")]
fn seq2graph_edges_py<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    prior_indptr: &Bound<'py, PyAny>,
    prior_indices: &Bound<'py, PyAny>,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let n_threads = threads(n_threads)?;
    let offs = array1::<i64>("offsets", "int64", offsets)?;
    let ip = array1::<i64>("prior_indptr", "int64", prior_indptr)?;
    let ix = array1::<i64>("prior_indices", "int64", prior_indices)?;
    let p = prior(&ip, &ix)?;
    p.validate(p.n(), "token id")?;
    let offs = slice1("offsets", &offs)?;
    let out = if has_dtype::<i64>(tokens) {
        edges_impl::<i64>(py, tokens, offs, &p, n_threads)?
    } else {
        edges_impl::<i32>(py, tokens, offs, &p, n_threads)?
    };
    Ok(out.into_pyarray(py).into_any())
}

/// The study-model arguments of a GenoHoption kernel.
struct MhaArgs<'a, 'py> {
    layer: LayerArgs<'a, 'py>,
    gh: GenoHoption<'a>,
    n_threads: usize,
}

fn encode_run<'py, T: Float, I: TokenId + Element>(
    py: Python<'py>,
    a: &MhaArgs<'_, 'py>,
    rank: bool,
) -> PyResult<Bound<'py, PyAny>> {
    a.layer.with::<T, I, _>(|cells, table, heads| {
        let (gh, n_threads) = (a.gh, a.n_threads);
        let out =
            py.detach(|| mha_genohoption_pool_cells(cells, table, heads, gh, rank, n_threads))?;
        to_numpy(py, out, cells.n_cells(), table.cols)
    })
}

/// mha_genohoption_encode_cells(tokens, offsets, table, w_q, w_k, w_v, n_heads, genohoption, *, rank_values=False, n_threads=1)
///
/// Study-model cell embeddings (before W_O) with GenoHoption attention: per cell (rows
/// tokens[offsets[c]:offsets[c+1]] of table), Seq2Graph over genohoption's prior, edge
/// softmax and diffusion per head, mean over positions of the concatenated heads; with
/// rank_values each token's value is scaled by ln((n + 1) / (i + 1)) at position i.
/// Returns (n_cells, d) of the table's dtype. Bit-identical for any n_threads.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (
    tokens, offsets, table, w_q, w_k, w_v, n_heads, genohoption, *, rank_values = false,
    n_threads = 1
))]
#[pyo3(name = "mha_genohoption_encode_cells")]
fn mha_genohoption_encode_cells_py<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    table: &Bound<'py, PyAny>,
    w_q: &Bound<'py, PyAny>,
    w_k: &Bound<'py, PyAny>,
    w_v: &Bound<'py, PyAny>,
    n_heads: usize,
    genohoption: &Bound<'py, PyAny>,
    rank_values: bool,
    n_threads: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let n_threads = threads(n_threads)?;
    let gh = GhArgs::extract(genohoption)?;
    let offs = array1::<i64>("offsets", "int64", offsets)?;
    let offsets = slice1("offsets", &offs)?;
    let args = MhaArgs {
        layer: LayerArgs::new(tokens, offsets, table, (w_q, w_k, Some(w_v)), n_heads),
        gh: gh.get()?,
        n_threads,
    };
    by_layer_dtypes!(args.layer, encode_run(py, &args, rank_values))
}

fn sums_run<T: Float, I: TokenId + Element>(
    py: Python<'_>,
    a: &MhaArgs<'_, '_>,
    universe: Universe<'_>,
    out: SumsMut<'_>,
) -> PyResult<()> {
    a.layer.with::<T, I, _>(|cells, table, heads| {
        let (gh, n_threads) = (a.gh, a.n_threads);
        py.detach(|| {
            mha_genohoption_aggregate_cells(cells, table, heads, gh, universe, out, n_threads)
        })?;
        Ok(())
    })
}

/// mha_genohoption_aggregate_cells(tokens, offsets, table, w_q, w_k, n_heads, universe, n_universe, genohoption, *, n_threads=1, sums=None, incoming=None)
///
/// mha_aggregate_cells with GenoHoption's effective multi-hop attention: per cell and head
/// the diffusion matrix M (of the edge softmax over the cell's Seq2Graph), averaged over
/// heads, summed over the universe: sums[u_i, u_j] += M[i, j], incoming[u_j] += sum_i M[i, j]
/// over all positions. Returns (sums (G, G), incoming (G,)) float64, added into in place
/// when given. Bit-identical for any n_threads and split of the cells into calls.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (
    tokens, offsets, table, w_q, w_k, n_heads, universe, n_universe, genohoption, *,
    n_threads = 1, sums = None, incoming = None
))]
#[pyo3(name = "mha_genohoption_aggregate_cells")]
fn mha_genohoption_aggregate_cells_py<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    table: &Bound<'py, PyAny>,
    w_q: &Bound<'py, PyAny>,
    w_k: &Bound<'py, PyAny>,
    n_heads: usize,
    universe: &Bound<'py, PyAny>,
    n_universe: usize,
    genohoption: &Bound<'py, PyAny>,
    n_threads: usize,
    sums: Option<&Bound<'py, PyAny>>,
    incoming: Option<&Bound<'py, PyAny>>,
) -> PyResult<SumsPair<'py>> {
    let n_threads = threads(n_threads)?;
    let gh = GhArgs::extract(genohoption)?;
    let offs = array1::<i64>("offsets", "int64", offsets)?;
    let offsets = slice1("offsets", &offs)?;
    let uni = array1::<i64>("universe", "int64", universe)?;
    let universe = Universe {
        index: slice1("universe", &uni)?,
        n: n_universe,
    };
    let args = MhaArgs {
        layer: LayerArgs::new(tokens, offsets, table, (w_q, w_k, None), n_heads),
        gh: gh.get()?,
        n_threads,
    };
    running_sums(py, n_universe, sums, incoming, |out| {
        by_layer_dtypes!(args.layer, sums_run(py, &args, universe, out))
    })
}

fn modules_run<T: Float, I: TokenId + Element>(
    py: Python<'_>,
    a: &MhaArgs<'_, '_>,
    universe: Universe<'_>,
    (module, n_modules): (&[i64], usize),
    out: ModuleSumsMut<'_>,
) -> PyResult<()> {
    a.layer.with::<T, I, _>(|cells, table, heads| {
        let (gh, n_threads) = (a.gh, a.n_threads);
        py.detach(|| {
            mha_genohoption_module_cells(
                cells, table, heads, gh, universe, module, n_modules, out, n_threads,
            )
        })?;
        Ok(())
    })
}

/// mha_genohoption_module_cells(tokens, offsets, table, w_q, w_k, n_heads, universe, modules, n_modules, genohoption, *, n_threads=1)
///
/// mha_module_cells with GenoHoption's effective multi-hop attention (as in
/// mha_genohoption_aggregate_cells). Returns (sums (n_cells, n_modules) float64, pairs
/// (n_cells, n_modules) int64). Bit-identical for any n_threads.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (
    tokens, offsets, table, w_q, w_k, n_heads, universe, modules, n_modules, genohoption, *,
    n_threads = 1
))]
#[pyo3(name = "mha_genohoption_module_cells")]
fn mha_genohoption_module_cells_py<'py>(
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
    genohoption: &Bound<'py, PyAny>,
    n_threads: usize,
) -> PyResult<ModuleArrays<'py>> {
    let n_threads = threads(n_threads)?;
    let gh = GhArgs::extract(genohoption)?;
    let offs = array1::<i64>("offsets", "int64", offsets)?;
    let uni = array1::<i64>("universe", "int64", universe)?;
    let mods = array1::<i64>("modules", "int64", modules)?;
    let module = slice1("modules", &mods)?;
    let universe = Universe {
        index: slice1("universe", &uni)?,
        n: module.len(),
    };
    let offsets = slice1("offsets", &offs)?;
    let args = MhaArgs {
        layer: LayerArgs::new(tokens, offsets, table, (w_q, w_k, None), n_heads),
        gh: gh.get()?,
        n_threads,
    };
    let n_cells = offsets.len().saturating_sub(1);
    module_arrays(py, n_cells, n_modules, |out| {
        by_layer_dtypes!(
            args.layer,
            modules_run(py, &args, universe, (module, n_modules), out)
        )
    })
}

/// mha_genohoption_edit_effects(tokens, offsets, table, w_q, w_k, w_v, n_heads, edit_cell, edit_remove, edit_add, edit_exclude, genohoption, *, rank_values=False, edit_move=None, n_threads=1)
///
/// mha_edit_effects with GenoHoption attention: every edit that removes or adds a key
/// re-runs the cell's GenoHoption attention over the edited tokens (the added token last).
/// int64 offsets and edit arrays; dtypes otherwise as for mha_edit_effects. With rank_values,
/// values are scaled by their rank weight and edit_move (int64, or -1) moves the token at
/// exclude to a new position, as for mha_edit_effects. Returns (original, perturbed), each
/// (n_edits, d), before W_O. Bit-identical for any n_threads.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (
    tokens, offsets, table, w_q, w_k, w_v, n_heads, edit_cell, edit_remove, edit_add,
    edit_exclude, genohoption, *, rank_values = false, edit_move = None, n_threads = 1
))]
#[pyo3(name = "mha_genohoption_edit_effects")]
fn mha_genohoption_edit_effects_py<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    table: &Bound<'py, PyAny>,
    w_q: &Bound<'py, PyAny>,
    w_k: &Bound<'py, PyAny>,
    w_v: &Bound<'py, PyAny>,
    n_heads: usize,
    edit_cell: &Bound<'py, PyAny>,
    edit_remove: &Bound<'py, PyAny>,
    edit_add: &Bound<'py, PyAny>,
    edit_exclude: &Bound<'py, PyAny>,
    genohoption: &Bound<'py, PyAny>,
    rank_values: bool,
    edit_move: Option<&Bound<'py, PyAny>>,
    n_threads: usize,
) -> PyResult<EditEffects<'py>> {
    let n_threads = threads(n_threads)?;
    let gh = GhArgs::extract(genohoption)?;
    let offs = array1::<i64>("offsets", "int64", offsets)?;
    let offsets = slice1("offsets", &offs)?;
    let args = MhaArgs {
        layer: LayerArgs::new(tokens, offsets, table, (w_q, w_k, Some(w_v)), n_heads),
        gh: gh.get()?,
        n_threads,
    };
    let edits = EditArrays::extract([edit_cell, edit_remove, edit_add, edit_exclude], edit_move)?;
    by_layer_dtypes!(args.layer, edits_run(py, &args, &edits, rank_values))
}

fn edits_run<'py, T: Float, I: TokenId + Element>(
    py: Python<'py>,
    a: &MhaArgs<'_, 'py>,
    edits: &EditArrays<'_>,
    rank_values: bool,
) -> PyResult<EditEffects<'py>> {
    let (edits, moved) = edits.view(rank_values)?;
    a.layer.with::<T, I, _>(|cells, table, heads| {
        let (gh, n_threads) = (a.gh, a.n_threads);
        let (orig, pert) = py.detach(|| {
            mha_genohoption_edit_effects(cells, table, heads, gh, edits, moved, n_threads)
        })?;
        let (n, d) = (edits.cell.len(), table.cols);
        Ok((to_numpy(py, orig, n, d)?, to_numpy(py, pert, n, d)?))
    })
}

/// Adds the functions of this file to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(genohoption_attention_py, m)?)?;
    m.add_function(wrap_pyfunction!(seq2graph_py, m)?)?;
    m.add_function(wrap_pyfunction!(seq2graph_edges_py, m)?)?;
    m.add_function(wrap_pyfunction!(mha_genohoption_encode_cells_py, m)?)?;
    m.add_function(wrap_pyfunction!(mha_genohoption_aggregate_cells_py, m)?)?;
    m.add_function(wrap_pyfunction!(mha_genohoption_module_cells_py, m)?)?;
    m.add_function(wrap_pyfunction!(mha_genohoption_edit_effects_py, m)?)?;
    Ok(())
}
