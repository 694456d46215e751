"""Append rows to a CSR matrix inside an ``.h5ad``, in AnnData's on-disk layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp


class CsrAppender:
    """Write a CSR matrix into an ``.h5ad`` (AnnData's on-disk layout) a block of rows at
    a time.

    ``data`` (float32), ``indices`` (int32) and ``indptr`` (int64) are resizable HDF5
    datasets; the group's ``shape`` attribute is set on close. A ``with`` block that
    raises leaves the group incomplete: write to a temporary file and rename it only on
    success.

    Parameters
    ----------
    path
        An existing ``.h5ad`` (without the element).
    key
        The group to create, e.g. ``"X"`` (or ``"layers/counts"`` when ``layers`` exists).
    n_columns
        Columns of the matrix.
    """

    def __init__(self, path: str | Path, key: str, *, n_columns: int) -> None:
        import h5py

        self.file = h5py.File(path, "a")
        self.group = group = self.file.create_group(key)
        self.n_columns = int(n_columns)
        self.n_rows = 0
        self.nnz = 0
        chunk = (1 << 18,)
        group.create_dataset("data", (0,), dtype=np.float32, maxshape=(None,), chunks=chunk)
        group.create_dataset("indices", (0,), dtype=np.int32, maxshape=(None,), chunks=chunk)
        indptr = group.create_dataset(
            "indptr", (1,), dtype=np.int64, maxshape=(None,), chunks=(1 << 16,)
        )
        indptr[0] = 0

    def append(self, x: sp.spmatrix) -> None:
        """Append rows (CSR with ``n_columns`` columns)."""
        x = sp.csr_matrix(x)
        if x.shape[1] != self.n_columns:
            raise ValueError(f"block has {x.shape[1]} columns, expected {self.n_columns}")
        g, n = self.group, x.nnz
        for name, values in (("data", x.data.astype(np.float32)), ("indices", x.indices)):
            g[name].resize((self.nnz + n,))
            g[name][self.nnz :] = values
        g["indptr"].resize((self.n_rows + x.shape[0] + 1,))
        g["indptr"][self.n_rows + 1 :] = x.indptr[1:].astype(np.int64) + self.nnz
        self.nnz += n
        self.n_rows += x.shape[0]

    def close(self) -> None:
        """Write the encoding attributes and close the file."""
        if self.file:
            self.group.attrs["encoding-type"] = "csr_matrix"
            self.group.attrs["encoding-version"] = "0.1.0"
            self.group.attrs["shape"] = np.array([self.n_rows, self.n_columns], dtype=np.int64)
            self.file.close()

    def __enter__(self) -> CsrAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
