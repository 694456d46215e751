"""Network stage: mean attention, top-k sparsification, network file, edge list, GraphML, CLI."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from geneattn.attention_sums import AttentionSums, save_attention_sums
from geneattn.cli import main
from geneattn.errors import InputError
from geneattn.network import (
    build_network,
    edge_table,
    load_network,
    mean_attention,
    network_graph,
    save_graphml,
    save_network,
    symmetrize,
    top_k_edges,
)


def simulate_sums(n_genes: int = 12, n_cells: int = 60, seed: int = 0) -> AttentionSums:
    """Softmax attention of random cells, three planted blocks of genes attending each other."""
    rng = np.random.default_rng(seed)
    block = np.arange(n_genes) * 3 // n_genes
    sums = np.zeros((n_genes, n_genes))
    counts = np.zeros((n_genes, n_genes), dtype=np.int64)
    incoming = np.zeros(n_genes)
    gene_cells = np.zeros(n_genes, dtype=np.int64)
    for _ in range(n_cells):
        idx = np.flatnonzero(rng.random(n_genes) < 0.8)
        logits = rng.normal(size=(len(idx), len(idx))) + 3.0 * (
            block[idx][:, None] == block[idx][None, :]
        )
        a = np.exp(logits)
        a /= a.sum(axis=1, keepdims=True)
        sums[np.ix_(idx, idx)] += a
        counts[np.ix_(idx, idx)] += 1
        incoming[idx] += a.sum(axis=0)
        gene_cells[idx] += 1
    return AttentionSums(
        gene_ids=np.array([f"ENSG{i:011d}" for i in range(n_genes)]),
        gene_symbols=np.array(["" if i == 3 else f"GENE{i}" for i in range(n_genes)]),
        sums=sums,
        counts=counts,
        incoming=incoming,
        gene_cells=gene_cells,
        n_cells=n_cells,
        condition="Tumor",
    )


def reference_top_k(weights: np.ndarray, k: int, *, directed: bool) -> set[tuple[int, int]]:
    """Plain loops: each gene's incident edges sorted by (-weight, source, target)."""
    n = weights.shape[0]
    edges = [
        (i, j)
        for i in range(n)
        for j in range(n)
        if i != j and weights[i, j] > 0 and (directed or i < j)
    ]
    kept = set()
    for g in range(n):
        incident = sorted((e for e in edges if g in e), key=lambda e: (-weights[e], e[0], e[1]))
        kept.update(incident[:k])
    return kept


def edges_of(matrix: sp.csr_matrix, *, directed: bool) -> set[tuple[int, int]]:
    coo = matrix.tocoo()
    return {(int(i), int(j)) for i, j in zip(coo.row, coo.col, strict=True) if directed or i < j}


def test_mean_attention_by_hand():
    sums = np.array([[4.0, 1.0, 0.6], [2.0, 3.0, 0.0], [0.2, 0.0, 1.0]])
    counts = np.array([[4, 2, 1], [2, 3, 0], [1, 0, 2]])
    data = AttentionSums(
        gene_ids=np.array(["A", "B", "C"]),
        gene_symbols=np.array(["a", "b", "c"]),
        sums=sums,
        counts=counts,
        incoming=np.zeros(3),
        gene_cells=np.array([4, 3, 2]),
        n_cells=4,
        condition="x",
    )
    mean, defined = mean_attention(data, min_cells=2)
    np.testing.assert_array_equal(mean, [[0, 0.5, 0], [1.0, 0, 0], [0, 0, 0]])
    np.testing.assert_array_equal(defined, [[0, 1, 0], [1, 0, 0], [0, 0, 0]])
    mean1, defined1 = mean_attention(data, min_cells=1)
    assert mean1[0, 2] == pytest.approx(0.6) and mean1[2, 0] == pytest.approx(0.2)
    assert defined1.sum() == 4
    with pytest.raises(ValueError, match="min_cells"):
        mean_attention(data, min_cells=0)


# A 5-gene symmetric example, worked out by hand for k = 1 and k = 2.
#       0    1    2    3    4
W5 = np.array(
    [
        [0.0, 0.9, 0.5, 0.1, 0.0],
        [0.9, 0.0, 0.8, 0.0, 0.0],
        [0.5, 0.8, 0.0, 0.3, 0.3],
        [0.1, 0.0, 0.3, 0.0, 0.2],
        [0.0, 0.0, 0.3, 0.2, 0.0],
    ]
)


def test_top_k_by_hand_undirected():
    # k=1: gene 0 -> {0,1}; 1 -> {0,1}; 2 -> {1,2}; 3 -> {2,3} (0.3); 4 -> tie 0.3 {2,4}
    # vs 0.2 {3,4}: {2,4}.
    kept = top_k_edges(W5, 1, directed=False)
    assert edges_of(kept, directed=False) == {(0, 1), (1, 2), (2, 3), (2, 4)}
    assert (kept != kept.T).nnz == 0
    assert kept[2, 4] == 0.3 and kept[4, 2] == 0.3
    # k=2 adds 0's second (0,2), 3's second (3,4) and 4's second (3,4); 2's top two are
    # 0.8 (1,2) and 0.5 (0,2). Edge (0,3) = 0.1 is nobody's top two.
    kept2 = top_k_edges(W5, 2, directed=False)
    assert edges_of(kept2, directed=False) == {(0, 1), (1, 2), (0, 2), (2, 3), (2, 4), (3, 4)}


def test_top_k_tie_break_is_by_gene_index():
    # a star of equal weights with k=1: the centre keeps its lowest-index leaf, and each leaf
    # keeps its only edge, so every edge survives
    star = np.zeros((4, 4))
    star[0, 1:] = star[1:, 0] = 0.5
    assert edges_of(top_k_edges(star, 1, directed=False), directed=False) == {
        (0, 1),
        (0, 2),
        (0, 3),
    }
    # a triangle of equal weights: gene 0 keeps (0,1), gene 1 keeps (0,1), gene 2 keeps (0,2)
    tri = np.ones((3, 3)) - np.eye(3)
    assert edges_of(top_k_edges(tri, 1, directed=False), directed=False) == {(0, 1), (0, 2)}


def test_top_k_directed_by_hand():
    w = np.array([[0.0, 0.6, 0.1], [0.2, 0.0, 0.0], [0.4, 0.5, 0.0]])
    # incident edges, by weight: gene 0: 0->1 .6, 2->0 .4, 1->0 .2, 0->2 .1
    # gene 1: 0->1 .6, 2->1 .5, 1->0 .2 ; gene 2: 2->1 .5, 2->0 .4, 0->2 .1
    assert edges_of(top_k_edges(w, 1, directed=True), directed=True) == {(0, 1), (2, 1)}
    assert edges_of(top_k_edges(w, 2, directed=True), directed=True) == {(0, 1), (2, 0), (2, 1)}


@settings(max_examples=60, deadline=None)
@given(
    arrays(np.float64, (7, 7), elements=st.sampled_from([0.0, 0.1, 0.2, 0.3, 0.5])),
    st.integers(1, 4),
    st.booleans(),
    st.booleans(),
)
def test_top_k_matches_reference(w, k, directed, as_sparse):
    if not directed:
        w = np.maximum(w, w.T)
    expected = reference_top_k(w, k, directed=directed)
    matrix = sp.csr_matrix(w) if as_sparse else w
    kept = top_k_edges(matrix, k, directed=directed)
    assert edges_of(kept, directed=directed) == expected
    for i, j in expected:
        assert kept[i, j] == w[i, j]
    assert kept.diagonal().sum() == 0


def test_top_k_rejects_bad_input():
    with pytest.raises(ValueError, match="symmetric"):
        top_k_edges(np.triu(W5), 2, directed=False)
    with pytest.raises(ValueError, match="non-negative"):
        top_k_edges(-W5, 2, directed=True)
    with pytest.raises(ValueError, match="at least 1"):
        top_k_edges(W5, 0, directed=True)


def test_symmetrize():
    w = np.array([[0.0, 1.0], [0.0, 0.0]])
    np.testing.assert_array_equal(symmetrize(w), [[0, 0.5], [0.5, 0]])
    np.testing.assert_array_equal(symmetrize(sp.csr_matrix(w)).toarray(), [[0, 0.5], [0.5, 0]])


def test_build_network_steps():
    data = simulate_sums()
    mean, defined = mean_attention(data, min_cells=40)
    net = build_network(data, min_cells=40, top_k=3, symmetric=True)
    w = (mean + mean.T) / 2
    assert edges_of(net.adjacency, directed=False) == reference_top_k(w, 3, directed=False)
    assert net.adjacency.diagonal().sum() == 0 and not net.directed
    # pairs below min_cells are undefined: no mean entry, no edge
    low = (data.counts < 40) & ~np.eye(12, dtype=bool)
    assert low.any()
    assert not np.any(net.adjacency.toarray()[low])
    mean_csr = net.mean_attention.toarray()
    np.testing.assert_allclose(mean_csr[defined], (data.sums / data.counts)[defined])
    assert net.mean_attention.nnz == defined.sum()
    # planted blocks of 4 genes: with k = 3, (almost) every kept edge stays in its block
    block = np.arange(12) * 3 // 12
    coo = build_network(data, min_cells=5, top_k=3, symmetric=True).adjacency.tocoo()
    assert np.mean(block[coo.row] == block[coo.col]) > 0.9

    directed = build_network(data, min_cells=1, top_k=2)
    assert directed.directed
    m1, _ = mean_attention(data, min_cells=1)
    assert edges_of(directed.adjacency, directed=True) == reference_top_k(m1, 2, directed=True)
    assert directed.params == {"min_cells": 1, "top_k": 2, "symmetric": False, "diffusion": "none"}


def test_network_file_round_trip_and_scipy_compatibility(tmp_path):
    net = build_network(simulate_sums(), min_cells=5, top_k=3, symmetric=True)
    save_network(tmp_path / "net.npz", net)
    save_network(tmp_path / "again.npz", net)
    assert (tmp_path / "net.npz").read_bytes() == (tmp_path / "again.npz").read_bytes()
    adjacency = sp.load_npz(tmp_path / "net.npz")
    assert (adjacency != net.adjacency).nnz == 0
    back = load_network(tmp_path / "net.npz")
    assert (back.adjacency != net.adjacency).nnz == 0
    np.testing.assert_array_equal(back.mean_attention.toarray(), net.mean_attention.toarray())
    assert back.mean_attention.nnz == net.mean_attention.nnz
    np.testing.assert_array_equal(back.gene_ids, net.gene_ids)
    np.testing.assert_array_equal(back.gene_symbols, net.gene_symbols)
    np.testing.assert_array_equal(back.incoming, net.incoming)
    assert (back.n_cells, back.condition, back.directed) == (60, "Tumor", False)
    assert back.params == net.params


def test_mean_attention_keeps_defined_zero_pairs(tmp_path):
    data = simulate_sums()
    sums = data.sums.copy()
    sums[0, 1] = 0.0  # a defined pair with zero attention stays defined
    net = build_network(
        AttentionSums(**{**data.__dict__, "sums": sums}), min_cells=1, top_k=2, symmetric=True
    )
    save_network(tmp_path / "net.npz", net)
    back = load_network(tmp_path / "net.npz")
    row = back.mean_attention[0]
    assert 1 in row.indices.tolist() and row[0, 1] == 0.0


def test_load_network_errors_name_the_file(tmp_path):
    with pytest.raises(InputError, match="file not found") as err:
        load_network(tmp_path / "none.npz")
    assert err.value.path == tmp_path / "none.npz"
    plain = tmp_path / "plain.npz"
    sp.save_npz(plain, sp.csr_matrix(np.eye(3)))
    with pytest.raises(InputError, match="not a geneattn network file: missing gene_ids") as err:
        load_network(plain)
    assert err.value.path == plain
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"\x00" * 10)
    with pytest.raises(InputError, match="cannot read") as err:
        load_network(garbage)
    assert err.value.path == garbage


def test_edge_table_and_graphml(tmp_path):
    net = build_network(simulate_sums(), min_cells=5, top_k=2, symmetric=True)
    table = edge_table(net)
    assert list(table.columns) == ["source", "target", "weight", "source_id", "target_id"]
    assert len(table) == net.adjacency.nnz // 2
    assert table["weight"].is_monotonic_decreasing
    # gene 3 has no symbol: labelled by its Ensembl ID
    assert "GENE3" not in set(table["source"]) | set(table["target"])
    idx = {g: i for i, g in enumerate(net.gene_ids)}
    for row in table.itertuples():
        assert net.adjacency[idx[row.source_id], idx[row.target_id]] == row.weight

    save_graphml(tmp_path / "net.graphml", network_graph(net))
    graph = nx.read_graphml(tmp_path / "net.graphml")
    assert not graph.is_directed()
    assert graph.number_of_nodes() == 12 and graph.number_of_edges() == len(table)
    node = graph.nodes["ENSG00000000003"]
    assert node["symbol"] == "" and node["label"] == "ENSG00000000003"
    assert isinstance(node["incoming_attention"], float) and node["incoming_attention"] > 0
    assert isinstance(node["n_cells_present"], int)
    text = (tmp_path / "net.graphml").read_text()
    assert "None" not in text and 'attr.type="double"' in text

    directed = build_network(simulate_sums(), min_cells=5, top_k=2)
    assert network_graph(directed).is_directed()


def test_cli_network_outputs_are_complete_and_reproducible(tmp_path, capsys):
    sums_path = tmp_path / "attention" / "Tumor.npz"
    save_attention_sums(sums_path, simulate_sums())
    outputs = {}
    for run in ("a", "b"):
        out = {
            "npz": tmp_path / run / "network.npz",
            "edges": tmp_path / run / "edges.tsv",
            "graphml": tmp_path / run / "network.graphml",
        }
        args = ["network", str(sums_path), "--min-cells", "5", "--top-k", "3", "--symmetrize"]
        args += ["--out-npz", str(out["npz"]), "--out-edges", str(out["edges"])]
        args += ["--out-graphml", str(out["graphml"])]
        assert main(args) == 0
        outputs[run] = {k: p.read_bytes() for k, p in out.items()}
        assert sorted(q.name for q in (tmp_path / run).iterdir()) == sorted(
            p.name for p in out.values()
        )
    assert outputs["a"] == outputs["b"]
    edges = pd.read_csv(tmp_path / "a" / "edges.tsv", sep="\t", keep_default_na=False)
    net = load_network(tmp_path / "a" / "network.npz")
    assert len(edges) == net.adjacency.nnz // 2
    assert net.params["input"] == str(sums_path)
    first = (tmp_path / "a" / "edges.tsv").read_text().splitlines()[1].split("\t")
    assert first[2] == f"{float(first[2]):.6g}"  # fixed float format, not repr


def test_cli_network_bad_input_writes_nothing(tmp_path, capsys):
    sums_path = tmp_path / "Tumor.npz"
    save_attention_sums(sums_path, simulate_sums())
    outs = [
        "--out-npz",
        str(tmp_path / "o" / "n.npz"),
        "--out-edges",
        str(tmp_path / "o" / "e.tsv"),
        "--out-graphml",
        str(tmp_path / "o" / "g.graphml"),
    ]
    assert main(["network", str(sums_path), "--diffusion", "ppr", *outs]) == 2
    assert "--prior ppi needs --ppi" in capsys.readouterr().err
    bogus = tmp_path / "bogus.npz"
    bogus.write_text("x")
    assert main(["network", str(bogus), *outs]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bogus) in err[0]
    assert main(["network", str(sums_path), "--top-k", "0", *outs]) == 2
    assert not (tmp_path / "o").exists() or list((tmp_path / "o").iterdir()) == []
