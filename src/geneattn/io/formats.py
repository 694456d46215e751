"""The raw-count formats :func:`geneattn.io.readers.read_counts` reads (no heavy imports, so
the command line's ``--help`` can list them)."""

from __future__ import annotations

FORMATS = ("h5ad", "10x_h5", "10x_mtx", "loom", "csv", "tsv")
