//! Python binding of the perturbation kernel.

use numpy::Element;
use pyo3::prelude::*;

use super::attention::{to_numpy, Float};
use super::layer::{by_layer_dtypes, EditArrays, LayerArgs};
use super::{array1, slice1, threads};
use crate::matrix::TokenId;
use crate::perturb::mha_edit_effects_ranked;

/// `(original, perturbed)` embeddings of the edits as returned to Python.
pub(super) type EditEffects<'py> = (Bound<'py, PyAny>, Bound<'py, PyAny>);

fn run<'py, T: Float, I: TokenId + Element>(
    py: Python<'py>,
    layer: &LayerArgs<'_, 'py>,
    edits: &EditArrays<'_>,
    rank_values: bool,
    n_threads: usize,
) -> PyResult<EditEffects<'py>> {
    let (edits, moved) = edits.view(rank_values)?;
    layer.with::<T, I, _>(|cells, table, heads| {
        let (orig, pert) =
            py.detach(|| mha_edit_effects_ranked(cells, table, heads, edits, moved, n_threads))?;
        let (n, d) = (edits.cell.len(), table.cols);
        Ok((to_numpy(py, orig, n, d)?, to_numpy(py, pert, n, d)?))
    })
}

/// mha_edit_effects(tokens, offsets, table, w_q, w_k, w_v, n_heads, edit_cell, edit_remove, edit_add, edit_exclude, *, rank_values=False, edit_move=None, n_threads=1)
///
/// Mean-pooled concatenated heads (before W_O) of each edit of a cell, original and
/// perturbed, without recomputing the layer: returns (original, perturbed), each
/// (n_edits, d) of the table's dtype (float32 or float64; tokens int32 or int64). Edits
/// are sorted by cell; remove/exclude are positions in the cell or -1, add a token id or
/// -1. With rank_values, values are scaled by their rank weight and edit_move (int64, or
/// -1) moves the key at exclude to a new position.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (tokens, offsets, table, w_q, w_k, w_v, n_heads, edit_cell, edit_remove, edit_add, edit_exclude, *, rank_values = false, edit_move = None, n_threads = 1))]
#[pyo3(name = "mha_edit_effects")]
fn mha_edit_effects_py<'py>(
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
    rank_values: bool,
    edit_move: Option<&Bound<'py, PyAny>>,
    n_threads: usize,
) -> PyResult<EditEffects<'py>> {
    let n_threads = threads(n_threads)?;
    let offs = array1::<i64>("offsets", "int64", offsets)?;
    let offsets = slice1("offsets", &offs)?;
    let layer = LayerArgs::new(tokens, offsets, table, (w_q, w_k, Some(w_v)), n_heads);
    let edits = EditArrays::extract([edit_cell, edit_remove, edit_add, edit_exclude], edit_move)?;
    by_layer_dtypes!(layer, run(py, &layer, &edits, rank_values, n_threads))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(mha_edit_effects_py, m)?)?;
    Ok(())
}
