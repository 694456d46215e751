//! Python binding of the perturbation kernel (float64 weights, int64 tokens).

use pyo3::prelude::*;

use super::attention::{array2, mat, to_numpy};
use super::{array1, slice1, threads};
use crate::matrix::Ragged;
use crate::multihead::Heads;
use crate::perturb::{mha_edit_effects_ranked, Edits};

/// mha_edit_effects(tokens, offsets, table, w_q, w_k, w_v, n_heads, edit_cell, edit_remove, edit_add, edit_exclude, *, rank_values=False, edit_move=None, n_threads=1)
///
/// Mean-pooled concatenated heads (before W_O) of each edit of a cell, original and
/// perturbed, without recomputing the layer: returns (original, perturbed), each
/// (n_edits, d). Edits are sorted by cell; remove/exclude are positions in the cell or -1,
/// add a token id or -1. With rank_values, values are scaled by their rank weight and
/// edit_move (int64, or -1) moves the key at exclude to a new position.
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
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let n_threads = threads(n_threads)?;
    let toks = array1::<i64>("tokens", "int64", tokens)?;
    let offs = array1::<i64>("offsets", "int64", offsets)?;
    let ta = array2::<f64>("table", "table", table)?;
    let qa = array2::<f64>("w_q", "table", w_q)?;
    let ka = array2::<f64>("w_k", "table", w_k)?;
    let va = array2::<f64>("w_v", "table", w_v)?;
    let e = [edit_cell, edit_remove, edit_add, edit_exclude];
    let names = ["edit_cell", "edit_remove", "edit_add", "edit_exclude"];
    let arrays = e
        .iter()
        .zip(names)
        .map(|(a, n)| array1::<i64>(n, "int64", a))
        .collect::<PyResult<Vec<_>>>()?;
    let s = arrays
        .iter()
        .zip(names)
        .map(|(a, n)| slice1(n, a))
        .collect::<PyResult<Vec<_>>>()?;
    let edits = Edits {
        cell: s[0],
        remove: s[1],
        add: s[2],
        exclude: s[3],
    };
    let cells = Ragged {
        tokens: slice1("tokens", &toks)?,
        offsets: slice1("offsets", &offs)?,
    };
    let table = mat("table", &ta)?;
    let heads = Heads {
        w_q: mat("w_q", &qa)?,
        w_k: mat("w_k", &ka)?,
        w_v: Some(mat("w_v", &va)?),
        n_heads,
    };
    let d = table.cols;
    let move_array = edit_move
        .map(|a| array1::<i64>("edit_move", "int64", a))
        .transpose()?;
    let no_moves = vec![-1i64; edits.cell.len()];
    let moved: Option<&[i64]> = match (&move_array, rank_values) {
        (Some(a), true) => Some(slice1("edit_move", a)?),
        (None, true) => Some(&no_moves[..]),
        (Some(_), false) => {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "edit_move needs rank_values=True (an order-free model does not see moves)",
            ))
        }
        (None, false) => None,
    };
    let (orig, pert) =
        py.detach(|| mha_edit_effects_ranked(cells, table, heads, edits, moved, n_threads))?;
    let n = edits.cell.len();
    Ok((to_numpy(py, orig, n, d)?, to_numpy(py, pert, n, d)?))
}

pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(mha_edit_effects_py, m)?)?;
    Ok(())
}
