"""Cell shards of the stage jobs: which cells job ``shard`` of a sharded stage takes.

The workflow splits the cells of a stage (embedding, attention of one condition, module
attention, perturbation of the case cells) into contiguous shards of at most
``cells_per_shard`` cells, so a job's memory depends on the shard size, not on the study's
size. The number of shards is ``max(1, ceil(n_cells / cells_per_shard))``; the rule files
compute it from the tokenize summary with the same formula. Older callers give the number
of shards instead (``--n-shards``), whose sizes then differ by at most one cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from geneattn.errors import InputError

__all__ = ["WHOLE", "Shard", "n_shards_for", "shard_bounds"]


def n_shards_for(n_cells: int, cells_per_shard: int) -> int:
    """Number of shards of ``n_cells`` cells at ``cells_per_shard`` per shard (at least 1)."""
    if cells_per_shard < 1:
        raise InputError(f"cells per shard must be >= 1, got {cells_per_shard}")
    return max(1, math.ceil(n_cells / cells_per_shard))


def shard_bounds(n_cells: int, shard: int, n_shards: int) -> tuple[int, int]:
    """Cells ``start:stop`` of shard ``shard`` (0-based) of ``n_shards`` contiguous shards.

    Parameters
    ----------
    n_cells
        Number of cells to split.
    shard
        Which shard, ``0 <= shard < n_shards``.
    n_shards
        Number of shards; sizes differ by at most one cell.

    Returns
    -------
    tuple[int, int]
        ``(start, stop)``.
    """
    if n_shards < 1 or not 0 <= shard < n_shards:
        raise InputError(f"shard must be in 0..{n_shards - 1} of n_shards >= 1, got {shard}")
    return n_cells * shard // n_shards, n_cells * (shard + 1) // n_shards


@dataclass(frozen=True)
class Shard:
    """Which cells one job of a sharded stage takes.

    Attributes
    ----------
    index
        0-based shard number.
    cells_per_shard
        Shards of this many cells (the workflow's ``shards.cells``); None: ``n_shards``
        contiguous shards of near-equal size instead.
    n_shards
        Number of shards when ``cells_per_shard`` is None.

    Raises
    ------
    InputError
        A shard number that cannot be valid whatever the number of cells.
    """

    index: int = 0
    cells_per_shard: int | None = None
    n_shards: int = 1

    def __post_init__(self) -> None:
        if self.index < 0:
            raise InputError(f"shard must be >= 0, got {self.index}")
        if self.cells_per_shard is not None:
            n_shards_for(0, self.cells_per_shard)
        else:
            shard_bounds(0, self.index, self.n_shards)

    def bounds(self, n_cells: int) -> tuple[int, int]:
        """Cells ``start:stop`` of this shard among ``n_cells``.

        Raises
        ------
        InputError
            If the shard does not exist for ``n_cells`` cells.
        """
        if self.cells_per_shard is None:
            return shard_bounds(n_cells, self.index, self.n_shards)
        n_shards = n_shards_for(n_cells, self.cells_per_shard)
        if not 0 <= self.index < n_shards:
            raise InputError(
                f"shard {self.index} does not exist: {n_cells} cells at {self.cells_per_shard} "
                f"per shard make {n_shards} shard(s)"
            )
        start = self.index * self.cells_per_shard
        return start, min(n_cells, start + self.cells_per_shard)

    def __str__(self) -> str:
        """``shard i/n`` or ``shard i (k cells each)`` for log lines."""
        if self.cells_per_shard is None:
            return f"shard {self.index}/{self.n_shards}"
        return f"shard {self.index} ({self.cells_per_shard} cells each)"


#: Every cell in one job.
WHOLE = Shard()
