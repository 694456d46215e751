"""Seeded toy data for tests and examples: tokenized cells and small study models.

Every function draws from ``numpy.random.default_rng(seed)`` only, so the same arguments
give the same data on every machine.
"""

from __future__ import annotations

import numpy as np

from geneattn.models.study import StudyModel
from geneattn.tokenize import TokenizedCells

__all__ = ["cells", "study_model"]


def cells(
    seed: int,
    n_cells: int,
    max_len: int,
    *,
    vocab: int = 40,
    min_len: int = 1,
    frequent_first: bool = True,
    repeats: bool = False,
    prefix: str = "cell",
) -> TokenizedCells:
    """Random tokenized cells over a vocabulary of ``vocab`` Ensembl-like gene IDs.

    Parameters
    ----------
    seed
        Seed of the generator.
    n_cells
        Number of cells.
    max_len, min_len
        Each cell holds between ``min_len`` and ``max_len`` tokens (uniform).
    vocab
        Vocabulary size; token ``t`` is gene ``ENSG{t:011d}``.
    frequent_first
        Draw token ``t`` with probability proportional to ``1 / (1 + t)`` (low ids are
        frequent genes, as in real data); otherwise uniformly, as a random permutation.
    repeats
        Allow a token twice in a cell (``frequent_first`` only).
    prefix
        Cell ids are ``{prefix}{i}``.

    Returns
    -------
    TokenizedCells
        The cells.
    """
    rng = np.random.default_rng(seed)
    seqs = []
    if frequent_first:
        weight = 1.0 / (1.0 + np.arange(vocab))
        weight /= weight.sum()
        for _ in range(n_cells):
            size = int(rng.integers(min_len, max_len + 1))
            seqs.append(rng.choice(vocab, size=size, replace=repeats, p=weight))
    else:
        if repeats:
            raise ValueError("repeats needs frequent_first")
        for _ in range(n_cells):
            order = rng.permutation(vocab)
            seqs.append(order[: rng.integers(min_len, max_len + 1)])
    lengths = [len(s) for s in seqs]
    return TokenizedCells(
        tokens=np.concatenate([np.zeros(0, dtype=np.int64), *seqs]).astype(np.int32),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        cell_ids=np.array([f"{prefix}{i}" for i in range(n_cells)]),
        vocabulary=np.array([f"ENSG{t:011d}" for t in range(vocab)]),
    )


def study_model(
    seed: int, *, d: int = 8, n_heads: int = 2, vocab: int = 40, scale: float = 1.5
) -> StudyModel:
    """A random single-layer attention model whose attention is far from uniform.

    Gene embeddings are ``N(0, scale^2)``; ``W_Q = I + W`` and ``W_K = I - W^T`` with
    ``W ~ N(0, 0.49)``, so query and key differ; ``W_V = W_O = I``.
    """
    rng = np.random.default_rng(seed)
    eye = np.eye(d)
    w = rng.normal(size=(d, d)) * 0.7
    return StudyModel(
        gene_embeddings=rng.normal(size=(vocab, d)) * scale,
        w_q=eye + w,
        w_k=eye - w.T,
        w_v=eye,
        w_o=eye,
        n_heads=n_heads,
        params={"kind": "test"},
    )
