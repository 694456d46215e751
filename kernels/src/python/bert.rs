//! Python binding of the BERT encoder ([`crate::bert`]).
//!
//! Weights come as lists of float32 arrays in a fixed order (see [`EMBEDDING_NAMES`] and
//! [`LAYER_NAMES`]), read in place; a wrong dtype, number of dimensions or a non-contiguous
//! array is refused with an error naming the weight. Results are new arrays owned by numpy.

use numpy::ndarray::Array2;
use numpy::{IntoPyArray, PyArrayDyn, PyReadonlyArray1, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use super::genohoption::{attention_mode, GhArgs};
use super::{array1, describe, slice1, threads};
use crate::bert::{
    bert_forward, Activation, BatchOutput, Bert, Embeddings, Layer, Linear, Norm, Pool, PoolMode,
    Wanted,
};
use crate::genohoption::AttentionMode;
use crate::matrix::{Mat, Ragged, TokenId};

/// The arrays of `embeddings`, in order.
const EMBEDDING_NAMES: [(&str, usize); 5] = [
    ("word_embeddings", 2),
    ("position_embeddings", 2),
    ("token_type_embeddings[0]", 1),
    ("embeddings LayerNorm weight", 1),
    ("embeddings LayerNorm bias", 1),
];

/// The arrays of each entry of `layers`, in order.
const LAYER_NAMES: [(&str, usize); 12] = [
    ("query/key/value weight", 2),
    ("query/key/value bias", 1),
    ("attention output weight", 2),
    ("attention output bias", 1),
    ("attention LayerNorm weight", 1),
    ("attention LayerNorm bias", 1),
    ("intermediate weight", 2),
    ("intermediate bias", 1),
    ("output weight", 2),
    ("output bias", 1),
    ("output LayerNorm weight", 1),
    ("output LayerNorm bias", 1),
];

/// A float32 array of `ndim` dimensions, borrowed.
fn weight<'py>(
    name: &str,
    ndim: usize,
    obj: &Bound<'py, PyAny>,
) -> PyResult<PyReadonlyArrayDyn<'py, f32>> {
    let a = obj.extract::<PyReadonlyArrayDyn<'py, f32>>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name} must be a numpy array of dtype float32, got {}",
            describe(obj)
        ))
    })?;
    if a.ndim() != ndim {
        return Err(PyValueError::new_err(format!(
            "{name} must have {ndim} dimensions, got shape {:?}",
            a.shape()
        )));
    }
    if !a.is_c_contiguous() {
        return Err(PyValueError::new_err(format!(
            "{name} must be C-contiguous (use numpy.ascontiguousarray)"
        )));
    }
    Ok(a)
}

/// Borrows a list of arrays with the given names and dimensions.
fn weights<'py>(
    prefix: &str,
    names: &[(&str, usize)],
    list: &[Bound<'py, PyAny>],
) -> PyResult<Vec<PyReadonlyArrayDyn<'py, f32>>> {
    if list.len() != names.len() {
        return Err(PyValueError::new_err(format!(
            "{prefix} must hold {} arrays ({}), got {}",
            names.len(),
            names.iter().map(|n| n.0).collect::<Vec<_>>().join(", "),
            list.len()
        )));
    }
    names
        .iter()
        .zip(list)
        .map(|(&(n, ndim), obj)| weight(&format!("{prefix} {n}"), ndim, obj))
        .collect()
}

fn slice<'a>(a: &'a PyReadonlyArrayDyn<'_, f32>) -> PyResult<&'a [f32]> {
    a.as_slice()
        .map_err(|_| PyValueError::new_err("weights must be C-contiguous"))
}

fn mat<'a>(name: &str, a: &'a PyReadonlyArrayDyn<'_, f32>) -> PyResult<Mat<'a, f32>> {
    let s = a.shape();
    Ok(Mat::new(name, slice(a)?, s[0], s[1])?)
}

fn linear<'a>(
    name: &str,
    w: &'a PyReadonlyArrayDyn<'_, f32>,
    b: &'a PyReadonlyArrayDyn<'_, f32>,
) -> PyResult<Linear<'a>> {
    Ok(Linear {
        w: mat(name, w)?,
        b: slice(b)?,
    })
}

fn norm<'a>(
    g: &'a PyReadonlyArrayDyn<'_, f32>,
    b: &'a PyReadonlyArrayDyn<'_, f32>,
) -> PyResult<Norm<'a>> {
    Ok(Norm {
        gamma: slice(g)?,
        beta: slice(b)?,
    })
}

/// The weight arrays of a model, borrowed from the `embeddings` and `layers` lists.
pub(super) struct Weights<'py> {
    emb: Vec<PyReadonlyArrayDyn<'py, f32>>,
    layers: Vec<Vec<PyReadonlyArrayDyn<'py, f32>>>,
}

impl<'py> Weights<'py> {
    /// Borrows every array, checking dtype, dimensions and layout.
    pub(super) fn borrow(
        embeddings: &[Bound<'py, PyAny>],
        layers: &[Vec<Bound<'py, PyAny>>],
    ) -> PyResult<Self> {
        Ok(Self {
            emb: weights("embeddings", &EMBEDDING_NAMES, embeddings)?,
            layers: layers
                .iter()
                .enumerate()
                .map(|(i, l)| weights(&format!("layers[{i}]"), &LAYER_NAMES, l))
                .collect::<PyResult<Vec<_>>>()?,
        })
    }

    /// The model over these arrays (shapes and values are checked by the kernels), attending
    /// as `attention` says.
    pub(super) fn model<'a>(
        &'a self,
        n_heads: usize,
        activation: &str,
        eps: f64,
        attention: AttentionMode<'a>,
    ) -> PyResult<Bert<'a>> {
        let act = Activation::from_name(activation)?;
        let mut m = model(&self.emb, &self.layers, n_heads, act, eps as f32)?;
        m.attention = attention;
        Ok(m)
    }
}

/// The model over borrowed arrays.
fn model<'a>(
    emb: &'a [PyReadonlyArrayDyn<'_, f32>],
    layers: &'a [Vec<PyReadonlyArrayDyn<'_, f32>>],
    n_heads: usize,
    activation: Activation,
    eps: f32,
) -> PyResult<Bert<'a>> {
    let layers = layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let name = |what: &str| format!("layers[{i}] {what}");
            Ok(Layer {
                qkv: linear(&name("query/key/value weight"), &l[0], &l[1])?,
                attn_out: linear(&name("attention output weight"), &l[2], &l[3])?,
                attn_norm: norm(&l[4], &l[5])?,
                ffn_in: linear(&name("intermediate weight"), &l[6], &l[7])?,
                ffn_out: linear(&name("output weight"), &l[8], &l[9])?,
                out_norm: norm(&l[10], &l[11])?,
            })
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok(Bert {
        embeddings: Embeddings {
            word: mat("word_embeddings", &emb[0])?,
            position: mat("position_embeddings", &emb[1])?,
            token_type: slice(&emb[2])?,
            norm: norm(&emb[3], &emb[4])?,
        },
        layers,
        n_heads,
        activation,
        eps,
        attention: AttentionMode::Dense,
    })
}

fn run<I: TokenId + numpy::Element>(
    py: Python<'_>,
    tokens: &Bound<'_, PyAny>,
    offsets: &[i64],
    model: &Bert<'_>,
    wanted: &Wanted,
    n_threads: usize,
) -> PyResult<BatchOutput> {
    let t = array1::<I>("tokens", "int32 or int64", tokens)?;
    let cells = Ragged {
        tokens: slice1("tokens", &t)?,
        offsets,
    };
    Ok(py.detach(|| bert_forward(cells, model, wanted, n_threads))?)
}

fn pool_arg(
    pool: &str,
    layer: Option<usize>,
    skip_first: usize,
    skip_last: usize,
) -> PyResult<Option<Pool>> {
    let mode = match pool {
        "mean" => PoolMode::Mean {
            skip_first,
            skip_last,
        },
        "first" => PoolMode::First,
        other => {
            return Err(PyValueError::new_err(format!(
                "pool must be 'mean' or 'first', got {other:?}"
            )))
        }
    };
    Ok(layer.map(|layer| Pool { layer, mode }))
}

/// bert_forward(tokens, offsets, embeddings, layers, n_heads, activation, layer_norm_eps, *,
///              hidden_layers=(), pool_layer=None, pool="mean", skip_first=0, skip_last=0,
///              attention_layers=(), per_head=False, n_threads=1, genohoption=None)
///
/// BERT encoder of many cells (float32). Cell c's input ids are tokens[offsets[c]:offsets[c+1]]
/// (int32 or int64; offsets int64). Returns a dict: "hidden" (list of (n_tokens, d) arrays,
/// one per hidden_layers entry, 0 = embedding output), "pooled" ((n_cells, d) or None),
/// "attention" (list of flat arrays, one per attention_layers entry: cell c's
/// (heads, n, n) or (n, n) block at attention_offsets[c]:attention_offsets[c+1]) and
/// "attention_offsets" (int64, n_cells + 1). With `genohoption` (a dict: prior `indptr`,
/// `indices`, `diffusion`, `alpha`, `t`, `iterations`) every layer attends GenoHoption's
/// way, and the attention returned is each head's diffusion matrix.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (
    tokens, offsets, embeddings, layers, n_heads, activation, layer_norm_eps, *,
    hidden_layers = Vec::new(), pool_layer = None, pool = "mean", skip_first = 0, skip_last = 0,
    attention_layers = Vec::new(), per_head = false, n_threads = 1, genohoption = None
))]
#[pyo3(name = "bert_forward")]
fn bert_forward_py<'py>(
    py: Python<'py>,
    tokens: &Bound<'py, PyAny>,
    offsets: &Bound<'py, PyAny>,
    embeddings: Vec<Bound<'py, PyAny>>,
    layers: Vec<Vec<Bound<'py, PyAny>>>,
    n_heads: usize,
    activation: &str,
    layer_norm_eps: f64,
    hidden_layers: Vec<usize>,
    pool_layer: Option<usize>,
    pool: &str,
    skip_first: usize,
    skip_last: usize,
    attention_layers: Vec<usize>,
    per_head: bool,
    n_threads: usize,
    genohoption: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let n_threads = threads(n_threads)?;
    let wanted = Wanted {
        hidden: hidden_layers,
        pool: pool_arg(pool, pool_layer, skip_first, skip_last)?,
        attention: attention_layers,
        per_head,
    };
    let w = Weights::borrow(&embeddings, &layers)?;
    let gh = genohoption.map(GhArgs::extract).transpose()?;
    let m = w.model(
        n_heads,
        activation,
        layer_norm_eps,
        attention_mode(gh.as_ref())?,
    )?;
    let offs: PyReadonlyArray1<'py, i64> = array1::<i64>("offsets", "int64", offsets)?;
    let offs = slice1("offsets", &offs)?;
    let out = if tokens.extract::<PyReadonlyArray1<'py, i32>>().is_ok() {
        run::<i32>(py, tokens, offs, &m, &wanted, n_threads)?
    } else {
        run::<i64>(py, tokens, offs, &m, &wanted, n_threads)?
    };
    let d = m.d();
    let dict = PyDict::new(py);
    let hidden = PyList::empty(py);
    for h in out.hidden {
        let rows = h.len() / d;
        hidden.append(to_2d(py, h, rows, d)?)?;
    }
    dict.set_item("hidden", hidden)?;
    match out.pooled {
        Some(p) => {
            let rows = p.len() / d;
            dict.set_item("pooled", to_2d(py, p, rows, d)?)?
        }
        None => dict.set_item("pooled", py.None())?,
    }
    let att = PyList::empty(py);
    for a in out.attention {
        att.append(a.into_pyarray(py))?;
    }
    dict.set_item("attention", att)?;
    let offsets: Vec<i64> = out.attention_offsets.iter().map(|&o| o as i64).collect();
    dict.set_item("attention_offsets", offsets.into_pyarray(py))?;
    Ok(dict)
}

fn to_2d<'py>(
    py: Python<'py>,
    data: Vec<f32>,
    rows: usize,
    cols: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let a = Array2::from_shape_vec((rows, cols), data)
        .map_err(|e| PyValueError::new_err(format!("internal shape error: {e}")))?;
    let a: Bound<'py, PyArrayDyn<f32>> = a.into_dyn().into_pyarray(py);
    Ok(a.into_any())
}

/// Adds the functions of this file to the module.
pub(super) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(bert_forward_py, m)?)?;
    Ok(())
}
