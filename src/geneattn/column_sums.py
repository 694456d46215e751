"""Per-gene sums over blocks of cells that equal scanpy's sums over all cells, bit for bit.

Streaming a study block by block changes the order in which floating-point sums are
added up, and so their last bits, unless the blocks are added in the order the in-memory
code adds them. The two accumulators here follow that order:

* :class:`ColumnMoments` adds like scanpy's ``sparse_mean_var_minor_axis`` (the numba kernel
  behind ``_get_mean_var`` of a CSR matrix, used by ``calculate_qc_metrics`` and
  ``highly_variable_genes``): float64 sums of values and squared values, per column, with
  row ``r`` going to thread ``r % n_threads`` and the threads' sums added in thread order
  at the end.
* :class:`ColumnTotals` adds like scipy's ``csr_matrix.sum(axis=0)`` (a transposed
  matrix-vector product): one running sum per column in the matrix's dtype, row by row.

Both take the rows of consecutive blocks in order (:meth:`add` with each block).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def numba_threads() -> int:
    """Threads scanpy's numba kernels split rows over (``numba.get_num_threads()``)."""
    import numba

    return int(numba.get_num_threads())


class ColumnMoments:
    """Column sums and squared sums of rows added block by block, as scanpy adds them.

    Parameters
    ----------
    n_columns
        Columns of every block.
    n_threads
        Row split of scanpy's kernel; None reads it from numba (as scanpy does when it
        runs in the same process).
    squares
        Also sum the squared values (needed for the variance).
    """

    def __init__(self, n_columns: int, *, n_threads: int | None = None, squares: bool = True):
        self.n_threads = numba_threads() if n_threads is None else int(n_threads)
        self.sums = np.zeros((self.n_threads, n_columns))
        self.squares = np.zeros((self.n_threads, n_columns)) if squares else None
        self.n_rows = 0

    def add(self, x: sp.csr_matrix) -> None:
        """Add the next block of rows (CSR; the rows follow the ones added before)."""
        x = sp.csr_matrix(x)
        row = np.repeat(np.arange(x.shape[0], dtype=np.int64), np.diff(x.indptr))
        thread = (row + self.n_rows) % self.n_threads
        for t in range(self.n_threads):
            pick = thread == t
            columns, values = x.indices[pick], x.data[pick]
            np.add.at(self.sums[t], columns, values.astype(np.float64))
            if self.squares is not None:
                np.add.at(self.squares[t], columns, (values * values).astype(np.float64))
        self.n_rows += x.shape[0]

    def mean_var(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and unbiased variance per column, as ``scanpy`` ``_get_mean_var(x, axis=0)``.

        Returns
        -------
        tuple of np.ndarray
            float64 ``(mean, var)``; ``var`` is NaN-free only when squares were summed.
        """
        n = self.n_rows
        total = np.zeros(self.sums.shape[1])
        for t in range(self.n_threads):
            total += self.sums[t]
        mean = total / n
        if self.squares is None:
            return mean, np.full_like(mean, np.nan)
        square = np.zeros(self.sums.shape[1])
        for t in range(self.n_threads):
            square += self.squares[t]
        var = square / n - (total / n) ** 2
        if n != 1:
            var *= n / (n - 1)
        return mean, var


class ColumnTotals:
    """Column sums in the values' dtype, row by row, as ``csr_matrix.sum(axis=0)``.

    Parameters
    ----------
    n_columns
        Columns of every block.
    dtype
        dtype of the sums (scipy sums a float32 matrix in float32).
    """

    def __init__(self, n_columns: int, *, dtype: np.dtype | type = np.float32):
        self.total = np.zeros(n_columns, dtype=dtype)

    def add(self, x: sp.csr_matrix) -> None:
        """Add the next block of rows (CSR with sorted indices)."""
        x = sp.csr_matrix(x)
        np.add.at(self.total, x.indices, x.data.astype(self.total.dtype, copy=False))
