"""model and embed commands on real demo cells: shapes, determinism, clear errors."""

from __future__ import annotations

import dataclasses

import anndata as ad
import numpy as np
import pytest

from geneattn.attention import subset_cells
from geneattn.cli import main
from geneattn.models.study import load_study_model
from geneattn.tokenize import load_tokens


@pytest.fixture(scope="module")
def demo_tokens(tmp_path_factory, resources_dir):
    """60 real demo cells as qc.h5ad and tokens.npz."""
    tmp = tmp_path_factory.mktemp("embed")
    adata = ad.read_h5ad(resources_dir / "wu2020_200.h5ad")[:60].copy()
    adata.obs["n_counts"] = np.asarray(adata.X.sum(axis=1)).ravel()
    adata.write_h5ad(tmp / "qc.h5ad")
    gf = resources_dir / "geneformer_v1"
    assert (
        main(
            [
                "tokenize",
                str(tmp / "qc.h5ad"),
                "--token-dictionary",
                str(gf / "token_dictionary.tsv"),
                "--medians-file",
                str(gf / "gene_median_dictionary.tsv"),
                "--gene-names",
                str(gf / "gene_name_id.tsv"),
                "--out",
                str(tmp / "tokens.npz"),
                "--summary",
                str(tmp / "tokenize.json"),
            ]
        )
        == 0
    )
    return tmp, gf


def _model(tmp, gf, out):
    return main(
        [
            "model",
            str(tmp / "qc.h5ad"),
            "--token-dictionary",
            str(gf / "token_dictionary.tsv"),
            "--gene-names",
            str(gf / "gene_name_id.tsv"),
            "--d-model",
            "16",
            "--n-heads",
            "4",
            "--out",
            str(out),
        ]
    )


def test_model_is_deterministic_and_covers_the_tokens(demo_tokens):
    tmp, gf = demo_tokens
    assert _model(tmp, gf, tmp / "m1.npz") == 0
    assert _model(tmp, gf, tmp / "m2.npz") == 0
    assert (tmp / "m1.npz").read_bytes() == (tmp / "m2.npz").read_bytes()
    model = load_study_model(tmp / "m1.npz")
    cells = load_tokens(tmp / "tokens.npz")
    used = np.unique(cells.tokens)
    assert np.all(np.linalg.norm(model.gene_embeddings[used], axis=1) > 0)
    assert model.gene_embeddings.shape == (len(cells.vocabulary), 16)


def test_embed_writes_obsm_in_token_order(demo_tokens):
    tmp, gf = demo_tokens
    assert _model(tmp, gf, tmp / "m.npz") == 0
    args = ["embed", str(tmp / "tokens.npz"), "--model", str(tmp / "m.npz")]
    args += ["--obs", str(tmp / "qc.h5ad"), "--threads", "2", "--out", str(tmp / "e.h5ad")]
    assert main(args) == 0
    emb = ad.read_h5ad(tmp / "e.h5ad")
    cells = load_tokens(tmp / "tokens.npz")
    assert emb.obsm["X_geneattn"].shape == (cells.n_cells, 16)
    assert list(emb.obs_names) == list(cells.cell_ids)
    assert "source" in emb.obs
    # same as the model on that cell alone (rank-weighted values: tests/test_rank_values.py)
    model = load_study_model(tmp / "m.npz")
    assert model.value_rank == "log"
    one = model.embed(subset_cells(cells, np.array([3])))[0]
    np.testing.assert_allclose(emb.obsm["X_geneattn"][3], one, rtol=1e-5, atol=1e-6)
    # the order-free model equals the seed interface on one cell
    plain = dataclasses.replace(model, params=model.params | {"value_rank": "none"})
    gi = plain.interface()
    ref = gi.encode_batch(cells.cell(3), np.array([0, len(cells.cell(3))]))[0]
    np.testing.assert_allclose(plain.embed(subset_cells(cells, np.array([3])))[0], ref, rtol=1e-9)


def test_embed_refuses_cells_missing_from_obs(demo_tokens, capsys):
    tmp, gf = demo_tokens
    assert _model(tmp, gf, tmp / "m.npz") == 0
    ad.read_h5ad(tmp / "qc.h5ad")[:10].copy().write_h5ad(tmp / "small.h5ad")
    args = ["embed", str(tmp / "tokens.npz"), "--model", str(tmp / "m.npz")]
    args += ["--obs", str(tmp / "small.h5ad"), "--out", str(tmp / "bad.h5ad")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "small.h5ad" in err[-1] and "not in it" in err[-1]
    assert not (tmp / "bad.h5ad").exists()


def test_embed_shards_gather_to_the_whole(demo_tokens, capsys):
    tmp, gf = demo_tokens
    assert _model(tmp, gf, tmp / "m.npz") == 0
    whole = ["embed", str(tmp / "tokens.npz"), "--model", str(tmp / "m.npz")]
    whole += ["--obs", str(tmp / "qc.h5ad")]
    assert main([*whole, "--out", str(tmp / "whole.h5ad")]) == 0
    n_cells = load_tokens(tmp / "tokens.npz").n_cells
    size = n_cells // 3 + 1  # three shards, the last one shorter
    shards = [str(tmp / f"s{i}.h5ad") for i in range(3)]
    for i, path in enumerate(shards):
        args = [*whole, "--shard", str(i), "--cells-per-shard", str(size), "--threads", "2"]
        assert main([*args, "--out", path]) == 0, capsys.readouterr().err
    assert main(["gather-embeddings", *shards, "--out", str(tmp / "gathered.h5ad")]) == 0
    got, want = ad.read_h5ad(tmp / "gathered.h5ad"), ad.read_h5ad(tmp / "whole.h5ad")
    assert list(got.obs_names) == list(want.obs_names)
    np.testing.assert_array_equal(got.obsm["X_geneattn"], want.obsm["X_geneattn"])
    assert got.obs["source"].dtype == want.obs["source"].dtype
    assert dict(got.uns["geneattn_model"]) == dict(want.uns["geneattn_model"])
    # a shard given twice repeats its cells: refused, nothing written
    capsys.readouterr()
    out = tmp / "twice.h5ad"
    assert main(["gather-embeddings", shards[0], shards[0], "--out", str(out)]) == 2
    assert "is also in" in capsys.readouterr().err and not out.exists()
