"""Model input ids for a Geneformer checkpoint from our ranked token lists.

Geneformer V1 models read at most 2,048 gene tokens and no special tokens; V2 models read
``<cls>``, at most 4,094 gene tokens and ``<eos>`` (4,096 in all), with ids from their own
token dictionary (``token_dictionary_gc104M.pkl``). Our tokens (:mod:`geneattn.tokenize`)
are ids of the dictionary they were made with, and ``TokenizedCells.vocabulary`` names the
gene of every id, so they map onto any checkpoint's dictionary by gene.

Ranking follows the medians of the dictionary the tokens were made with: for V2 inputs that
match Geneformer's own tokenizer exactly, tokenize with the V2 token dictionary and gene
medians (:func:`geneattn.tokenize.tokenize_counts` takes both as mappings). Mapping V1
tokens into a V2 dictionary keeps the V1 ranking and drops genes V2 does not know.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from geneattn.errors import InputError

#: Names of the special tokens in Geneformer's dictionaries.
CLS, EOS, PAD = "<cls>", "<eos>", "<pad>"


def token_remap(vocabulary: np.ndarray, token_dictionary: Mapping[str, int]) -> np.ndarray:
    """For each of our token ids, the checkpoint's id of the same gene, or -1.

    Parameters
    ----------
    vocabulary
        Gene id (or special name) of each of our token ids.
    token_dictionary
        The checkpoint's ``{gene_id: token id}``.

    Returns
    -------
    np.ndarray
        int64, one entry per vocabulary entry.
    """
    return np.fromiter(
        (token_dictionary.get(str(g), -1) for g in vocabulary),
        dtype=np.int64,
        count=len(vocabulary),
    )


def check_ragged(tokens: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``tokens`` as int32/int64 and ``offsets`` as int64, both C-contiguous and consistent.

    Raises
    ------
    InputError
        When the offsets do not describe the tokens.
    """
    t = np.asarray(tokens)
    if t.ndim != 1 or not (t.size == 0 or np.issubdtype(t.dtype, np.integer)):
        raise InputError(f"tokens must be a 1-D integer array, got {t.dtype} {t.shape}")
    if t.dtype not in (np.int32, np.int64):
        t = t.astype(np.int64)
    o = np.asarray(offsets)
    if o.ndim != 1 or o.size == 0 or not np.issubdtype(o.dtype, np.integer):
        raise InputError("offsets must be a 1-D integer array with n_cells + 1 entries")
    o = o.astype(np.int64)
    if o[0] != 0 or o[-1] != t.size or (np.diff(o) < 0).any():
        raise InputError(
            f"offsets must rise from 0 to the number of tokens ({t.size}), got {o[0]} .. {o[-1]}"
        )
    return np.ascontiguousarray(t), np.ascontiguousarray(o)


def model_input_ids(
    tokens: np.ndarray,
    offsets: np.ndarray,
    *,
    max_len: int,
    cls_id: int | None = None,
    eos_id: int | None = None,
    remap: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Ranked token lists as model input ids: mapped, truncated, special tokens added.

    Parameters
    ----------
    tokens, offsets
        Ragged ranked tokens: cell ``c`` holds ``tokens[offsets[c]:offsets[c + 1]]``, most
        highly ranked first.
    max_len
        The model's input size (``max_position_embeddings``); special tokens count.
    cls_id, eos_id
        Ids of ``<cls>`` (put first) and ``<eos>`` (put last), or None (V1: neither).
    remap
        Model id of each of our token ids (-1: not in the model's dictionary, dropped), or
        None when the tokens already are model ids.

    Returns
    -------
    tuple[np.ndarray, np.ndarray]
        int32 ``ids`` and int64 ``offsets`` (``n_cells + 1``). Every cell keeps its first
        ``max_len`` mapped genes (``max_len - 2`` with ``<cls>`` and ``<eos>``), as
        Geneformer's tokenizer truncates.
    """
    t, o = check_ragged(tokens, offsets)
    n_cells = o.size - 1
    cell = np.repeat(np.arange(n_cells), np.diff(o))
    ids = t.astype(np.int64)
    if remap is not None:
        remap = np.asarray(remap, dtype=np.int64)
        if t.size and (t.min() < 0 or t.max() >= remap.size):
            raise InputError(f"tokens must be ids 0 .. {remap.size - 1} of the vocabulary")
        ids = remap[t]
    keep = ids >= 0
    ids, cell = ids[keep], cell[keep]
    n_special = int(cls_id is not None) + int(eos_id is not None)
    room = max_len - n_special
    if room < 0:
        raise InputError(f"max_len {max_len} leaves no room for the special tokens")
    starts = np.searchsorted(cell, np.arange(n_cells))
    rank = np.arange(ids.size) - starts[cell]
    ids, cell = ids[rank < room], cell[rank < room]
    lengths = np.bincount(cell, minlength=n_cells) + n_special
    out_offsets = np.zeros(n_cells + 1, dtype=np.int64)
    np.cumsum(lengths, out=out_offsets[1:])
    out = np.empty(int(out_offsets[-1]), dtype=np.int64)
    first = out_offsets[:-1] + (cls_id is not None)
    pos = first[cell] + (np.arange(ids.size) - np.searchsorted(cell, np.arange(n_cells))[cell])
    out[pos] = ids
    if cls_id is not None:
        out[out_offsets[:-1]] = cls_id
    if eos_id is not None:
        out[out_offsets[1:] - 1] = eos_id
    if out.size and (out.min() < np.iinfo(np.int32).min or out.max() > np.iinfo(np.int32).max):
        raise InputError("token ids do not fit in int32")
    return out.astype(np.int32), out_offsets
