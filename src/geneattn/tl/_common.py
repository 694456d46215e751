"""What several tools share: the cells of a condition."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

    from geneattn.tokenize import TokenizedCells


def cells_of(
    cells: TokenizedCells, labels: pd.Series, condition: str, *, column: str
) -> TokenizedCells:
    """The cells labelled ``condition`` (:func:`geneattn.cells.condition_positions`)."""
    from geneattn.cells import condition_positions
    from geneattn.tokenize import subset_cells

    return subset_cells(
        cells, condition_positions(cells.cell_ids, labels, condition, column=column)
    )
