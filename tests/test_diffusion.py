"""GenoHoption diffusion against dense numpy series, and the prior gene graphs."""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import expm

from geneattn.attention_sums import AttentionSums, save_attention_sums
from geneattn.cli import main
from geneattn.diffusion import (
    coexpression_prior,
    coexpression_prior_from_h5ad,
    diffuse,
    diffusion_operator,
    heat_diffusion,
    log_normalise,
    pearson_correlation,
    ppi_prior,
    ppr_diffusion,
    union_prior,
)
from geneattn.errors import InputError
from geneattn.network import build_network, load_network, top_k_edges


def random_prior(n: int, seed: int, density: float = 0.3) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.random((n, n)) < density, k=1)
    return sp.csr_matrix((upper | upper.T).astype(np.float64))


def dense_operator(prior: np.ndarray) -> np.ndarray:
    p = np.array(prior, dtype=np.float64)
    np.fill_diagonal(p, 1.0)
    return p / p.sum(axis=1, keepdims=True)


def test_operator_is_row_normalised_with_self_loops():
    prior = sp.csr_matrix(np.array([[0, 1, 1], [1, 0, 0], [1, 0, 5.0]]))
    a = diffusion_operator(prior).toarray()
    np.testing.assert_allclose(a, [[1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0], [0.5, 0, 0.5]])
    # an isolated gene keeps its own row
    np.testing.assert_array_equal(diffusion_operator(sp.csr_matrix((2, 2))).toarray(), np.eye(2))
    with pytest.raises(ValueError, match="non-negative"):
        diffusion_operator(-prior)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(2, 9),
    st.integers(0, 2**16),
    st.floats(0.05, 1.0),
    st.integers(0, 8),
    st.booleans(),
)
def test_ppr_matches_the_dense_series(n, seed, alpha, k, as_sparse):
    prior = random_prior(n, seed)
    v = np.random.default_rng(seed + 1).random((n, n))
    a = dense_operator(prior.toarray())
    # eq. 9: V_K = ((1 - alpha)^K A^K + sum_{k<K} alpha (1 - alpha)^k A^k) V
    series = (1 - alpha) ** k * np.linalg.matrix_power(a, k)
    for j in range(k):
        series = series + alpha * (1 - alpha) ** j * np.linalg.matrix_power(a, j)
    values = sp.csr_matrix(v) if as_sparse else v
    got = ppr_diffusion(values, diffusion_operator(prior), alpha=alpha, iterations=k)
    assert sp.issparse(got) == as_sparse
    np.testing.assert_allclose(got.toarray() if as_sparse else got, series @ v, rtol=1e-10)


@settings(max_examples=25, deadline=None)
@given(
    st.integers(2, 9),
    st.integers(0, 2**16),
    st.floats(0.1, 8.0),
    st.integers(0, 8),
    st.booleans(),
)
def test_heat_matches_the_renormalised_dense_series(n, seed, t, k, as_sparse):
    prior = random_prior(n, seed)
    v = np.random.default_rng(seed + 1).random((n, n))
    a = dense_operator(prior.toarray())
    theta = [math.exp(-t) * t**j / math.factorial(j) for j in range(k + 1)]
    series = sum(th * np.linalg.matrix_power(a, j) for j, th in enumerate(theta)) / sum(theta)
    values = sp.csr_matrix(v) if as_sparse else v
    got = heat_diffusion(values, diffusion_operator(prior), t=t, iterations=k)
    np.testing.assert_allclose(got.toarray() if as_sparse else got, series @ v, rtol=1e-10)


def test_long_series_converge_to_the_closed_forms():
    prior = random_prior(6, seed=3, density=0.5)
    a = dense_operator(prior.toarray())
    v = np.random.default_rng(0).random((6, 6))
    operator = diffusion_operator(prior)
    # heat kernel: sum_k e^{-t} t^k/k! A^k = expm(t (A - I))
    np.testing.assert_allclose(
        heat_diffusion(v, operator, t=2.0, iterations=60), expm(2.0 * (a - np.eye(6))) @ v
    )
    # PPR: sum_k alpha (1 - alpha)^k A^k = alpha (I - (1 - alpha) A)^{-1}
    np.testing.assert_allclose(
        ppr_diffusion(v, operator, alpha=0.3, iterations=200),
        0.3 * np.linalg.solve(np.eye(6) - 0.7 * a, v),
    )


def test_defaults_and_row_stochastic_attention_stays_row_stochastic():
    prior = random_prior(8, seed=5)
    logits = np.random.default_rng(1).normal(size=(8, 8))
    v = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for method in ("ppr", "heat"):
        out = diffuse(v, prior, method=method)
        np.testing.assert_allclose(out.sum(axis=1), 1.0)
    # the defaults are GenoHoption's: alpha 0.25, t 5, K 6
    op = diffusion_operator(prior)
    np.testing.assert_array_equal(
        diffuse(v, prior, method="ppr"), ppr_diffusion(v, op, alpha=0.25, iterations=6)
    )
    np.testing.assert_array_equal(
        diffuse(v, prior, method="heat"), heat_diffusion(v, op, t=5.0, iterations=6)
    )
    with pytest.raises(ValueError, match="unknown diffusion method"):
        diffuse(v, prior, method="pagerank")
    with pytest.raises(ValueError, match="alpha"):
        ppr_diffusion(v, op, alpha=0.0)
    with pytest.raises(ValueError, match="does not fit"):
        ppr_diffusion(v[:5], op)


def test_ppi_prior_by_hand():
    edges = pd.DataFrame(
        {
            "gene_a": ["TP53", "MDM2", "CD3E", "TP53", "-1", "GZMB"],
            "gene_b": ["MDM2", "TP53", "CD3D", "GZMB", "CD3E", "GZMB"],
            "confidence": [0.9, 0.5, 0.8, 0.2, 1.0, 1.0],
        }
    )
    symbols = ["TP53", "", "MDM2", "CD3E", "GZMB", "CD3D"]
    prior = ppi_prior(edges, symbols).toarray()
    expected = np.zeros((6, 6))
    for i, j in [(0, 2), (3, 5), (0, 4)]:
        expected[i, j] = expected[j, i] = 1.0
    np.testing.assert_array_equal(prior, expected)  # duplicates once, self-edge and -1 dropped
    strict = ppi_prior(edges, symbols, min_confidence=0.5).toarray()
    assert strict[0, 4] == 0 and strict[0, 2] == 1  # the 0.2 edge is gone; 0.9 survives


def test_union_prior():
    a = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0.0]]))
    b = sp.csr_matrix(np.array([[0, 0.5, 0], [0, 0, 1], [0, 0, 0.0]]))
    np.testing.assert_array_equal(union_prior(a, b).toarray(), [[0, 1, 0], [1, 0, 1], [0, 1, 0]])


def test_pearson_correlation_matches_numpy():
    x = np.random.default_rng(2).poisson(2.0, size=(40, 6)).astype(float)
    x[:, 5] = 3.0  # constant gene: correlation 0
    got = pearson_correlation(sp.csr_matrix(x))
    expected = np.corrcoef(x[:, :5], rowvar=False)
    np.testing.assert_allclose(got[:5, :5], expected, atol=1e-12)
    assert np.all(got[5] == 0) and np.all(got[:, 5] == 0)


def test_coexpression_prior_top_h_above_threshold():
    rng = np.random.default_rng(4)
    base = rng.normal(size=(200, 2))
    noise = rng.normal(size=(200, 7)) * np.array([0.3, 0.5, 0.8, 0.3, 0.6, 3.0, 3.0])
    # genes 0-2 follow factor 0 with decreasing fidelity, 3-4 factor 1, 5-6 mostly noise
    x = (
        np.column_stack(
            [base[:, 0], base[:, 0], base[:, 0], base[:, 1], base[:, 1], base[:, 0], base[:, 1]]
        )
        + noise
    )
    corr = np.corrcoef(x, rowvar=False)
    prior = coexpression_prior(x, n_neighbors=1, threshold=0.4).toarray()
    expected = np.zeros((7, 7))
    for i in range(7):
        c = corr[i].copy()
        c[i] = -np.inf
        j = int(np.argmax(c))
        if c[j] > 0.4:
            expected[i, j] = expected[j, i] = 1.0
    np.testing.assert_array_equal(prior, expected)
    assert prior[0, 1] == 1 and prior[3, 4] == 1 and prior[0, 3] == 0
    many = coexpression_prior(x, n_neighbors=20, threshold=0.4).toarray()
    np.testing.assert_array_equal(many, ((corr > 0.4) & ~np.eye(7, dtype=bool)).astype(float))


def test_log_normalise():
    counts = sp.csr_matrix(np.array([[1.0, 3.0], [0.0, 0.0]]))
    np.testing.assert_allclose(
        log_normalise(counts).toarray(), [[np.log1p(2500.0), np.log1p(7500.0)], [0, 0]]
    )
    np.testing.assert_allclose(
        log_normalise(counts, n_counts=np.array([10.0, 0.0])).toarray()[0],
        np.log1p([1000.0, 3000.0]),
    )


def _study_h5ad(path, n_cells=120, seed=0):
    rng = np.random.default_rng(seed)
    factor = rng.gamma(2.0, 1.0, size=n_cells)
    # A, B and X follow a factor; C does not; H is a high housekeeping gene that keeps the
    # library sizes (and so the normalisation) nearly constant
    flat = np.full(n_cells, 5.0)
    lam = np.column_stack([factor * 5, factor * 5, flat, factor * 4, flat * 200])
    counts = rng.poisson(lam).astype(np.float32)
    adata = ad.AnnData(
        X=sp.csr_matrix(counts),
        var=pd.DataFrame(
            {"gene_ids": ["ENSG_A", "ENSG_B", "ENSG_C", "ENSG_X", "ENSG_H"]},
            index=["GA", "GB", "GC", "GX", "GH"],
        ),
    )
    adata.obs_names = [f"c{i}" for i in range(n_cells)]
    adata.write_h5ad(path)


def test_coexpression_prior_from_h5ad_matches_genes_by_id_then_symbol(tmp_path):
    path = tmp_path / "qc.h5ad"
    _study_h5ad(path)
    # universe: A (by ID), GX found by symbol, C, and an unknown gene
    prior = coexpression_prior_from_h5ad(
        path,
        ["ENSG_A", "ENSG_NOPE", "ENSG_C", "ENSG_OTHER", "ENSG_B"],
        ["", "GZ", "GC", "GX", "GB"],
        n_neighbors=5,
        threshold=0.3,
    ).toarray()
    assert prior.shape == (5, 5)
    assert prior[0, 4] == 1 and prior[0, 3] == 1 and prior[3, 4] == 1  # factor-driven genes
    assert not prior[1].any() and not prior[2].any()  # unknown gene; independent gene C
    with pytest.raises(InputError, match="none of the network's genes") as err:
        coexpression_prior_from_h5ad(path, ["Q"], [""])
    assert err.value.path == path
    with pytest.raises(InputError, match="file not found"):
        coexpression_prior_from_h5ad(tmp_path / "missing.h5ad", ["Q"], [""])


def _chain_sums() -> AttentionSums:
    """Four genes, gene 0 attends only to gene 1, gene 1 only to gene 2 (plus noise floor)."""
    mean = np.full((4, 4), 0.01)
    mean[0, 1] = 0.9
    mean[1, 2] = 0.9
    mean[2, 3] = 0.9
    mean[3, 0] = 0.9
    counts = np.full((4, 4), 10, dtype=np.int64)
    return AttentionSums(
        gene_ids=np.array(["E0", "E1", "E2", "E3"]),
        gene_symbols=np.array(["G0", "G1", "G2", "G3"]),
        sums=mean * counts,
        counts=counts,
        incoming=np.ones(4),
        gene_cells=np.full(4, 10, dtype=np.int64),
        n_cells=10,
        condition="case",
    )


def test_diffusion_in_the_network_reaches_two_hops():
    data = _chain_sums()
    prior = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0.0]]))
    plain = build_network(data, min_cells=1, top_k=3)
    diffused = build_network(
        data, min_cells=1, top_k=3, diffusion="ppr", prior=prior, alpha=0.25, iterations=6
    )
    # the same steps by hand: mean without diagonal, PPR, diagonal removed, top 3 per gene
    mean = np.where(np.eye(4, dtype=bool), 0.0, data.sums / data.counts)
    expected = ppr_diffusion(mean, diffusion_operator(prior), alpha=0.25, iterations=6)
    np.fill_diagonal(expected, 0)
    np.testing.assert_allclose(
        diffused.adjacency.toarray(), top_k_edges(expected, 3, directed=True).toarray()
    )
    # gene 0 inherits its prior neighbour 1's attention to gene 2: 0.01 becomes a strong edge
    assert plain.adjacency[0, 2] == pytest.approx(0.01)
    assert diffused.adjacency[0, 2] > 0.3
    # the mean attention kept for the differential test is the undiffused one
    np.testing.assert_array_equal(diffused.mean_attention.toarray(), mean)
    assert diffused.params["diffusion"] == "ppr" and diffused.params["alpha"] == 0.25
    with pytest.raises(ValueError, match="needs a prior"):
        build_network(data, diffusion="heat")


def test_cli_network_with_ppi_coexpression_and_union_priors(tmp_path, capsys):
    data = _chain_sums()
    sums = tmp_path / "case.npz"
    save_attention_sums(sums, data)
    ppi = tmp_path / "ppi.tsv"
    ppi.write_text("gene_a\tgene_b\tconfidence\nG0\tG1\t0.9\nG2\tGNONE\t0.5\n")
    h5ad = tmp_path / "qc.h5ad"
    rng = np.random.default_rng(0)
    f = rng.gamma(2.0, 1.0, size=100)
    flat = np.full(100, 5.0)
    counts = rng.poisson(np.column_stack([f * 5, flat, f * 5, flat, flat * 200]))
    ad.AnnData(
        X=sp.csr_matrix(counts.astype(np.float32)),
        var=pd.DataFrame(index=["G0", "G1", "G2", "G3", "HOUSEKEEPING"]),
    ).write_h5ad(h5ad)
    results = {}
    for prior in ("ppi", "coexpression", "union"):
        out = tmp_path / prior
        args = ["network", str(sums), "--min-cells", "1", "--top-k", "1"]
        args += ["--diffusion", "heat", "--prior", prior, "--ppi", str(ppi), "--counts", str(h5ad)]
        args += ["--out-npz", str(out / "n.npz"), "--out-edges", str(out / "e.tsv")]
        args += ["--out-graphml", str(out / "g.graphml")]
        assert main(args) == 0, capsys.readouterr().err
        results[prior] = load_network(out / "n.npz")
    assert results["ppi"].params["prior_edges"] == 1  # G0-G1
    assert results["coexpression"].params["prior_edges"] == 1  # G0-G2 co-vary
    assert results["union"].params["prior_edges"] == 2
    assert results["union"].params["t"] == 5.0 and results["union"].params["iterations"] == 6
    assert main(["network", str(sums), "--diffusion", "ppr", "--prior", "coexpression",
                 "--out-npz", str(tmp_path / "x.npz"), "--out-edges", str(tmp_path / "x.tsv"),
                 "--out-graphml", str(tmp_path / "x.graphml")]) == 2  # fmt: skip
    assert "--prior coexpression needs --counts" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
