"""The demo study as the network and GenoHoption suites load it: every demo cell tokenized
with the V1 dictionary and the study model built on them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Where `geneattn fetch-resources` puts the pinned resources (the bench runs from the checkout).
RESOURCES = Path("resources")


@dataclass(frozen=True)
class DemoStudy:
    """The tokenized demo cells and the study model (``d_model=64``, 4 heads).

    Attributes
    ----------
    cells
        :class:`geneattn.encoding.TokenizedCells` of the 200 demo cells.
    model
        The study model built on their counts.
    names
        Geneformer's symbol -> Ensembl ID map.
    var_names
        The demo's gene symbols.
    """

    cells: object
    model: object
    names: dict
    var_names: np.ndarray


def load_demo_study(
    root: Path = RESOURCES, *, also_needed: tuple[str, ...] = ()
) -> DemoStudy | None:
    """Tokenize the demo study and build its study model.

    Parameters
    ----------
    root
        The fetched resources directory.
    also_needed
        Further files (relative to ``root``) the caller needs.

    Returns
    -------
    DemoStudy or None
        None when a needed resource is missing (the suite then skips its rows).
    """
    import anndata as ad
    import scipy.sparse as sp

    from geneattn.models.study import build_study_model
    from geneattn.resources.load import load_gene_medians, load_gene_name_map, load_token_dictionary
    from geneattn.tokenize import map_genes, tokenize_counts

    gf = root / "geneformer_v1"
    needed = [root / "wu2020_200.h5ad", gf / "token_dictionary.tsv"]
    if not all(p.exists() for p in [*needed, *(root / f for f in also_needed)]):
        return None
    adata = ad.read_h5ad(root / "wu2020_200.h5ad")
    vocab = load_token_dictionary(gf / "token_dictionary.tsv")
    medians = load_gene_medians(gf / "gene_median_dictionary.tsv")
    names = load_gene_name_map(gf / "gene_name_id.tsv")
    x = sp.csr_matrix(adata.X, dtype=np.float64)
    n_counts = np.asarray(x.sum(axis=1)).ravel()
    var_names = adata.var_names.to_numpy()
    cells, _ = tokenize_counts(
        x,
        var_names,
        cell_ids=adata.obs_names.to_numpy(),
        n_counts=n_counts,
        token_dictionary=vocab,
        gene_medians=medians,
        name_map=names,
    )
    _, gene_tokens, _ = map_genes(
        var_names, gene_id="symbol", token_dictionary=vocab, gene_medians=medians, name_map=names
    )
    model = build_study_model(x, n_counts, gene_tokens, len(vocab), d_model=64, n_heads=4)
    return DemoStudy(cells=cells, model=model, names=names, var_names=var_names)
