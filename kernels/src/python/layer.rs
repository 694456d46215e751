//! The arguments the study-model bindings share: ragged token ids with one layer's weights
//! ([`LayerArgs`]), and the edits of the perturbation kernels ([`EditArrays`]).

use numpy::{Element, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

use super::attention::{array2, mat, Float};
use super::{array1, slice1};
use crate::matrix::{Mat, Ragged, TokenId};
use crate::multihead::Heads;
use crate::perturb::Edits;

/// A C-contiguous 2-D array of dtype `T` as a matrix, kept borrowed in `keep`; `like` names
/// the argument that fixed the dtype.
pub(super) fn matrix<'a, 'py, T: Float>(
    name: &str,
    like: &str,
    obj: &Bound<'py, PyAny>,
    keep: &'a mut Option<PyReadonlyArray2<'py, T>>,
) -> PyResult<Mat<'a, T>> {
    mat(name, keep.insert(array2::<T>(name, like, obj)?))
}

/// A study model's layer as a kernel takes it: ragged token ids (int32 or int64) and the
/// token table with its projections (float32 or float64, the table's dtype), not yet
/// borrowed. [`by_layer_dtypes!`] picks the dtypes, [`LayerArgs::with`] borrows them.
pub(super) struct LayerArgs<'a, 'py> {
    pub(super) tokens: &'a Bound<'py, PyAny>,
    pub(super) offsets: &'a [i64],
    pub(super) table: &'a Bound<'py, PyAny>,
    pub(super) w_q: &'a Bound<'py, PyAny>,
    pub(super) w_k: &'a Bound<'py, PyAny>,
    pub(super) w_v: Option<&'a Bound<'py, PyAny>>,
    pub(super) n_heads: usize,
}

impl<'a, 'py> LayerArgs<'a, 'py> {
    /// The arguments as a binding received them.
    pub(super) fn new(
        tokens: &'a Bound<'py, PyAny>,
        offsets: &'a [i64],
        table: &'a Bound<'py, PyAny>,
        (w_q, w_k, w_v): (
            &'a Bound<'py, PyAny>,
            &'a Bound<'py, PyAny>,
            Option<&'a Bound<'py, PyAny>>,
        ),
        n_heads: usize,
    ) -> Self {
        Self {
            tokens,
            offsets,
            table,
            w_q,
            w_k,
            w_v,
            n_heads,
        }
    }

    /// Borrows the token and weight arrays (checked, each error naming its argument) and
    /// calls `f` with the kernel's view of them.
    pub(super) fn with<T: Float, I: TokenId + Element, R>(
        &self,
        f: impl FnOnce(Ragged<'_, I>, Mat<'_, T>, Heads<'_, T>) -> PyResult<R>,
    ) -> PyResult<R> {
        let toks = array1::<I>("tokens", "int32 or int64", self.tokens)?;
        let (mut ta, mut qa, mut ka, mut va) = (None, None, None, None);
        let table = matrix::<T>("table", "table", self.table, &mut ta)?;
        let heads = Heads {
            w_q: matrix::<T>("w_q", "table", self.w_q, &mut qa)?,
            w_k: matrix::<T>("w_k", "table", self.w_k, &mut ka)?,
            w_v: match self.w_v {
                Some(w) => Some(matrix::<T>("w_v", "table", w, &mut va)?),
                None => None,
            },
            n_heads: self.n_heads,
        };
        let cells = Ragged {
            tokens: slice1("tokens", &toks)?,
            offsets: self.offsets,
        };
        f(cells, table, heads)
    }
}

/// Calls `run::<T, I>(...)` with `T` the float dtype of `layer.table` (float32, else
/// float64) and `I` the token dtype of `layer.tokens` (int64, else int32).
macro_rules! by_layer_dtypes {
    ($layer:expr, $run:ident ( $($arg:expr),* $(,)? )) => {
        match (
            $crate::python::has_dtype::<f32>($layer.table),
            $crate::python::has_dtype::<i64>($layer.tokens),
        ) {
            (true, false) => $run::<f32, i32>($($arg),*),
            (true, true) => $run::<f32, i64>($($arg),*),
            (false, false) => $run::<f64, i32>($($arg),*),
            (false, true) => $run::<f64, i64>($($arg),*),
        }
    };
}
pub(super) use by_layer_dtypes;

/// The edits of a perturbation call (int64 arrays), kept borrowed.
pub(super) struct EditArrays<'py> {
    /// `edit_cell`, `edit_remove`, `edit_add`, `edit_exclude`.
    arrays: [PyReadonlyArray1<'py, i64>; 4],
    moves: Option<PyReadonlyArray1<'py, i64>>,
    /// One `-1` per edit: no moves, for a rank-aware model given no `edit_move`.
    no_moves: Vec<i64>,
}

const EDIT_NAMES: [&str; 4] = ["edit_cell", "edit_remove", "edit_add", "edit_exclude"];

impl<'py> EditArrays<'py> {
    /// Reads the four edit arrays and the optional moves.
    pub(super) fn extract(
        [cell, remove, add, exclude]: [&Bound<'py, PyAny>; 4],
        moves: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Self> {
        let [c, r, a, e] = EDIT_NAMES;
        let arrays = [
            array1::<i64>(c, "int64", cell)?,
            array1::<i64>(r, "int64", remove)?,
            array1::<i64>(a, "int64", add)?,
            array1::<i64>(e, "int64", exclude)?,
        ];
        let moves = moves
            .map(|m| array1::<i64>("edit_move", "int64", m))
            .transpose()?;
        let no_moves = vec![-1i64; slice1(c, &arrays[0])?.len()];
        Ok(Self {
            arrays,
            moves,
            no_moves,
        })
    }

    /// The edits and, for a rank-aware model (`rank_values`), each edit's move (`-1`: none).
    pub(super) fn view(&self, rank_values: bool) -> PyResult<(Edits<'_>, Option<&[i64]>)> {
        let s = |k: usize| slice1(EDIT_NAMES[k], &self.arrays[k]);
        let edits = Edits {
            cell: s(0)?,
            remove: s(1)?,
            add: s(2)?,
            exclude: s(3)?,
        };
        let moved = match (&self.moves, rank_values) {
            (Some(a), true) => Some(slice1("edit_move", a)?),
            (None, true) => Some(&self.no_moves[..]),
            (Some(_), false) => {
                return Err(PyValueError::new_err(
                    "edit_move needs rank_values=True (an order-free model does not see moves)",
                ))
            }
            (None, false) => None,
        };
        Ok((edits, moved))
    }
}
