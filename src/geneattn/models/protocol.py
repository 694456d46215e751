"""The attention-model protocol: what every stage asks of a model.

A stage (embed, attention, module attention, perturb) never asks which kind of model it
holds. It calls the methods below, which the study-derived model
(:class:`~geneattn.models.study.StudyModel`) and a pretrained checkpoint
(:class:`~geneattn.models.checkpoint.CheckpointAttention`) both implement, each with its
own Rust kernels. A new kind of model is a class with these methods.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np

    from geneattn.tokenize import TokenizedCells

__all__ = ["AttentionModel", "TokenInputs"]


@dataclasses.dataclass(frozen=True)
class TokenInputs:
    """Cells as a model reads them, for definitions over per-token states (Geneformer's).

    Attributes
    ----------
    ids, offsets
        Ragged model input ids of the cells (mapped to the model's ids, truncated, framed).
    model_id
        The model's id of each of our token ids (index: our token id), -1 where the model
        lacks the gene.
    special
        Whether each sequence starts with ``<cls>`` and ends with ``<eos>``.
    max_len
        The model's input size (None: unlimited).
    cls
        Whether the cell embedding is the ``<cls>`` state rather than a mean.
    """

    ids: np.ndarray
    offsets: np.ndarray
    model_id: np.ndarray
    special: bool = False
    max_len: int | None = None
    cls: bool = False


@runtime_checkable
class AttentionModel(Protocol):
    """A model whose cell embeddings and attention the workflow's stages use.

    Attributes
    ----------
    params
        How the model was made (JSON-serialisable); stages copy it into their outputs.
    """

    params: dict

    @property
    def d_model(self) -> int:
        """Width of the cell embeddings."""
        ...

    def embed(self, cells: TokenizedCells, *, n_threads: int = 1) -> np.ndarray:
        """Cell embeddings, ``(n_cells, d_model)``."""
        ...

    def add_attention_sums(
        self,
        cells: TokenizedCells,
        universe: np.ndarray,
        sums: np.ndarray,
        incoming: np.ndarray,
        *,
        n_threads: int = 1,
    ) -> None:
        """Add the cells' attention among the ``universe`` tokens into ``sums`` and
        ``incoming`` (``(g, g)`` and ``(g,)`` float64, in place)."""
        ...

    def module_sums(
        self,
        cells: TokenizedCells,
        gene_tokens: np.ndarray,
        gene_columns: np.ndarray,
        n_modules: int,
        *,
        n_threads: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per cell and module, the attention among the module's genes and the number of
        gene pairs (``gene_columns[i]``: module column of ``gene_tokens[i]``, -1: none)."""
        ...

    def token_inputs(self, cells: TokenizedCells) -> TokenInputs:
        """The cells' model input ids, and how our tokens map onto them."""
        ...

    def token_states(
        self, ids: np.ndarray, offsets: np.ndarray, *, n_threads: int = 1
    ) -> np.ndarray:
        """Per-token states of ragged model input ids (the states the cell embedding pools),
        ``(len(ids), d_model)``."""
        ...

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
        """Original and perturbed embeddings of each edit (perturbing ``edit_token[e]`` in
        cell ``edit_cell[e]`` in ``mode``), float64 ``(n_edits, d_model)`` each."""
        ...
