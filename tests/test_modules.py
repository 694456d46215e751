"""Modules: Leiden recovers planted blocks deterministically; hubs; differential attention."""

from __future__ import annotations

import dataclasses

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from geneattn.attention_sums import AttentionSums
from geneattn.cli import main
from geneattn.modules import (
    DIFFERENTIAL_COLUMNS,
    differential_connectivity,
    leiden_modules,
    module_graph,
    module_table,
    pooled_network,
    relabel_modules,
    undirected_weights,
)
from geneattn.network import GeneNetwork, build_network, save_network

BLOCKS = np.repeat(np.arange(5), 8)  # 40 genes in 5 planted blocks of 8


def simulate(
    seed: int, *, boost: int | None = None, condition: str = "case", blocks: np.ndarray = BLOCKS
) -> AttentionSums:
    """Cells whose attention favours genes of the same block; ``boost`` strengthens one block."""
    rng = np.random.default_rng(seed)
    n = len(blocks)
    sums = np.zeros((n, n))
    counts = np.zeros((n, n), dtype=np.int64)
    incoming = np.zeros(n)
    gene_cells = np.zeros(n, dtype=np.int64)
    for _ in range(80):
        idx = np.flatnonzero(rng.random(n) < 0.8)
        b = blocks[idx]
        logits = rng.normal(size=(len(idx), len(idx))) + 3.0 * (b[:, None] == b[None, :])
        if boost is not None:
            hot = b == boost
            logits += 2.0 * (hot[:, None] & hot[None, :])
        a = np.exp(logits)
        a /= a.sum(axis=1, keepdims=True)
        sums[np.ix_(idx, idx)] += a
        counts[np.ix_(idx, idx)] += 1
        incoming[idx] += a.sum(axis=0)
        gene_cells[idx] += 1
    return AttentionSums(
        gene_ids=np.array([f"ENSG{i:011d}" for i in range(n)]),
        gene_symbols=np.array([f"G{i}" for i in range(n)]),
        sums=sums,
        counts=counts,
        incoming=incoming,
        gene_cells=gene_cells,
        n_cells=80,
        condition=condition,
    )


@pytest.fixture(scope="module")
def case_net() -> GeneNetwork:
    return build_network(simulate(0, boost=2), min_cells=3, top_k=5, symmetric=True)


@pytest.fixture(scope="module")
def control_net() -> GeneNetwork:
    return build_network(simulate(1, condition="control"), min_cells=3, top_k=5, symmetric=True)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = {(int(x), int(y)) for x, y in zip(a, b, strict=True)}
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_leiden_recovers_planted_blocks_deterministically(case_net):
    w = undirected_weights(case_net.adjacency)
    first = leiden_modules(w, resolution=1.0, seed=0, min_size=3)
    second = leiden_modules(w, resolution=1.0, seed=0, min_size=3)
    np.testing.assert_array_equal(first, second)
    assert same_partition(first, BLOCKS)
    assert sorted(set(first.tolist())) == [1, 2, 3, 4, 5]
    modularity = leiden_modules(w, objective="modularity", seed=3, min_size=3)
    assert same_partition(modularity, BLOCKS)


def test_leiden_two_blocks_bridged_by_a_weak_edge():
    w = np.zeros((10, 10))
    w[:5, :5] = 1.0
    w[5:, 5:] = 2.0
    w[4, 5] = w[5, 4] = 0.1
    np.fill_diagonal(w, 0)
    modules = leiden_modules(sp.csr_matrix(w), seed=7, min_size=1)
    # equal sizes: module 1 is the block holding the lowest gene index
    np.testing.assert_array_equal(modules, [1] * 5 + [2] * 5)
    with pytest.raises(ValueError, match="symmetric"):
        leiden_modules(sp.csr_matrix(np.triu(w)))
    with pytest.raises(ValueError, match="objective"):
        leiden_modules(sp.csr_matrix(w), objective="cpm")


def test_relabel_orders_by_size_and_dissolves_small_modules():
    membership = np.array([5, 5, 9, 9, 9, 2, 7, 7])
    np.testing.assert_array_equal(relabel_modules(membership), [2, 2, 1, 1, 1, 4, 3, 3])
    np.testing.assert_array_equal(relabel_modules(membership, min_size=2), [2, 2, 1, 1, 1, 0, 3, 3])
    np.testing.assert_array_equal(relabel_modules(membership, min_size=3), [0, 0, 1, 1, 1, 0, 0, 0])


def test_undirected_weights_averages_directions():
    a = sp.csr_matrix(np.array([[0, 0.4, 0], [0, 0, 0.2], [0, 0.6, 0]]))
    np.testing.assert_allclose(
        undirected_weights(a).toarray(), [[0, 0.2, 0], [0.2, 0, 0.4], [0, 0.4, 0]]
    )


def _toy_network(weights: np.ndarray) -> GeneNetwork:
    n = weights.shape[0]
    return GeneNetwork(
        gene_ids=np.array([f"E{i}" for i in range(n)]),
        gene_symbols=np.array(["", "B", "C", "D", "E", "F"][:n]),
        adjacency=sp.csr_matrix(weights),
        mean_attention=sp.csr_matrix(weights),
        incoming=np.ones(n),
        gene_cells=np.ones(n, dtype=np.int64),
        n_cells=1,
        condition="case",
        directed=False,
    )


def test_module_table_by_hand():
    w = np.zeros((6, 6))
    for i, j, x in [(0, 1, 0.5), (0, 2, 0.3), (1, 2, 0.4), (2, 3, 0.2), (3, 4, 0.6), (4, 5, 0.1)]:
        w[i, j] = w[j, i] = x
    modules = np.array([1, 1, 1, 2, 2, 0])
    table = module_table(_toy_network(w), modules)
    assert list(table.columns) == [
        "gene",
        "gene_id",
        "module",
        "weighted_degree",
        "intramodular_connectivity",
        "hub_rank",
    ]
    by_id = table.set_index("gene_id")
    np.testing.assert_allclose(
        by_id.loc[[f"E{i}" for i in range(6)], "weighted_degree"], [0.8, 0.9, 0.9, 0.8, 0.7, 0.1]
    )
    np.testing.assert_allclose(
        by_id.loc[[f"E{i}" for i in range(6)], "intramodular_connectivity"],
        [0.8, 0.9, 0.7, 0.6, 0.6, 0.0],
    )
    # module 1: E1 0.9 > E0 0.8 > E2 0.7; module 2: tie at 0.6, broken by weighted degree
    assert by_id.loc[["E1", "E0", "E2", "E3", "E4", "E5"], "hub_rank"].tolist() == [
        1,
        2,
        3,
        1,
        2,
        0,
    ]
    assert table["gene_id"].tolist() == ["E1", "E0", "E2", "E3", "E4", "E5"]
    assert by_id.loc["E0", "gene"] == "E0" and by_id.loc["E1", "gene"] == "B"


def test_differential_planted_block_is_the_most_significant(case_net, control_net):
    modules = leiden_modules(undirected_weights(case_net.adjacency), seed=0, min_size=3)
    boosted = int(modules[BLOCKS == 2][0])
    table = differential_connectivity(case_net, control_net, modules, n_permutations=199, seed=1)
    assert table["module"].tolist() == [1, 2, 3, 4, 5]
    row = table.set_index("module").loc[boosted]
    assert row["diff"] > 0 and row["diff"] == pytest.approx(row["case_mean"] - row["control_mean"])
    assert row["p_value"] == pytest.approx(1 / 200)  # no random set beats it
    assert table["p_value"].idxmin() == table.index[table["module"] == boosted][0]
    assert (table.drop(table.index[table["module"] == boosted])["p_value"] > 0.01).all()
    # p-values are (1 + count) / (1 + n) and FDR is BH across modules
    counts = table["p_value"] * 200 - 1
    np.testing.assert_allclose(counts, np.round(counts))
    assert (table["fdr"] >= table["p_value"]).all()
    assert (table["n_permutations"] == 199).all() and (table["size"] == 8).all()
    assert list(table.columns) == list(DIFFERENTIAL_COLUMNS) and (table["test"] == "genes").all()
    assert (table["n_pairs"] <= 56).all() and (table["n_pairs"] > 40).all()
    # the same seed gives the same table; the control's gene order does not matter
    again = differential_connectivity(case_net, control_net, modules, n_permutations=199, seed=1)
    pd.testing.assert_frame_equal(table, again)
    order = np.random.default_rng(0).permutation(40)
    shuffled = dataclasses.replace(
        control_net,
        gene_ids=control_net.gene_ids[order],
        gene_symbols=control_net.gene_symbols[order],
        mean_attention=control_net.mean_attention[order][:, order],
    )
    pd.testing.assert_frame_equal(
        table,
        differential_connectivity(case_net, shuffled, modules, n_permutations=199, seed=1),
    )


def test_differential_by_hand_on_a_tiny_example():
    case = np.array([[0, 0.5, 0.1], [0.3, 0, 0.1], [0.1, 0.1, 0]])
    control = np.array([[0, 0.1, 0.1], [0.1, 0, 0.1], [0.1, 0.1, 0]])
    net_case = dataclasses.replace(_toy_network(case), mean_attention=sp.csr_matrix(case))
    net_control = dataclasses.replace(_toy_network(control), mean_attention=sp.csr_matrix(control))
    table = differential_connectivity(net_case, net_control, np.array([1, 1, 0]), n_permutations=9)
    row = table.iloc[0]
    assert row["n_pairs"] == 2
    assert row["case_mean"] == pytest.approx(0.4) and row["control_mean"] == pytest.approx(0.1)
    assert row["diff"] == pytest.approx(0.3)
    # random pairs of genes: {0,1} gives 0.3, the other two pairs give 0: p = (1 + #{0,1}) / 10
    drawn = np.random.default_rng(0)
    hits = sum(set(drawn.choice(3, size=2, replace=False).tolist()) == {0, 1} for _ in range(9))
    assert row["p_value"] == pytest.approx((1 + hits) / 10)
    # a module whose pairs are undefined in the control gets NaN, not a p-value
    sparse_control = dataclasses.replace(
        net_control,
        mean_attention=sp.csr_matrix(np.array([[0, 0, 0.1], [0, 0, 0.1], [0.1, 0.1, 0]])),
    )
    undefined = differential_connectivity(net_case, sparse_control, np.array([1, 1, 0]))
    assert undefined.iloc[0]["n_pairs"] == 0 and np.isnan(undefined.iloc[0]["p_value"])


def test_pooled_network_by_hand():
    case = np.array([[0, 0.4, 0.2], [0.6, 0, 0], [0.2, 0, 0]])
    control = np.array([[0, 0.2, 0], [0.2, 0, 0.3], [0.1, 0.3, 0]])
    net_case = dataclasses.replace(_toy_network(case), mean_attention=sp.csr_matrix(case))
    net_control = dataclasses.replace(_toy_network(control), mean_attention=sp.csr_matrix(control))
    pooled = pooled_network(net_case, net_control, top_k=1)
    # pairs defined in both: (0,1), (1,0), (2,0); average then symmetrise
    np.testing.assert_allclose(
        pooled.mean_attention.toarray(), [[0, 0.3, 0], [0.4, 0, 0], [0.15, 0, 0]]
    )
    np.testing.assert_allclose(
        pooled.adjacency.toarray(), [[0, 0.35, 0.075], [0.35, 0, 0], [0.075, 0, 0]]
    )
    assert pooled.condition == "case+case" and not pooled.directed


def test_case_modules_favour_the_case_pooled_modules_do_not():
    """On attention without any structure or difference, modules chosen in the case network
    have a higher case than control attention (selection bias); pooled modules do not."""
    unstructured = np.arange(40)
    signs = {"case": [], "pooled": []}
    for seed in range(3):
        case = simulate(2 * seed, blocks=unstructured)
        control = simulate(2 * seed + 1, condition="control", blocks=unstructured)
        net_case = build_network(case, min_cells=3, top_k=5, symmetric=True)
        net_control = build_network(control, min_cells=3, top_k=5, symmetric=True)
        for where, net in (
            ("case", net_case),
            ("pooled", pooled_network(net_case, net_control, top_k=5)),
        ):
            modules = leiden_modules(undirected_weights(net.adjacency), seed=0, min_size=3)
            table = differential_connectivity(net_case, net_control, modules, n_permutations=9)
            signs[where] += np.sign(table["diff"]).tolist()
    assert all(s > 0 for s in signs["case"])
    assert 0.25 < np.mean(np.array(signs["pooled"]) > 0) < 0.75


def test_module_graph_attributes(tmp_path, case_net, control_net):
    weights = undirected_weights(case_net.adjacency)
    modules = leiden_modules(weights, seed=0, min_size=9)  # blocks of 8 -> all unassigned
    modules[:8] = 1
    table = module_table(case_net, modules, weights)
    diff = differential_connectivity(case_net, control_net, modules, n_permutations=19)
    graph = module_graph(case_net, table, diff, weights)
    nx.write_graphml(graph, tmp_path / "m.graphml")
    back = nx.read_graphml(tmp_path / "m.graphml")
    hub = back.nodes["ENSG00000000000"]
    assert hub["module"] == 1 and isinstance(hub["hub_rank"], int)
    assert isinstance(hub["module_p_value"], float) and hub["module_size"] == 8
    loose = back.nodes["ENSG00000000039"]
    assert loose["module"] == 0 and loose["hub_rank"] == 0
    assert "module_diff" not in loose and "module_p_value" not in loose
    assert back.number_of_edges() == weights.nnz // 2
    text = (tmp_path / "m.graphml").read_text()
    assert "None" not in text and "nan" not in text.lower()


def _write_gmt(path, sets):
    path.write_text("".join(f"{name}\tdesc\t" + "\t".join(genes) + "\n" for name, genes in sets))


def test_cli_modules_end_to_end(tmp_path, case_net, control_net, capsys):
    save_network(tmp_path / "case.npz", case_net)
    save_network(tmp_path / "control.npz", control_net)
    gmt = tmp_path / "sets.gmt"
    _write_gmt(
        gmt,
        [
            ("BLOCK2", [f"G{i}" for i in range(16, 24)]),
            ("MIXED", ["G0", "G9", "G17", "G33"]),
            ("TOO_SMALL", ["G1", "G2", "NOT_A_GENE"]),
        ],
    )

    def modules_args(out, *extra):
        args = ["modules", "--case", str(tmp_path / "case.npz")]
        args += ["--control", str(tmp_path / "control.npz"), "--resolution", "1.0", "--seed", "0"]
        args += ["--min-size", "3", "--gmt", str(gmt), "--min-set-size", "4"]
        args += ["--permutations", "99", "--out-modules", str(out / "modules.tsv")]
        args += ["--out-enrichment", str(out / "enrichment.tsv")]
        args += ["--out-differential", str(out / "differential.tsv")]
        return [*args, "--out-graphml", str(out / "modules.graphml"), *extra]

    runs = {}
    for run in ("a", "b"):
        assert main(modules_args(tmp_path / run)) == 0, capsys.readouterr().err
        runs[run] = {p.name: p.read_bytes() for p in sorted((tmp_path / run).iterdir())}
    assert runs["a"] == runs["b"]
    assert sorted(runs["a"]) == [
        "differential.tsv",
        "enrichment.tsv",
        "modules.graphml",
        "modules.tsv",
    ]
    modules = pd.read_csv(tmp_path / "a" / "modules.tsv", sep="\t")
    block2 = modules.loc[modules["gene"] == "G16", "module"].item()
    enrichment = pd.read_csv(tmp_path / "a" / "enrichment.tsv", sep="\t")
    top = enrichment.iloc[0]
    assert (top["module"], top["gene_set"], top["overlap"]) == (block2, "BLOCK2", 8)
    assert top["collection"] == "sets" and top["universe"] == 40
    assert "TOO_SMALL" not in set(enrichment["gene_set"])
    differential = pd.read_csv(tmp_path / "a" / "differential.tsv", sep="\t")
    assert differential.loc[differential["p_value"].idxmin(), "module"] == block2

    pooled = tmp_path / "pooled"
    assert main(modules_args(pooled, "--detect-on", "pooled")) == 0
    differential = pd.read_csv(pooled / "differential.tsv", sep="\t")
    modules = pd.read_csv(pooled / "modules.tsv", sep="\t")
    block2 = modules.loc[modules["gene"] == "G16", "module"].item()
    assert differential.loc[differential["p_value"].idxmin(), "module"] == block2
    assert differential["p_value"].min() == pytest.approx(1 / 100)


def test_cli_modules_bad_input_writes_nothing(tmp_path, case_net, control_net, capsys):
    save_network(tmp_path / "case.npz", case_net)
    save_network(tmp_path / "control.npz", control_net)
    bad_gmt = tmp_path / "bad.gmt"
    bad_gmt.write_text("ONLY_A_NAME\n")
    out = tmp_path / "out"
    args = ["modules", "--case", str(tmp_path / "case.npz")]
    args += ["--control", str(tmp_path / "control.npz"), "--gmt", str(bad_gmt)]
    args += ["--out-modules", str(out / "m.tsv"), "--out-enrichment", str(out / "e.tsv")]
    args += ["--out-differential", str(out / "d.tsv"), "--out-graphml", str(out / "g.graphml")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad_gmt) in err[0]
    other = dataclasses.replace(control_net, gene_ids=np.array([f"OTHER{i}" for i in range(40)]))
    save_network(tmp_path / "other.npz", other)
    good_gmt = tmp_path / "good.gmt"
    _write_gmt(good_gmt, [("SET", ["G1", "G2", "G3"])])
    args[4] = str(tmp_path / "other.npz")
    args[6] = str(good_gmt)
    assert main(args) == 2
    assert "no gene in common" in capsys.readouterr().err
    assert not out.exists() or list(out.iterdir()) == []


def test_cli_modules_single_condition(tmp_path, case_net, capsys):
    save_network(tmp_path / "all.npz", case_net)
    gmt = tmp_path / "sets.gmt"
    _write_gmt(gmt, [("BLOCK2", [f"G{i}" for i in range(16, 24)])])
    out = tmp_path / "out"
    args = ["modules", "--case", str(tmp_path / "all.npz"), "--detect-on", "pooled"]
    args += ["--min-size", "3", "--gmt", str(gmt), "--out-modules", str(out / "m.tsv")]
    args += ["--out-enrichment", str(out / "e.tsv"), "--out-differential", str(out / "d.tsv")]
    args += ["--out-graphml", str(out / "g.graphml")]
    assert main(args) == 0, capsys.readouterr().err
    differential = pd.read_csv(out / "d.tsv", sep="\t")
    assert differential.empty
    assert list(differential.columns) == list(DIFFERENTIAL_COLUMNS)
    modules = pd.read_csv(out / "m.tsv", sep="\t")
    # the planted blocks of the case network are the modules
    assert (
        modules.loc[modules["gene"].isin([f"G{i}" for i in range(16, 24)]), "module"].nunique() == 1
    )
    graph = nx.read_graphml(out / "g.graphml")
    assert all("module_diff" not in a for _, a in graph.nodes(data=True))


def _group_prior(groups: np.ndarray) -> sp.csr_matrix:
    """A prior linking every two genes of the same group."""
    same = (groups[:, None] == groups[None, :]).astype(np.float64)
    np.fill_diagonal(same, 0.0)
    return sp.csr_matrix(same)


def test_diffusion_and_its_prior_reach_the_pooled_modules(tmp_path):
    """The pooled network (default ``detect_on``) is diffused as the conditions' networks are:
    with diffusion its adjacency is the pooled attention diffused over the prior, so changing
    ``network.diffusion`` or ``network.prior`` changes the modules."""
    from geneattn.diffusion import diffuse
    from geneattn.network import load_network

    unstructured = np.arange(40)  # attention without modules: the prior has to make them
    case = simulate(0, blocks=unstructured)
    control = simulate(1, condition="control", blocks=unstructured)
    first = _group_prior(np.arange(40) // 8)
    second = _group_prior(np.arange(40) % 5)

    def pooled(diffusion: str, prior: sp.csr_matrix | None):
        nets = [
            build_network(
                data, min_cells=3, top_k=5, symmetric=True, diffusion=diffusion, prior=prior,
                alpha=0.1, iterations=6,
            )
            for data in (case, control)
        ]  # fmt: skip
        return pooled_network(*nets, top_k=5)

    plain = pooled("none", None)
    assert plain.prior is None and plain.params.get("diffusion", "none") == "none"
    by_first = pooled("ppr", first)
    by_second = pooled("ppr", second)
    heat = pooled("heat", first)
    # the adjacency is the diffused pooled attention, symmetrised and sparsified
    average = by_first.mean_attention.toarray()
    expected = np.asarray(diffuse(average, first, method="ppr", alpha=0.1, iterations=6))
    np.fill_diagonal(expected, 0.0)
    expected = (expected + expected.T) / 2
    kept = by_first.adjacency.toarray()
    np.testing.assert_allclose(kept[kept > 0], expected[kept > 0], rtol=1e-12)
    assert by_first.params["diffusion"] == "ppr" and by_first.params["alpha"] == 0.1

    def modules_of(net):
        return leiden_modules(undirected_weights(net.adjacency), seed=0, min_size=3)

    nets = {"none": plain, "first": by_first, "second": by_second, "heat": heat}
    found = {name: modules_of(net) for name, net in nets.items()}
    assert not np.array_equal(found["none"], found["first"])
    assert not np.array_equal(found["first"], found["second"])
    assert not np.array_equal(by_first.adjacency.toarray(), heat.adjacency.toarray())

    # the prior travels with the network file, so the modules stage can diffuse the pool
    net = build_network(case, min_cells=3, top_k=5, symmetric=True, diffusion="ppr", prior=first)
    save_network(tmp_path / "n.npz", net)
    back = load_network(tmp_path / "n.npz")
    assert (back.prior != first).nnz == 0
    save_network(tmp_path / "plain.npz", build_network(case, min_cells=3, top_k=5))
    assert load_network(tmp_path / "plain.npz").prior is None
