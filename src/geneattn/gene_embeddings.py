"""Gene embeddings: each gene's contextual state averaged over cells (``emb_mode: gene``).

Geneformer's ``EmbExtractor(emb_mode="gene", gene_emb_style="mean_pool")`` averages, for
every gene, its hidden state over all the cells (and positions) in which it occurs. Here the
model's per-token states (:meth:`AttentionModel.token_states`, the states its cell
embedding pools) are summed per gene into :class:`GeneEmbeddingSums`, which shards write
and the gather adds: memory follows the vocabulary, not the cells. ``<cls>`` and ``<eos>``
are left out (Geneformer lists them as genes too).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geneattn.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

    from geneattn.models.protocol import AttentionModel
    from geneattn.tokenize import TokenizedCells

__all__ = ["GeneEmbeddingSums", "gene_embedding_sums", "load_gene_embedding_sums"]


@dataclasses.dataclass
class GeneEmbeddingSums:
    """Per gene (our token id), the sum of its states and the number of occurrences.

    Attributes
    ----------
    total
        float64 ``(n_vocabulary, d)``.
    count
        int64 ``(n_vocabulary,)``.
    """

    total: np.ndarray
    count: np.ndarray

    def merge(self, other: GeneEmbeddingSums) -> None:
        """Add another shard's sums."""
        if self.total.shape != other.total.shape:
            raise InputError("gene embedding sums of different shapes cannot be merged")
        self.total += other.total
        self.count += other.count

    def save(self, path: str | Path) -> None:
        """Write the genes seen (``.npz``, atomically)."""
        from geneattn.io.atomic import atomic_path

        seen = np.flatnonzero(self.count)
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.savez(
                fh,
                shape=np.array(self.total.shape, dtype=np.int64),
                token=seen.astype(np.int64),
                total=self.total[seen],
                count=self.count[seen],
            )

    def table(self, vocabulary: np.ndarray) -> pd.DataFrame:
        """Mean state of each gene seen: ``gene_id``, ``n``, then one column per dimension."""
        import pandas as pd

        seen = np.flatnonzero(self.count)
        mean = self.total[seen] / self.count[seen, None]
        table = pd.DataFrame(mean, columns=[f"dim{j}" for j in range(mean.shape[1])])
        table.insert(0, "gene_id", np.asarray(vocabulary).astype(str)[seen])
        table.insert(1, "n", self.count[seen])
        return table


def load_gene_embedding_sums(path: str | Path) -> GeneEmbeddingSums:
    """Read sums written by :meth:`GeneEmbeddingSums.save`."""
    try:
        with np.load(path, allow_pickle=False) as z:
            n, d = (int(v) for v in z["shape"])
            sums = GeneEmbeddingSums(np.zeros((n, d)), np.zeros(n, dtype=np.int64))
            sums.total[z["token"]] = z["total"]
            sums.count[z["token"]] = z["count"]
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (KeyError, ValueError, IndexError, OSError) as err:
        raise InputError(f"not a gene embedding sums file ({err})", path) from None
    return sums


def gene_embedding_sums(
    model: AttentionModel, cells: TokenizedCells, *, n_threads: int = 1
) -> GeneEmbeddingSums:
    """Sum each gene's per-token states over ``cells``.

    Parameters
    ----------
    model
        Any model with :meth:`token_inputs` and :meth:`token_states`.
    cells
        The cells.
    n_threads
        Rayon threads.

    Returns
    -------
    GeneEmbeddingSums
        Indexed by our token ids (``len(cells.vocabulary)`` rows).
    """
    inputs = model.token_inputs(cells)
    states = np.asarray(model.token_states(inputs.ids, inputs.offsets, n_threads=n_threads))
    n_vocab = len(cells.vocabulary)
    size = max(int(inputs.ids.max(initial=0)), int(inputs.model_id.max(initial=0))) + 1
    to_ours = np.full(size, -1, dtype=np.int64)
    known = inputs.model_id >= 0
    to_ours[inputs.model_id[known]] = np.flatnonzero(known)
    keep = np.ones(len(inputs.ids), dtype=bool)
    if inputs.special:
        starts, ends = inputs.offsets[:-1], inputs.offsets[1:]
        keep[starts[ends > starts]] = False
        keep[ends[ends > starts] - 1] = False
    ours = to_ours[np.asarray(inputs.ids, dtype=np.int64)]
    keep &= ours >= 0
    sums = GeneEmbeddingSums(np.zeros((n_vocab, states.shape[1])), np.zeros(n_vocab, np.int64))
    np.add.at(sums.total, ours[keep], states[keep].astype(np.float64))
    np.add.at(sums.count, ours[keep], 1)
    return sums
