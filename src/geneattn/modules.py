"""Disease modules: Leiden communities of a gene network, hub genes, differential attention.

:func:`leiden_modules` clusters the (undirected) network with leidenalg on igraph and numbers
the modules by decreasing size; genes of modules smaller than ``min_size`` get module 0
(unassigned). :func:`module_table` lists each gene's weighted degree, intramodular
connectivity (the summed weight of its edges to genes of its own module, hdWGCNA's ``kIN``) and
hub rank. :func:`differential_connectivity` compares the mean attention within each module of
the case network against the control network over the same gene pairs, with a permutation test
against random gene sets of the same size.

That gene-set test does not hold its level, and should only be used to compare with earlier
results: the question is whether the case and control *cells* differ, and random gene sets
differ from a module in how often their genes are present together and in their attention
level, so a module's difference is compared with a null that does not describe it. On 20
random halves of the demo's Tumor cells (one condition, so nothing truly differs) it calls 78
of 171 modules (46%) at p < 0.05 even for modules of :func:`pooled_network`
(``scripts/null_split.py``; the cell-label test calls 12, 7.0%). Modules found in the case
network alone are worse: they are gene sets chosen *because* their case attention is high.
The workflow's default is the cell-label permutation test of :mod:`geneattn.differential`,
which holds its level for modules of the pooled network, found without favouring either
condition.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from geneattn.enrichment import bh_fdr
from geneattn.network import GeneNetwork, gene_labels, network_graph, symmetrize, top_k_edges

if TYPE_CHECKING:
    import networkx as nx
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = [
    "DIFFERENTIAL_COLUMNS",
    "OBJECTIVES",
    "ModuleResults",
    "detection_network",
    "differential_connectivity",
    "empty_differential",
    "find_modules",
    "leiden_modules",
    "module_graph",
    "module_table",
    "pooled_network",
    "relabel_modules",
    "undirected_weights",
]

log = logging.getLogger(__name__)

#: Leiden objectives: leidenalg partition types by name.
OBJECTIVES = ("rb_configuration", "modularity")


def undirected_weights(adjacency: sparse.spmatrix) -> sparse.csr_matrix:
    """Undirected weights ``(A + A^T) / 2`` of a network (unchanged if already symmetric)."""
    a = sparse.csr_matrix(adjacency, dtype=np.float64)
    if (a != a.T).nnz == 0:
        w = a.copy()
    else:
        w = sparse.csr_matrix((a + a.T) * 0.5)
    w.setdiag(0.0)
    w.eliminate_zeros()
    w.sort_indices()
    return w


def leiden_modules(
    weights: sparse.spmatrix,
    *,
    resolution: float = 1.0,
    objective: str = "rb_configuration",
    seed: int = 0,
    min_size: int = 5,
    n_iterations: int = -1,
) -> np.ndarray:
    """Leiden communities of a weighted undirected gene graph.

    Parameters
    ----------
    weights
        G x G symmetric non-negative weights (e.g. from :func:`undirected_weights`).
    resolution
        Resolution of the ``rb_configuration`` objective (higher: more, smaller modules);
        ignored by ``modularity``.
    objective
        ``"rb_configuration"`` (:class:`leidenalg.RBConfigurationVertexPartition`, modularity
        with a resolution parameter) or ``"modularity"``
        (:class:`leidenalg.ModularityVertexPartition`).
    seed
        Seed of leidenalg's random number generator: the same seed gives the same modules.
    min_size
        Modules with fewer genes are dissolved into module 0 (unassigned).
    n_iterations
        Leiden iterations; negative runs until the partition stops improving.

    Returns
    -------
    numpy.ndarray
        int64 module of each gene: 1 for the largest module, 2 for the next, ... (ties by the
        lowest gene index in the module), 0 for unassigned genes.
    """
    import igraph as ig
    import leidenalg

    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r} (expected one of {OBJECTIVES})")
    if min_size < 1:
        raise ValueError(f"min_size must be at least 1, got {min_size}")
    w = sparse.csr_matrix(weights, dtype=np.float64)
    n = w.shape[0]
    if (w != w.T).nnz:
        raise ValueError("leiden_modules needs symmetric weights; use undirected_weights")
    coo = sparse.triu(w, k=1, format="coo")
    order = np.lexsort((coo.col, coo.row))
    rows, cols, data = coo.row[order], coo.col[order], coo.data[order]
    if np.any(data < 0):
        raise ValueError("edge weights must be non-negative")
    logger.info(
        "Leiden (%s, resolution %g, seed %d) on %d genes and %d edges",
        objective,
        resolution,
        seed,
        n,
        len(data),
    )
    graph = ig.Graph(n=n, edges=np.column_stack([rows, cols]).tolist(), directed=False)
    graph.es["weight"] = data.tolist()
    if objective == "rb_configuration":
        partition = leidenalg.find_partition(
            graph,
            leidenalg.RBConfigurationVertexPartition,
            weights="weight",
            resolution_parameter=float(resolution),
            seed=int(seed),
            n_iterations=n_iterations,
        )
    else:
        partition = leidenalg.find_partition(
            graph,
            leidenalg.ModularityVertexPartition,
            weights="weight",
            seed=int(seed),
            n_iterations=n_iterations,
        )
    return relabel_modules(np.asarray(partition.membership, dtype=np.int64), min_size=min_size)


def relabel_modules(membership: np.ndarray, *, min_size: int = 1) -> np.ndarray:
    """Number communities 1, 2, ... by decreasing size (ties: lowest gene index first).

    Communities with fewer than ``min_size`` genes become 0.
    """
    membership = np.asarray(membership)
    labels, first, sizes = np.unique(membership, return_index=True, return_counts=True)
    order = np.lexsort((first, -sizes))
    new_label = np.zeros(len(labels), dtype=np.int64)
    next_id = 1
    for idx in order:
        if sizes[idx] >= min_size:
            new_label[idx] = next_id
            next_id += 1
    return new_label[np.searchsorted(labels, membership)]


def module_table(
    network: GeneNetwork, modules: np.ndarray, weights: sparse.spmatrix | None = None
) -> pd.DataFrame:
    """Per-gene module table with connectivity and hub ranks.

    Parameters
    ----------
    network
        The network the modules were found in.
    modules
        Module of each gene (0 = unassigned), from :func:`leiden_modules`.
    weights
        Undirected weights the modules were found on (default:
        ``undirected_weights(network.adjacency)``).

    Returns
    -------
    pandas.DataFrame
        Columns ``gene`` (symbol, or ID when unknown), ``gene_id``, ``module``,
        ``weighted_degree`` (sum of edge weights), ``intramodular_connectivity`` (sum of edge
        weights to genes of the same module) and ``hub_rank`` (1 = highest intramodular
        connectivity in the module; ties by weighted degree, then gene index; 0 for unassigned
        genes). Rows are sorted by module (unassigned last), then hub rank.
    """
    import pandas as pd

    w = undirected_weights(network.adjacency) if weights is None else sparse.csr_matrix(weights)
    modules = np.asarray(modules, dtype=np.int64)
    degree, intra = _connectivity(w, modules)
    hub_rank = _hub_ranks(modules, intra, degree)
    table = pd.DataFrame(
        {
            "gene": gene_labels(network.gene_ids, network.gene_symbols),
            "gene_id": network.gene_ids,
            "module": modules,
            "weighted_degree": degree,
            "intramodular_connectivity": intra,
            "hub_rank": hub_rank,
        }
    )
    order = np.lexsort((np.arange(len(modules)), hub_rank, modules, modules == 0))
    return table.iloc[order].reset_index(drop=True)


#: Columns of the differential table.
DIFFERENTIAL_COLUMNS = (
    "module",
    "size",
    "n_pairs",
    "case_mean",
    "control_mean",
    "diff",
    "p_value",
    "fdr",
    "n_permutations",
    "test",
)


def empty_differential() -> pd.DataFrame:
    """The differential table of a single-condition study: its columns and no row."""
    import pandas as pd

    def dtype(column: str) -> type:
        if column == "test":
            return object
        if column in ("module", "size", "n_pairs", "n_permutations"):
            return np.int64
        return np.float64

    return pd.DataFrame({c: pd.Series(dtype=dtype(c)) for c in DIFFERENTIAL_COLUMNS})


def differential_connectivity(
    case: GeneNetwork,
    control: GeneNetwork,
    modules: np.ndarray,
    *,
    n_permutations: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean within-module attention of the case network minus the control network.

    For a module ``S``, the statistic is the mean over ordered pairs ``i != j`` of ``S`` that
    are defined in both conditions (co-present in enough cells, see
    :attr:`GeneNetwork.mean_attention`) of ``case[i, j] - control[i, j]``. Control genes are
    matched to case genes by Ensembl ID; case genes the control lacks have no defined pairs.

    The two-sided permutation p-value compares ``|diff|`` with the same statistic on
    ``n_permutations`` gene sets of the module's size drawn without replacement from the case
    network's genes: ``p = (1 + #{|null| >= |diff|}) / (1 + n_permutations)``. A random set with
    no defined pair counts as at least as extreme (conservative). Modules are tested in order
    of their number, all from one generator seeded with ``seed``. The Benjamini-Hochberg FDR is
    taken across modules. Random gene sets are not a fair null for a module (see the module
    docstring): the p-values are anti-conservative even for modules of
    :func:`pooled_network`; :func:`geneattn.differential.cell_label_test` holds its level.

    Parameters
    ----------
    case, control
        Networks of the two conditions (modules were found in ``case``).
    modules
        Module of each case gene (0 = unassigned, not tested).
    n_permutations
        Random gene sets per module (at least 1).
    seed
        Seed of the permutations.

    Returns
    -------
    pandas.DataFrame
        One row per module: ``module``, ``size``, ``n_pairs`` (defined pairs), ``case_mean``,
        ``control_mean``, ``diff``, ``p_value``, ``fdr``, ``n_permutations`` and ``test``
        (``"genes"``); ``diff`` and the p-value are NaN for a module without defined pairs.
    """
    import pandas as pd

    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    modules = np.asarray(modules, dtype=np.int64)
    n = case.n_genes
    if len(modules) != n:
        raise ValueError(f"{len(modules)} module labels for {n} genes")
    case_mean = sparse.csr_matrix(case.mean_attention)
    control_mean = _aligned(control, case.gene_ids)
    diff_values, both_defined = _difference(case_mean, control_mean)

    rng = np.random.default_rng(seed)
    rows = []
    for module in np.unique(modules[modules > 0]).tolist():
        members = np.flatnonzero(modules == module)
        total, n_pairs = _block_sum(diff_values, both_defined, members)
        if n_pairs:
            both = both_defined[np.ix_(members, members)]
            c_mean = float(case_mean[members][:, members].toarray()[both].mean())
            k_mean = float(control_mean[members][:, members].toarray()[both].mean())
            observed = total / n_pairs
            null = np.empty(n_permutations)
            for b in range(n_permutations):
                genes = rng.choice(n, size=len(members), replace=False)
                s, c = _block_sum(diff_values, both_defined, genes)
                null[b] = s / c if c else np.nan
            extreme = np.isnan(null) | (np.abs(null) >= abs(observed))
            p_value = (1.0 + float(extreme.sum())) / (1.0 + n_permutations)
        else:
            c_mean = k_mean = observed = p_value = float("nan")
        rows.append(
            {
                "module": module,
                "size": len(members),
                "n_pairs": n_pairs,
                "case_mean": c_mean,
                "control_mean": k_mean,
                "diff": observed,
                "p_value": p_value,
            }
        )
    table = pd.DataFrame(rows, columns=list(DIFFERENTIAL_COLUMNS[:7]))
    table["module"] = table["module"].astype(np.int64)
    table["size"] = table["size"].astype(np.int64)
    table["n_pairs"] = table["n_pairs"].astype(np.int64)
    table["fdr"] = bh_fdr(table["p_value"].to_numpy(dtype=np.float64))
    table["n_permutations"] = np.int64(n_permutations)
    table["test"] = "genes"
    return table


def detection_network(
    case: GeneNetwork, control: GeneNetwork | None, detect_on: str = "pooled"
) -> GeneNetwork:
    """The network modules are found in.

    Parameters
    ----------
    case
        Network of the case condition (or the only one).
    control
        Network of the control condition; None for a single-condition study.
    detect_on
        ``"case"`` or ``"pooled"`` (:func:`pooled_network` with the ``top_k`` the case
        network was built with); ignored without ``control``.

    Returns
    -------
    GeneNetwork
        ``case`` itself, or the pooled network.

    Raises
    ------
    ValueError
        If ``detect_on`` is unknown, or the pooled network is asked for and the case network
        records no ``top_k``.
    """
    if detect_on not in ("case", "pooled"):
        raise ValueError(f"detect_on must be 'case' or 'pooled', got {detect_on!r}")
    if control is None or detect_on == "case":
        return case
    top_k = case.params.get("top_k")
    if not isinstance(top_k, int) or top_k < 1:
        raise ValueError("no top_k recorded in the network's parameters")
    return pooled_network(case, control, top_k=top_k)


#: What :func:`pooled_network` takes over from the case network's diffusion.
_DIFFUSION_PARAMS = ("diffusion", "alpha", "t", "iterations")


def pooled_network(case: GeneNetwork, control: GeneNetwork, *, top_k: int) -> GeneNetwork:
    """Network of the average mean attention of two conditions, to find modules in.

    The weight of a pair defined in both conditions is ``(case + control) / 2`` of their
    mean attention (pairs defined in only one are left out), symmetrised when the case
    network is undirected, then sparsified to ``top_k`` edges per gene like
    :func:`geneattn.network.build_network` (no diffusion). Genes and their annotation are the
    case network's; control genes are matched by Ensembl ID.

    Parameters
    ----------
    case, control
        Networks of the two conditions.
    top_k
        Edges kept per gene.

    Returns
    -------
    GeneNetwork
        ``mean_attention`` holds the averaged pairs; ``params`` records the source.
    """
    case_mean = sparse.csr_matrix(case.mean_attention)
    control_mean = _aligned(control, case.gene_ids)
    n = case.n_genes
    average = np.zeros((n, n))
    in_case = np.zeros((n, n), dtype=bool)
    in_both = np.zeros((n, n), dtype=bool)
    c = case_mean.tocoo()
    average[c.row, c.col] = 0.5 * c.data
    in_case[c.row, c.col] = True
    k = control_mean.tocoo()
    average[k.row, k.col] += 0.5 * k.data
    in_both[k.row, k.col] = in_case[k.row, k.col]
    np.multiply(average, in_both, out=average)
    rows, cols = np.nonzero(in_both)
    both = sparse.csr_matrix((average[rows, cols], (rows, cols)), shape=(n, n))
    weights = average
    method = case.params.get("diffusion", "none")
    if method != "none" and case.prior is not None:
        from geneattn.diffusion import diffuse

        weights = np.asarray(
            diffuse(
                average,
                case.prior,
                method=method,
                alpha=float(case.params.get("alpha", 0.25)),
                t=float(case.params.get("t", 5.0)),
                iterations=int(case.params.get("iterations", 6)),
            )
        )
        np.fill_diagonal(weights, 0.0)
    if not case.directed:
        weights = symmetrize(weights)
    return replace(
        case,
        adjacency=top_k_edges(weights, top_k, directed=case.directed),
        mean_attention=both,
        condition=f"{case.condition}+{control.condition}",
        params={
            "pooled": [case.condition, control.condition],
            "top_k": int(top_k),
            "symmetric": not case.directed,
        }
        | {k: case.params[k] for k in _DIFFUSION_PARAMS if k in case.params},
    )


def module_graph(
    network: GeneNetwork,
    table: pd.DataFrame,
    differential: pd.DataFrame | None = None,
    weights: sparse.spmatrix | None = None,
) -> nx.Graph:
    """Undirected networkx graph of the modules, for GraphML and Cytoscape.

    Nodes carry the attributes of :func:`geneattn.network.network_graph` plus ``module``,
    ``hub_rank``, ``weighted_degree``, ``intramodular_connectivity`` and, for genes of a tested
    module, the module's ``module_size``, ``module_case_mean``, ``module_control_mean``,
    ``module_diff``, ``module_p_value`` and ``module_fdr`` (left out where undefined, never
    empty or None). Edges carry the undirected ``weight``.
    """
    w = undirected_weights(network.adjacency) if weights is None else sparse.csr_matrix(weights)
    undirected = replace(network, adjacency=w, directed=False)
    per_gene = table.set_index("gene_id").loc[network.gene_ids]
    modules = per_gene["module"].to_numpy(dtype=np.int64)
    attributes: dict[str, np.ndarray] = {
        "module": modules,
        "hub_rank": per_gene["hub_rank"].to_numpy(dtype=np.int64),
        "weighted_degree": per_gene["weighted_degree"].to_numpy(dtype=np.float64),
        "intramodular_connectivity": per_gene["intramodular_connectivity"].to_numpy(
            dtype=np.float64
        ),
    }
    if differential is not None:
        by_module = differential.set_index("module")
        for column, name in (
            ("size", "module_size"),
            ("case_mean", "module_case_mean"),
            ("control_mean", "module_control_mean"),
            ("diff", "module_diff"),
            ("p_value", "module_p_value"),
            ("fdr", "module_fdr"),
        ):
            values = np.full(network.n_genes, np.nan)
            for module, value in by_module[column].items():
                values[modules == module] = float(value)
            attributes[name] = values
    return network_graph(undirected, attributes)


@dataclass(frozen=True)
class ModuleResults:
    """What :func:`find_modules` finds.

    Attributes
    ----------
    network
        The network the modules were found in (the case network, or the pooled one).
    weights
        Its undirected weights.
    modules
        int64 module of each of its genes (0: unassigned).
    table
        :func:`module_table`: one row per gene.
    enrichment
        :func:`geneattn.enrichment.module_enrichment` of the modules.
    differential
        The gene-set test of :func:`differential_connectivity` (without rows for a
        single-condition study), or None when it was not asked for.
    graph
        :func:`module_graph` for GraphML, or None when it was not asked for.
    """

    network: GeneNetwork
    weights: sparse.csr_matrix
    modules: np.ndarray
    table: pd.DataFrame
    enrichment: pd.DataFrame
    differential: pd.DataFrame | None
    graph: nx.Graph | None


def find_modules(
    case: GeneNetwork,
    control: GeneNetwork | None = None,
    *,
    gene_sets: Mapping[str, Mapping[str, Sequence[str]]],
    detect_on: str = "pooled",
    objective: str = "rb_configuration",
    resolution: float = 1.0,
    seed: int = 0,
    min_size: int = 5,
    min_set_size: int = 3,
    gene_set_test: bool = False,
    permutations: int = 1000,
    graph: bool = True,
    case_source: str | Path | None = None,
    control_source: str | Path | None = None,
) -> ModuleResults:
    """Leiden modules of the case (or pooled) network, their hubs and enrichment.

    Parameters
    ----------
    case
        Network of the case condition (or the only one).
    control
        Network of the control condition; None for a single-condition study.
    gene_sets
        ``{collection: {gene set: symbols}}`` (:func:`geneattn.enrichment.load_gene_sets`).
    detect_on
        ``"case"`` or ``"pooled"`` (:func:`detection_network`).
    objective, resolution, seed, min_size
        As for :func:`leiden_modules`; ``seed`` also seeds the gene-set test.
    min_set_size
        Gene sets with fewer network genes are skipped.
    gene_set_test
        Also run :func:`differential_connectivity` (``permutations`` random gene sets per
        module; a table without rows for a single-condition study).
    permutations
        Random gene sets per module of the gene-set test.
    graph
        Also build :func:`module_graph` (with the gene-set test's results when there are).
    case_source, control_source
        Files of the networks, named in errors and warnings.

    Returns
    -------
    ModuleResults
        The modules and their tables.

    Raises
    ------
    InputError
        The networks share no gene, or the pooled network cannot be made.
    """
    from geneattn.enrichment import module_enrichment
    from geneattn.errors import InputError

    if control is not None:
        shared = len(set(case.gene_ids.tolist()) & set(control.gene_ids.tolist()))
        if shared == 0:
            raise InputError(
                f"no gene in common with the case network {case_source}", control_source
            )
        if shared < case.n_genes:
            log.warning(
                "%s lacks %d of the case network's %d genes; their pairs are not compared",
                control_source,
                case.n_genes - shared,
                case.n_genes,
            )
    else:
        log.info("single-condition study: modules of %s, no differential test", case_source)
    try:
        detected_in = detection_network(case, control, detect_on)
    except ValueError as err:
        raise InputError(str(err), case_source) from None
    weights = undirected_weights(detected_in.adjacency)
    modules = leiden_modules(
        weights, resolution=resolution, objective=objective, seed=seed, min_size=min_size
    )
    table = module_table(detected_in, modules, weights)
    differential = None
    if not gene_set_test:
        pass
    elif control is None:
        differential = empty_differential()
    else:
        differential = differential_connectivity(
            case, control, modules, n_permutations=permutations, seed=seed
        )
    enrichment = module_enrichment(
        modules, case.gene_ids, case.gene_symbols, gene_sets, min_set_size=min_set_size
    )
    module_graph_ = None
    if graph:
        module_graph_ = module_graph(
            detected_in, table, None if control is None else differential, weights
        )
    log.info(
        "%d modules (%d of %d genes assigned), %d enriched gene sets at FDR < 0.05",
        int(modules.max(initial=0)),
        int((modules > 0).sum()),
        case.n_genes,
        int((enrichment["fdr"] < 0.05).sum()),
    )
    return ModuleResults(
        network=detected_in,
        weights=weights,
        modules=modules,
        table=table,
        enrichment=enrichment,
        differential=differential,
        graph=module_graph_,
    )


def _connectivity(w: sparse.csr_matrix, modules: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    degree = np.asarray(w.sum(axis=1)).ravel()
    coo = w.tocoo()
    same = (modules[coo.row] == modules[coo.col]) & (modules[coo.row] > 0)
    intra = np.bincount(coo.row[same], weights=coo.data[same], minlength=w.shape[0])
    return degree, intra


def _hub_ranks(modules: np.ndarray, intra: np.ndarray, degree: np.ndarray) -> np.ndarray:
    order = np.lexsort((np.arange(len(modules)), -degree, -intra, modules))
    sorted_modules = modules[order]
    position = np.arange(len(order)) - np.searchsorted(sorted_modules, sorted_modules, "left")
    rank = np.zeros(len(modules), dtype=np.int64)
    rank[order] = position + 1
    rank[modules == 0] = 0
    return rank


def _aligned(network: GeneNetwork, gene_ids: np.ndarray) -> sparse.csr_matrix:
    """``network.mean_attention`` re-indexed to ``gene_ids`` (missing genes: no entries)."""
    index = {g: i for i, g in enumerate(gene_ids.tolist())}
    target = np.array([index.get(g, -1) for g in network.gene_ids.tolist()], dtype=np.int64)
    coo = sparse.coo_matrix(network.mean_attention)
    rows, cols = target[coo.row], target[coo.col]
    keep = (rows >= 0) & (cols >= 0)
    n = len(gene_ids)
    out = sparse.csr_matrix((coo.data[keep], (rows[keep], cols[keep])), shape=(n, n))
    out.sort_indices()
    return out


def _difference(
    case: sparse.csr_matrix, control: sparse.csr_matrix
) -> tuple[np.ndarray, np.ndarray]:
    """Dense ``case - control`` on pairs defined in both (0 elsewhere), and that mask."""
    n = case.shape[0]
    values = np.zeros((n, n))
    in_case = np.zeros((n, n), dtype=bool)
    in_control = np.zeros((n, n), dtype=bool)
    c = case.tocoo()
    values[c.row, c.col] = c.data
    in_case[c.row, c.col] = True
    k = control.tocoo()
    values[k.row, k.col] -= k.data
    in_control[k.row, k.col] = True
    np.logical_and(in_case, in_control, out=in_case)
    np.multiply(values, in_case, out=values)
    return values, in_case


def _block_sum(values: np.ndarray, defined: np.ndarray, genes: np.ndarray) -> tuple[float, int]:
    """Sum of ``values`` and number of defined entries over ``genes x genes``."""
    genes = np.sort(genes)
    block = np.take(np.take(values, genes, axis=0), genes, axis=1)
    mask = np.take(np.take(defined, genes, axis=0), genes, axis=1)
    return float(block.sum()), int(np.count_nonzero(mask))
