"""The scanpy-style Python API (``import geneattn as ga``) on a small slice of the demo study.

The steps run on 60 real demo cells with short cells and a small universe, so that the
whole chain takes seconds; tests/test_tutorial.py runs the full demo study and compares
it with the workflow's outputs.
"""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
import pytest
from matplotlib.figure import Figure

import geneattn as ga
from geneattn.errors import InputError
from geneattn.store import get_model, get_tokens, network_from_uns

SMALL = {"n_threads": 2}


@pytest.fixture(scope="module", autouse=True)
def data_dir(resources_dir):
    """The API's pinned files are the fetched resources/ of the tests."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GENEATTN_DATA", str(resources_dir))
        yield resources_dir


@pytest.fixture(scope="module")
def study():
    """60 Tumor and NAT demo cells through every step, with small settings."""
    adata = ga.datasets.demo()
    keep = np.flatnonzero(adata.obs["source"].isin(["Tumor", "NAT"]).to_numpy())[:60]
    adata = adata[keep].copy()
    ga.pp.qc(adata, condition_column="source", keep=["Tumor", "NAT"], min_genes=100)
    ga.pp.tokenize(adata, max_len=256, **SMALL)
    ga.tl.model(adata, d_model=16, n_heads=2)
    ga.tl.embed(adata, **SMALL)
    ga.tl.attention(adata, universe_max_genes=300, **SMALL)
    ga.tl.network(adata)
    ga.tl.modules(adata, gene_sets=["hallmark.gmt"])
    ga.tl.differential(adata, permutations=50, **SMALL)
    ga.tl.evaluate(adata, permutations=100)
    ga.tl.perturb(adata, hubs_per_module=2, null_per_bin=2, **SMALL)
    return adata


def test_every_step_records_its_results_and_params(study):
    for key in (
        "qc",
        "tokenize",
        "attention_model",
        "embed",
        "attention",
        "network",
        "modules",
        "differential",
        "evaluation",
        "perturbation",
    ):
        assert "params" in study.uns[key], key
    assert study.uns["qc"]["params"]["keep"] == ["Tumor", "NAT"]
    assert study.uns["tokenize"]["params"]["max_len"] == 256
    assert study.obsm["X_geneattn"].shape == (study.n_obs, 16)
    assert set(study.uns["attention"]["sums"]) == {"Tumor", "NAT"}
    assert 0 < len(study.uns["attention"]["universe"]) <= 300
    assert study.uns["modules"]["table"]["module"].max() >= 1
    in_network = study.var["module"] >= 0
    assert in_network.sum() > 0 and (study.var["module"] >= -1).all()
    modules = study.uns["differential"]["modules"]
    assert study.obsm["module_attention"].shape == (study.n_obs, len(modules))
    table = study.uns["perturbation"]["table"]
    assert len(table) > 0 and table["fdr"].between(0, 1).all()
    assert list(study.uns["perturbation"]["skipped"].columns)[:2] == ["gene", "gene_id"]


def test_tokens_follow_the_cells_when_subset(study):
    cells = get_tokens(study)
    assert cells.n_cells == study.n_obs
    assert np.array_equal(cells.lengths, study.obs["n_tokens"].to_numpy())
    assert cells.lengths.max() <= 256
    picked = [7, 2, 30]
    sub = get_tokens(study[picked].copy())
    for i, c in enumerate(picked):
        np.testing.assert_array_equal(sub.cell(i), cells.cell(c))
        assert sub.cell_ids[i] == study.obs_names[c]


def test_results_survive_h5ad(study, tmp_path):
    path = tmp_path / "study.h5ad"
    study.write_h5ad(path)
    back = ad.read_h5ad(path)
    cells, again = get_tokens(study), get_tokens(back)
    np.testing.assert_array_equal(cells.tokens, again.tokens)
    np.testing.assert_array_equal(cells.offsets, again.offsets)
    model, reloaded = get_model(study), get_model(back)
    np.testing.assert_array_equal(model.gene_embeddings, reloaded.gene_embeddings)
    assert model.params == reloaded.params
    a = network_from_uns(study.uns["network"]["networks"]["Tumor"])
    b = network_from_uns(back.uns["network"]["networks"]["Tumor"])
    assert (a.adjacency != b.adjacency).nnz == 0 and a.params == b.params
    assert back.uns["perturbation"]["table"].equals(study.uns["perturbation"]["table"])


def test_copy_returns_a_changed_copy_and_leaves_the_input(study):
    before = study.uns["perturbation"]["table"].copy()
    out = ga.tl.perturb(study, genes_from="expressed", max_genes=3, null_per_bin=1, copy=True)
    assert out is not None and out is not study
    assert out.uns["perturbation"]["params"]["genes_from"] == "expressed"
    assert len(out.uns["perturbation"]["table"]) == 3
    assert study.uns["perturbation"]["table"].equals(before)
    assert ga.tl.embed(study, n_threads=1) is None


def test_perturb_stores_geneformer_tables_of_each_stats_mode(study, tmp_path):
    import pandas as pd

    from geneattn.geneformer_stats import goal_state_shift, mixture_model, vs_null

    # a third state: half the NAT cells relabelled, as Geneformer's alternative end state
    adata = study.copy()
    column = adata.uns["qc"]["params"]["condition_column"]
    labels = adata.obs[column].astype(str).to_numpy()
    nat = np.flatnonzero(labels == "NAT")
    labels[nat[::2]] = "NAT2"
    adata.obs[column] = pd.Categorical(labels)
    small = {"genes_from": "expressed", "max_genes": 4, "null_per_bin": 1, **SMALL}
    with pytest.raises(InputError, match="no cell labelled 'Nope'") as err:
        ga.tl.perturb(adata, alt_states=["Nope"], geneformer_table=True, **small)
    assert "\n" not in str(err.value) and "geneformer" not in adata.uns["perturbation"]
    with pytest.raises(InputError, match="alt_states"):
        ga.tl.perturb(adata, alt_states=["NAT2"], **small)
    ga.tl.perturb(adata, alt_states=["NAT2"], geneformer_table=True, **small)
    stored = adata.uns["perturbation"]
    rows = stored["cells"][stored["cells"]["cell"] != ""]
    genes = sorted(set(rows["gene_id"]))
    code = {g: i for i, g in enumerate(genes)}
    frame = pd.DataFrame(
        {
            "token": rows["gene_id"].map(code),
            "shift_to_goal": rows["goal_shift"],
            "shift_to_NAT2": rows["alt_shift_NAT2"],
        }
    ).dropna()
    expected = goal_state_shift(frame, goal="goal", alt_states=["NAT2"])
    expected["Gene"] = [genes[t] for t in expected["Gene"]]
    got = stored["geneformer"].drop(columns=["Gene_name", "Ensembl_ID"])
    pd.testing.assert_frame_equal(got, expected)
    assert stored["params"]["alt_states"] == ["NAT2"]
    adata.write_h5ad(tmp_path / "alt.h5ad")
    back = ad.read_h5ad(tmp_path / "alt.h5ad").uns["perturbation"]
    pd.testing.assert_frame_equal(back["geneformer"], stored["geneformer"], check_index_type=False)
    # mixture_model of the similarities
    mm = ga.tl.perturb(
        adata, geneformer_table=True, geneformer_stats="mixture_model", copy=True, **small
    )
    cos = pd.DataFrame({"token": rows["gene_id"].map(code), "cos_sim": 1.0 - rows["cosine_shift"]})
    expected = mixture_model(cos.dropna())
    expected["Gene"] = [genes[t] for t in expected["Gene"]]
    got = mm.uns["perturbation"]["geneformer"].drop(columns=["Gene_name", "Ensembl_ID"])
    pd.testing.assert_frame_equal(got, expected)
    # vs_null against the NAT2 cells perturbed the same way (the null study, as AnnData)
    with pytest.raises(InputError, match="null_study"):
        ga.tl.perturb(adata, geneformer_table=True, geneformer_stats="vs_null", **small)
    null = ga.tl.perturb(
        adata, case="NAT2", control="NAT", geneformer_table=True, copy=True, **small
    )
    vn = ga.tl.perturb(
        adata,
        geneformer_table=True,
        geneformer_stats="vs_null",
        null_study=null,
        copy=True,
        **small,
    )
    null_rows = null.uns["perturbation"]["cells"]
    null_rows = null_rows[null_rows["cell"] != ""]
    genes = sorted(set(rows["gene_id"]) | set(null_rows["gene_id"]))
    code = {g: i for i, g in enumerate(genes)}

    def sims(r):
        return pd.DataFrame(
            {"token": r["gene_id"].map(code), "cos_sim": 1.0 - r["cosine_shift"]}
        ).dropna()

    expected = vs_null(sims(rows), sims(null_rows))
    expected["Gene"] = [genes[t] for t in expected["Gene"]]
    got = vn.uns["perturbation"]["geneformer"].drop(columns=["Gene_name", "Ensembl_ID"])
    pd.testing.assert_frame_equal(got, expected)
    # the listed genes overlap (the random null genes of the two runs need not)
    assert (got["N_Detections_null"] > 0).any()
    assert (got.loc[got["N_Detections_null"] == 0, "Test_vs_null_pval"] == 1).all()


def test_api_uses_the_library_as_the_cli_does(study, resources_dir, tmp_path):
    """The tokens, model and embeddings equal what the stage commands write."""
    from geneattn.cli import main
    from geneattn.models import load_model
    from geneattn.tokenize import load_tokens

    qc = study.copy()
    for key in ("geneattn_tokens", "X_geneattn", "module_attention"):
        del qc.obsm[key]
    qc.write_h5ad(tmp_path / "qc.h5ad")
    gf = resources_dir / "geneformer_v1"
    common = ["--token-dictionary", str(gf / "token_dictionary.tsv")]
    names = ["--gene-names", str(gf / "gene_name_id.tsv")]
    tokens = tmp_path / "tokens.npz"
    args = ["tokenize", str(tmp_path / "qc.h5ad"), *common, *names, "--max-len", "256"]
    args += ["--medians-file", str(gf / "gene_median_dictionary.tsv"), "--out", str(tokens)]
    assert main([*args, "--summary", str(tmp_path / "summary.json")]) == 0
    cli_cells, api_cells = load_tokens(tokens), get_tokens(study)
    np.testing.assert_array_equal(cli_cells.tokens, api_cells.tokens)
    args = ["model", str(tmp_path / "qc.h5ad"), *common, *names, "--d-model", "16"]
    assert main([*args, "--n-heads", "2", "--out", str(tmp_path / "model.npz")]) == 0
    cli_model = load_model(tmp_path / "model.npz")
    np.testing.assert_array_equal(cli_model.gene_embeddings, get_model(study).gene_embeddings)
    args = ["embed", str(tokens), "--model", str(tmp_path / "model.npz")]
    assert main([*args, "--obs", str(tmp_path / "qc.h5ad"), "--out", str(tmp_path / "e.h5ad")]) == 0
    embedded = ad.read_h5ad(tmp_path / "e.h5ad")
    np.testing.assert_array_equal(embedded.obsm["X_geneattn"], study.obsm["X_geneattn"])


def test_figures_are_matplotlib_figures(study):
    for fig in (
        ga.pl.qc(study),
        ga.pl.embedding(study, method="gauss"),
        ga.pl.modules(study),
        ga.pl.perturbation(study),
    ):
        assert isinstance(fig, Figure) and len(fig.axes) >= 1


def test_steps_out_of_order_say_what_to_run_first():
    adata = ga.datasets.demo()[:20].copy()
    with pytest.raises(InputError, match=r"run geneattn\.pp\.tokenize first"):
        ga.tl.embed(adata)
    with pytest.raises(InputError, match=r"run geneattn\.tl\.attention first"):
        ga.tl.network(adata)
    with pytest.raises(InputError, match="give case"):
        ga.tl.differential(adata)


def test_qc_refuses_bad_counts_in_memory():
    adata = ad.AnnData(
        np.array([[1.0, 2.5], [3.0, 0.0]], dtype=np.float32),
        obs={"c": ["a", "b"]},
    )
    adata.obs_names = ["x", "y"]
    adata.var_names = ["G1", "G2"]
    with pytest.raises(InputError, match=r"non-integer value 2\.5 at cell 'x', gene 'G2'"):
        ga.pp.qc(adata, condition_column="c", keep=["a", "b"])
    adata.var_names = ["G1", "G1"]
    with pytest.raises(InputError, match="repeated gene names"):
        ga.pp.qc(adata, condition_column="c", keep=["a", "b"])


def test_data_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GENEATTN_DATA", str(tmp_path))
    assert ga.datasets.data_dir() == tmp_path
    with pytest.raises(InputError, match="not a pinned resource"):
        ga.datasets.resource("nope.tsv")


def test_io_names_resolve():
    from geneattn.network import load_network
    from geneattn.tokenize import load_tokens

    assert ga.io.read_tokens is load_tokens and ga.io.read_network is load_network
    for name in ga.io.__all__:
        assert callable(getattr(ga.io, name)), name


def test_import_is_lazy_and_seed_names_stay():
    """``import geneattn`` loads neither anndata nor the API; the seed-000 names remain."""
    code = (
        "import sys, geneattn;"
        "assert 'anndata' not in sys.modules and 'geneattn.tl' not in sys.modules;"
        "from geneattn import rank_value_encode, ScKGBERTInterface, GeneformerInterface;"
        "import geneattn as ga; ga.pp.qc; ga.tl.perturb; ga.pl.modules; ga.datasets.demo"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
