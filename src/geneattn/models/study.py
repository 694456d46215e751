"""Attention weights derived from the study itself (the default model of the workflow).

No package ships pretrained transformer weights, and the seed interfaces' random weights
(N(0, 0.02)) give near-uniform attention: modules built from them are noise. The default
model therefore keeps the Geneformer interface's multi-head attention and assigns it
study-derived weights, as the interface contract allows:

* ``_gene_embeddings``: each gene's loadings on the top ``d_model`` principal components of
  the study's log-normalised counts (scanpy PCA, zero-centred, seeded), each scaled by the
  component's standard deviation, then normalised to length ``sqrt(temperature * sqrt(d_h))``
  so that a gene's score with a perfectly co-expressed gene is ``temperature`` in every head
  that carries its signal;
* ``_w_q``, ``_w_k``, ``_w_v``, ``_w_o``: identity matrices.

Head ``h`` then scores genes ``i`` and ``j`` by the dot product of their loadings on
components ``h * d_h .. (h + 1) * d_h``: a gene attends to the genes of its cell that
co-vary with it across the study, in competition with every other gene the cell expresses.
Tokens that are not in the study get zero embeddings. A real pretrained checkpoint replaces
all of this when the user has one.

Rank (``value_rank="log"``, the default): the attention weights ignore order, but each
token's *value* is scaled by ``ln((n + 1) / (i + 1))`` at position ``i`` of the cell's
``n`` tokens (the log of its inverse rank quantile), so a cell embedding weighs its
highly ranked genes most, as expression does. This is what makes the embeddings carry cell
identity: on the demo, kNN label transfer of ``cluster_orig`` (balanced accuracy, 5-fold,
mean of 5 fold seeds) rises from 0.18 (order-free) to 0.26 (PCA of the log-normalised
universe genes: 0.25), and of CD4 vs CD8 from 0.59 to 0.76 (PCA 0.74). A rank edit
(inhibit, activate, overexpress) gives the moved gene's value the weight of its new position;
the other genes keep theirs (moving one gene shifts the others by one position, which is
left out so that every edit stays ``O(n d)``). Modules are unchanged: they come from the
attention weights alone.

With a GenoHoption prior (:func:`with_genohoption`, the workflow's ``attention.mode:
genohoption``) the same weights attend GenoHoption's way (seed 001): along the prior's edges
among the cell's genes, then ``K`` diffusion steps (:mod:`geneattn.models.genohoption`),
with the values rank-scaled as above; the embeddings, the attention sums (the effective
multi-hop attention), the module sums and the perturbations all use it, and
``params["attention"]`` records it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from geneattn.errors import InputError
from geneattn.models.protocol import TokenInputs

if TYPE_CHECKING:
    from collections.abc import Mapping

    from anndata import AnnData

    from geneattn.models.genohoption import TokenGraph
    from geneattn.tokenize import GeneIdKind, TokenizedCells

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class StudyModel:
    """Weights of a single-layer multi-head attention model; an
    :class:`~geneattn.models.protocol.AttentionModel`.

    Attributes
    ----------
    gene_embeddings
        ``(vocab_size, d_model)`` float64, indexed by token id.
    w_q, w_k, w_v, w_o
        ``(d_model, d_model)`` projections.
    n_heads
        Number of attention heads.
    params
        How the weights were made (JSON-serialisable).
    genohoption
        GenoHoption's prior over the token ids and diffusion, or None for dense attention.
    """

    gene_embeddings: np.ndarray
    w_q: np.ndarray
    w_k: np.ndarray
    w_v: np.ndarray
    w_o: np.ndarray
    n_heads: int
    params: dict
    genohoption: TokenGraph | None = None

    @property
    def d_model(self) -> int:
        """Embedding width."""
        return int(self.gene_embeddings.shape[1])

    def interface(self, *, n_threads: int = 1):
        """A :class:`~geneattn.GeneformerInterface` carrying these weights.

        Parameters
        ----------
        n_threads
            Rayon threads of the interface's kernels.

        Returns
        -------
        GeneformerInterface
            With ``n_genes`` = vocabulary size and the weights assigned.
        """
        from geneattn import GeneformerInterface

        model = GeneformerInterface(
            d_model=self.d_model,
            n_genes=self.gene_embeddings.shape[0],
            n_heads=self.n_heads,
            seed=int(self.params.get("seed", 42)),
        )
        model._gene_embeddings = self.gene_embeddings
        model._w_q, model._w_k, model._w_v, model._w_o = self.w_q, self.w_k, self.w_v, self.w_o
        model.n_threads = n_threads
        return model

    def embed(self, cells: TokenizedCells, *, n_threads: int = 1) -> np.ndarray:
        """Cell embeddings: mean-pooled multi-head attention output, ``(n_cells, d_model)``.

        Parameters
        ----------
        cells
            Tokenized cells (token ids index ``gene_embeddings``).
        n_threads
            Rayon threads.

        Returns
        -------
        np.ndarray
            float64 ``(n_cells, d_model)`` (:meth:`GeneformerInterface.encode_batch`, or
            ``mha_genohoption_encode_cells`` in GenoHoption mode).
        """
        if self.genohoption is not None:
            from geneattn import _kernels

            self._index(np.zeros(0, dtype=np.int64), cells, "")  # checks the cells' tokens
            table, w_q, w_k = self._weights()
            pooled = _kernels.mha_genohoption_encode_cells(
                np.ascontiguousarray(cells.tokens, dtype=np.int32),
                np.ascontiguousarray(cells.offsets, dtype=np.int64),
                table,
                w_q,
                w_k,
                np.ascontiguousarray(self.w_v, dtype=table.dtype),
                int(self.n_heads),
                self.genohoption.kernel_arg(),
                rank_values=self.value_rank != "none",
                n_threads=n_threads,
            )
            return pooled @ self.w_o
        if self.value_rank == "none":
            interface = self.interface(n_threads=n_threads)
            return interface.encode_batch(cells.tokens, cells.offsets, n_threads=n_threads)
        from geneattn import _kernels

        table = np.ascontiguousarray(self.gene_embeddings, dtype=np.float64)
        pooled = _kernels.mha_encode_cells(
            np.ascontiguousarray(cells.tokens, dtype=np.int64),
            np.ascontiguousarray(cells.offsets, dtype=np.int64),
            table,
            np.ascontiguousarray(self.w_q, dtype=np.float64),
            np.ascontiguousarray(self.w_k, dtype=np.float64),
            np.ascontiguousarray(self.w_v, dtype=np.float64),
            self.n_heads,
            rank_values=True,
            n_threads=n_threads,
        )
        return pooled @ self.w_o

    @property
    def value_rank(self) -> str:
        """``"log"``: each token's value is scaled by ``ln((n + 1) / (i + 1))`` (position
        ``i`` of ``n``), so cell embeddings and perturbations see ranks; ``"none"``: the
        order-free model (models saved before this option)."""
        return str(self.params.get("value_rank", "none"))

    def _index(self, tokens: np.ndarray, cells: TokenizedCells, what: str) -> np.ndarray:
        """int64 over the vocabulary: position of each of ``tokens``, -1 elsewhere; checks
        that ``tokens`` and the cells' tokens are in the vocabulary."""
        vocab = self.gene_embeddings.shape[0]
        tokens = np.asarray(tokens, dtype=np.int64)
        if len(tokens) and tokens.max() >= vocab:
            raise InputError(f"a {what} token is outside the model's vocabulary (0..{vocab - 1})")
        if len(cells.tokens) and int(cells.tokens.max()) >= vocab:
            raise InputError(
                f"token {int(cells.tokens.max())} is outside the model's vocabulary ({vocab} rows)"
            )
        index = np.full(vocab, -1, dtype=np.int64)
        index[tokens] = np.arange(len(tokens))
        return index

    def _weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        table = np.ascontiguousarray(self.gene_embeddings)
        w_q = np.ascontiguousarray(self.w_q, dtype=table.dtype)
        w_k = np.ascontiguousarray(self.w_k, dtype=table.dtype)
        return table, w_q, w_k

    def add_attention_sums(
        self,
        cells: TokenizedCells,
        universe: np.ndarray,
        sums: np.ndarray,
        incoming: np.ndarray,
        *,
        n_threads: int = 1,
    ) -> None:
        """Add the cells' head-averaged attention among ``universe`` into the sums.

        One Rust call (``mha_aggregate_cells``, or ``mha_genohoption_aggregate_cells`` with
        the effective multi-hop attention in GenoHoption mode); no per-cell matrix reaches
        Python, and the sums are bit-identical for any thread count.

        Parameters
        ----------
        cells
            The cells.
        universe
            Token ids of the universe genes, unique.
        sums, incoming
            ``(g, g)`` and ``(g,)`` float64 running sums, updated in place.
        n_threads
            Rayon threads.
        """
        from geneattn import _kernels

        index = self._index(universe, cells, "universe")
        table, w_q, w_k = self._weights()
        args = (
            np.ascontiguousarray(cells.tokens, dtype=np.int32),
            np.ascontiguousarray(cells.offsets, dtype=np.int64),
            table,
            w_q,
            w_k,
            int(self.n_heads),
            index,
            len(universe),
        )
        if self.genohoption is None:
            _kernels.mha_aggregate_cells(*args, n_threads=n_threads, sums=sums, incoming=incoming)
        else:
            _kernels.mha_genohoption_aggregate_cells(
                *args,
                self.genohoption.kernel_arg(),
                n_threads=n_threads,
                sums=sums,
                incoming=incoming,
            )

    def module_sums(
        self,
        cells: TokenizedCells,
        gene_tokens: np.ndarray,
        gene_columns: np.ndarray,
        n_modules: int,
        *,
        n_threads: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per cell and module, head-averaged attention among the module's genes and the
        number of their pairs (``mha_module_cells``).

        Parameters
        ----------
        cells
            The cells.
        gene_tokens
            Token ids of the module genes, unique.
        gene_columns
            Module column of each gene (-1: in no module).
        n_modules
            Number of module columns.
        n_threads
            Rayon threads.

        Returns
        -------
        tuple of np.ndarray
            ``sums`` float64 and ``pairs`` int64, ``(n_cells, n_modules)`` each.
        """
        from geneattn import _kernels

        index = self._index(gene_tokens, cells, "module gene")
        table, w_q, w_k = self._weights()
        args = (
            np.ascontiguousarray(cells.tokens, dtype=np.int32),
            np.ascontiguousarray(cells.offsets, dtype=np.int64),
            table,
            w_q,
            w_k,
            int(self.n_heads),
            index,
            np.asarray(gene_columns, dtype=np.int64),
            int(n_modules),
        )
        if self.genohoption is None:
            return _kernels.mha_module_cells(*args, n_threads=n_threads)
        return _kernels.mha_genohoption_module_cells(
            *args, self.genohoption.kernel_arg(), n_threads=n_threads
        )

    def token_inputs(self, cells: TokenizedCells) -> TokenInputs:
        """The cells' tokens as they are (the model reads our token ids, without limit)."""
        vocab = self.gene_embeddings.shape[0]
        ours = np.arange(len(cells.vocabulary), dtype=np.int64)
        return TokenInputs(
            ids=np.asarray(cells.tokens, dtype=np.int64),
            offsets=np.asarray(cells.offsets, dtype=np.int64),
            model_id=np.where(ours < vocab, ours, -1),
        )

    def token_states(
        self, ids: np.ndarray, offsets: np.ndarray, *, n_threads: int = 1
    ) -> np.ndarray:
        """Each token's multi-head attention output, dense or GenoHoption's (their mean over
        a cell is :meth:`embed`)."""
        from geneattn import _kernels

        ids = np.asarray(ids, dtype=np.int64)
        offsets = np.asarray(offsets, dtype=np.int64)
        interface = self.interface(n_threads=n_threads)
        out = np.zeros((len(ids), self.d_model))
        graph = None if self.genohoption is None else self.genohoption.kernel_arg()
        for c in range(len(offsets) - 1):
            lo, hi = offsets[c], offsets[c + 1]
            if hi == lo:
                continue
            x = np.ascontiguousarray(self.gene_embeddings[ids[lo:hi]], dtype=np.float64)
            if graph is None:
                out[lo:hi] = interface.multi_head_attention(x)
                continue
            indptr, indices = _kernels.seq2graph(ids[lo:hi], graph["indptr"], graph["indices"])
            heads = _kernels.genohoption_attention(
                np.ascontiguousarray(x @ self.w_q),
                np.ascontiguousarray(x @ self.w_k),
                np.ascontiguousarray(x @ self.w_v),
                indptr,
                indices,
                self.n_heads,
                diffusion=graph["diffusion"],
                alpha=graph["alpha"],
                t=graph["t"],
                iterations=graph["iterations"],
                n_threads=n_threads,
            )
            out[lo:hi] = heads @ self.w_o
        return out

    def edit_embeddings(
        self,
        cells: TokenizedCells,
        edit_cell: np.ndarray,
        edit_token: np.ndarray,
        mode: str,
        *,
        shift: float = 0.25,
        n_threads: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Original and perturbed cell embeddings of each edit.

        The model is order-free, so an edit is the keys it removes and adds
        (:func:`geneattn.edits.kernel_edits`): one forward pass per cell, then ``O(n d)``
        per edit in Rust (``mha_edit_effects``). ``shift`` (how far inhibit / activate
        move a token) changes nothing here. In GenoHoption mode every edit that removes or
        adds a key re-runs the cell's attention over the edited genes
        (``mha_genohoption_edit_effects``, ``O(E K d)`` per edit).

        Returns
        -------
        tuple of np.ndarray
            float64 ``(n_edits, d_model)`` each.
        """
        from geneattn import _kernels
        from geneattn.edits import kernel_edits, kernel_moves

        edit_cell = np.asarray(edit_cell, dtype=np.int64)
        if len(edit_cell) == 0:
            empty = np.zeros((0, self.d_model))
            return empty, empty.copy()
        remove, add, exclude = kernel_edits(cells, edit_cell, edit_token, mode)
        ranked = self.value_rank != "none"
        moves = kernel_moves(cells, edit_cell, edit_token, mode, shift=shift) if ranked else None
        args = (
            np.ascontiguousarray(cells.tokens, dtype=np.int64),
            np.ascontiguousarray(cells.offsets, dtype=np.int64),
            np.ascontiguousarray(self.gene_embeddings, dtype=np.float64),
            np.ascontiguousarray(self.w_q, dtype=np.float64),
            np.ascontiguousarray(self.w_k, dtype=np.float64),
            np.ascontiguousarray(self.w_v, dtype=np.float64),
            self.n_heads,
            edit_cell,
            remove,
            add,
            exclude,
        )
        if self.genohoption is None:
            original, perturbed = _kernels.mha_edit_effects(
                *args, rank_values=ranked, edit_move=moves, n_threads=n_threads
            )
        else:
            original, perturbed = _kernels.mha_genohoption_edit_effects(
                *args,
                self.genohoption.kernel_arg(),
                rank_values=ranked,
                edit_move=moves,
                n_threads=n_threads,
            )
        return original @ self.w_o, perturbed @ self.w_o


def pca_gene_loadings(
    counts: sp.spmatrix | np.ndarray,
    n_counts: np.ndarray,
    *,
    n_components: int,
    seed: int,
) -> np.ndarray:
    """Gene loadings on the top principal components of log-normalised counts.

    Parameters
    ----------
    counts
        Cells x genes raw counts.
    n_counts
        Total counts per cell (normalisation: ``log1p(x / n_counts * 1e4)``).
    n_components
        Number of components.
    seed
        Seed of the ARPACK start vector (scanpy ``random_state``).

    Returns
    -------
    np.ndarray
        ``(n_genes, n_components)``: loadings scaled by each component's standard deviation.
    """
    import anndata as ad
    import scanpy as sc

    x = sp.csr_matrix(counts, dtype=np.float64)
    n_counts = np.asarray(n_counts, dtype=np.float64)
    scale = np.divide(1e4, n_counts, out=np.zeros_like(n_counts), where=n_counts > 0)
    x = sp.csr_matrix(sp.diags(scale) @ x)
    x.data = np.log1p(x.data)
    max_comps = min(x.shape) - 1
    if n_components > max_comps:
        raise InputError(
            f"d_model={n_components} needs more cells and genes than {x.shape[0]} x {x.shape[1]}"
            f" (at most {max_comps} components)"
        )
    adata = ad.AnnData(x)
    sc.pp.pca(adata, n_comps=n_components, zero_center=True, svd_solver="arpack", random_state=seed)
    loadings = np.asarray(adata.varm["PCs"], dtype=np.float64)
    std = np.sqrt(np.asarray(adata.uns["pca"]["variance"], dtype=np.float64))
    loadings = loadings * std
    # ARPACK's sign per component is arbitrary; fix it so the largest |loading| is positive
    flip = np.sign(loadings[np.abs(loadings).argmax(axis=0), np.arange(loadings.shape[1])])
    return loadings * np.where(flip == 0, 1.0, flip)


def build_study_model(
    counts: sp.spmatrix | np.ndarray | None,
    n_counts: np.ndarray,
    gene_tokens: np.ndarray,
    vocab_size: int,
    *,
    d_model: int = 64,
    n_heads: int = 4,
    temperature: float = 8.0,
    seed: int = 42,
    value_rank: str = "log",
    loadings: np.ndarray | None = None,
) -> StudyModel:
    """Make the study-derived attention model described in the module docstring.

    Parameters
    ----------
    counts
        Cells x genes raw counts of the QC'd study (all conditions).
    n_counts
        Total counts per cell.
    gene_tokens
        Token id of each column of ``counts`` (-1 for genes without a token).
    vocab_size
        Number of token ids (rows of the embedding table).
    d_model
        Embedding width = number of principal components; divisible by ``n_heads``.
    n_heads
        Attention heads; head ``h`` sees components ``h*d_h .. (h+1)*d_h``.
    temperature
        Score of a gene with a perfectly aligned gene, per head (softmax sharpness).
    seed
        PCA seed.
    value_rank
        ``"log"`` (default): values scaled by ``ln((n + 1) / (i + 1))`` at position ``i`` of
        ``n``, so cell embeddings carry expression rank and rank edits move cells;
        ``"none"``: every expressed gene's value counts alike (the earlier model).
    loadings
        ``(genes, d_model)`` gene loadings computed elsewhere (e.g. streamed over blocks
        of cells, :func:`geneattn.models.pca.streaming_gene_loadings`); ``counts`` may
        then be None.

    Returns
    -------
    StudyModel
        The weights.
    """
    if value_rank not in ("log", "none"):
        raise InputError(f"value_rank must be 'log' or 'none', got {value_rank!r}")
    if d_model < 1 or n_heads < 1 or d_model % n_heads:
        raise InputError(f"d_model ({d_model}) must be a positive multiple of n_heads ({n_heads})")
    if not temperature > 0:
        raise InputError(f"temperature must be > 0, got {temperature}")
    gene_tokens = np.asarray(gene_tokens)
    if loadings is None:
        log.info(
            "study model: PCA of %d cells x %d genes into %d components",
            counts.shape[0],
            counts.shape[1],
            d_model,
        )
        loadings = pca_gene_loadings(counts, n_counts, n_components=d_model, seed=seed)
    loadings = np.asarray(loadings, dtype=np.float64)
    if loadings.shape != (len(gene_tokens), d_model):
        raise InputError(f"loadings are {loadings.shape}, expected ({len(gene_tokens)}, {d_model})")
    norms = np.linalg.norm(loadings, axis=1, keepdims=True)
    d_h = d_model // n_heads
    target = np.sqrt(temperature * np.sqrt(d_h))
    unit = np.divide(loadings, norms, out=np.zeros_like(loadings), where=norms > 0)
    table = np.zeros((vocab_size, d_model), dtype=np.float64)
    has_token = gene_tokens >= 0
    if np.any(gene_tokens[has_token] >= vocab_size):
        raise InputError("a gene token id is outside the vocabulary")
    table[gene_tokens[has_token]] = unit[has_token] * target
    eye = np.eye(d_model)
    params = {
        "kind": "study_pca",
        "d_model": d_model,
        "n_heads": n_heads,
        "temperature": float(temperature),
        "seed": int(seed),
        "value_rank": value_rank,
        "genes_with_embedding": int(has_token.sum()),
        "cells": len(n_counts),
    }
    if counts is None:
        params["pca"] = "block Krylov over blocks of cells (geneattn.models.pca)"
    return StudyModel(table, eye, eye.copy(), eye.copy(), eye.copy(), n_heads, params)


def study_model_from_anndata(
    adata: AnnData,
    *,
    token_dictionary: Mapping[str, int],
    name_map: Mapping[str, str] | None = None,
    gene_id: GeneIdKind = "symbol",
    d_model: int = 64,
    n_heads: int = 4,
    temperature: float = 8.0,
    seed: int = 42,
    value_rank: str = "log",
) -> StudyModel:
    """:func:`build_study_model` of the QC'd counts of a study.

    The counts' columns are mapped to tokens as the tokenizer maps them (symbols through
    ``name_map``, or Ensembl IDs: :func:`geneattn.tokenize.study_gene_names`), columns of
    one token are summed, and each cell's depth is ``obs["n_counts"]`` (else the row sums).

    Parameters
    ----------
    adata
        QC'd counts (raw counts in ``X``), every condition.
    token_dictionary
        Geneformer ``{ensembl_id: token}``.
    name_map
        ``{symbol: ensembl_id}``, needed for ``gene_id="symbol"``.
    gene_id
        What the var names are.
    d_model, n_heads, temperature, seed, value_rank
        As for :func:`build_study_model`.

    Returns
    -------
    StudyModel
        The weights.
    """
    from geneattn.tokenize import map_genes, merge_duplicate_tokens, study_gene_names

    ensembl, token, _ = map_genes(
        study_gene_names(adata, gene_id=gene_id),
        gene_id=gene_id,
        token_dictionary=token_dictionary,
        gene_medians=None,
        name_map=name_map,
    )
    x, token, _, _ = merge_duplicate_tokens(sp.csr_matrix(adata.X), token, ensembl)
    if "n_counts" in adata.obs:
        n_counts = adata.obs["n_counts"].to_numpy(dtype=np.float64)
    else:
        n_counts = np.asarray(adata.X.sum(axis=1), dtype=np.float64).ravel()
    return build_study_model(
        x,
        n_counts,
        token,
        len(token_dictionary),
        d_model=d_model,
        n_heads=n_heads,
        temperature=temperature,
        seed=seed,
        value_rank=value_rank,
    )


def with_genohoption(model: StudyModel, graph: TokenGraph) -> StudyModel:
    """The model attending GenoHoption's way over ``graph`` (one row per token id);
    ``params["attention"]`` records the options and the prior's size."""
    vocab = model.gene_embeddings.shape[0]
    if graph.n_tokens != vocab:
        raise InputError(
            f"the GenoHoption prior has {graph.n_tokens} token ids but the model {vocab}"
        )
    attention = {"mode": "genohoption", **graph.config.params(), "prior_edges": graph.n_edges}
    return dataclasses.replace(
        model, genohoption=graph, params={**model.params, "attention": attention}
    )


def save_study_model(path: str | Path, model: StudyModel) -> None:
    """Write the model weights (and a GenoHoption prior) to ``.npz`` atomically
    (byte-deterministic)."""
    from geneattn.io.atomic import atomic_path

    graph = {}
    if model.genohoption is not None:
        g = model.genohoption
        graph = {"genohoption_indptr": g.indptr, "genohoption_indices": g.indices}
        if g.vocabulary is not None:
            graph["genohoption_vocabulary"] = g.vocabulary
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(
            fh,
            gene_embeddings=model.gene_embeddings,
            w_q=model.w_q,
            w_k=model.w_k,
            w_v=model.w_v,
            w_o=model.w_o,
            n_heads=np.int64(model.n_heads),
            params=np.str_(json.dumps(model.params, sort_keys=True)),
            **graph,
        )


def load_study_model(path: str | Path) -> StudyModel:
    """Read a model written by :func:`save_study_model`, checking shapes."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            model = StudyModel(
                gene_embeddings=z["gene_embeddings"],
                w_q=z["w_q"],
                w_k=z["w_k"],
                w_v=z["w_v"],
                w_o=z["w_o"],
                n_heads=int(z["n_heads"]),
                params=json.loads(str(z["params"])),
            )
            if "genohoption_indptr" in z.files:
                model = _with_saved_graph(model, z, path)
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (KeyError, ValueError, OSError) as err:
        raise InputError(f"not a geneattn model file ({err})", path) from None
    d = model.d_model
    if any(w.shape != (d, d) for w in (model.w_q, model.w_k, model.w_v, model.w_o)):
        raise InputError(f"projection matrices must be {d} x {d}", path)
    if model.n_heads < 1 or d % model.n_heads:
        raise InputError(f"d_model {d} is not divisible by n_heads {model.n_heads}", path)
    return model


def _with_saved_graph(model: StudyModel, z, path: Path) -> StudyModel:
    """The model with the GenoHoption prior saved in its file."""
    from geneattn.models.genohoption import GenoHoptionConfig, TokenGraph

    options = {
        k: v
        for k, v in model.params.get("attention", {}).items()
        if k not in ("mode", "prior_edges")
    }
    vocabulary = z["genohoption_vocabulary"] if "genohoption_vocabulary" in z.files else None
    graph = TokenGraph(
        z["genohoption_indptr"],
        z["genohoption_indices"],
        GenoHoptionConfig.from_params(options),
        vocabulary,
    )
    if graph.n_tokens != model.gene_embeddings.shape[0]:
        raise InputError("the GenoHoption prior does not have one row per token id", path)
    return dataclasses.replace(model, genohoption=graph)
