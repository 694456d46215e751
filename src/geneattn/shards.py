"""Cell shards of the stage jobs: which cells job ``shard`` of a sharded stage takes.

The workflow splits the cells of a stage (embedding, attention of one condition, module
attention, perturbation of the case cells) into contiguous shards of at most
``cells_per_shard`` cells, so a job's memory depends on the shard size, not on the study's
size. The number of shards is ``max(1, ceil(n_cells / cells_per_shard))``; the rule files
compute it from the tokenize summary with the same formula. Older callers give the number
of shards instead (``--n-shards``), whose sizes then differ by at most one cell.
"""

from __future__ import annotations

import argparse
import math

from geneattn.errors import InputError

__all__ = [
    "add_shard_arguments",
    "check_shard_arguments",
    "describe",
    "n_shards_for",
    "shard_bounds",
    "shard_of",
]


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


def add_shard_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--shard`` and either ``--cells-per-shard`` or ``--n-shards`` to a stage."""
    parser.add_argument("--shard", type=int, default=0, help="0-based shard of the cells")
    sizes = parser.add_mutually_exclusive_group()
    sizes.add_argument(
        "--cells-per-shard",
        type=int,
        help="shards of this many cells (the workflow's shards.cells)",
    )
    sizes.add_argument(
        "--n-shards", type=int, default=1, help="this many contiguous shards of near-equal size"
    )


def check_shard_arguments(args: argparse.Namespace) -> None:
    """Refuse shard numbers that cannot be valid whatever the number of cells."""
    if args.shard < 0:
        raise InputError(f"--shard must be >= 0, got {args.shard}")
    if args.cells_per_shard is not None:
        n_shards_for(0, args.cells_per_shard)
    else:
        shard_bounds(0, args.shard, args.n_shards)


def shard_of(n_cells: int, args: argparse.Namespace) -> tuple[int, int]:
    """Cells ``start:stop`` of ``args.shard`` among ``n_cells`` (see :func:`add_shard_arguments`).

    Raises
    ------
    InputError
        If the shard does not exist for ``n_cells`` cells.
    """
    if args.cells_per_shard is None:
        return shard_bounds(n_cells, args.shard, args.n_shards)
    n_shards = n_shards_for(n_cells, args.cells_per_shard)
    if not 0 <= args.shard < n_shards:
        raise InputError(
            f"shard {args.shard} does not exist: {n_cells} cells at {args.cells_per_shard} "
            f"per shard make {n_shards} shard(s)"
        )
    start = args.shard * args.cells_per_shard
    return start, min(n_cells, start + args.cells_per_shard)


def describe(args: argparse.Namespace) -> str:
    """``shard i/n`` or ``shard i (k cells each)`` for log lines."""
    if args.cells_per_shard is None:
        return f"shard {args.shard}/{args.n_shards}"
    return f"shard {args.shard} ({args.cells_per_shard} cells each)"
