"""Streamed stages (blocks of cells smaller than the study) against the in-memory ones."""

from __future__ import annotations

import gzip
import json

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import scipy.sparse as sp

from geneattn.column_sums import ColumnMoments, ColumnTotals
from geneattn.errors import InputError
from geneattn.io.chunks import STREAMED_FORMATS, open_counts
from geneattn.io.readers import read_counts
from geneattn.qc import run_qc, run_qc_chunked

CHUNK = 7


def _study(n_cells=60, n_genes=40, seed=0, *, big=False):
    """Counts with structure, mito genes, a few empty-ish cells and large values."""
    rng = np.random.default_rng(seed)
    programs = rng.gamma(0.5, 1.0, size=(3, n_genes))
    which = rng.integers(0, 3, n_cells)
    depth = rng.integers(20, 200, n_cells)[:, None]
    lam = programs[which] / programs[which].sum(1, keepdims=True) * depth
    counts = rng.poisson(lam).astype(np.int64)
    counts[rng.random(counts.shape) < 0.3] = 0
    counts[::11] = 0
    counts[::11, :2] = 1  # cells with few genes (min_genes removes them)
    if big:  # float32 column sums round differently in another order
        counts[:, 3] = rng.integers(1_000_000, 9_000_000, n_cells)
    genes = [f"MT-{i}" if i < 2 else f"G{i}" for i in range(n_genes)]
    cells = [f"c{i}" for i in range(n_cells)]
    obs = pd.DataFrame(
        {
            "source": pd.Categorical(rng.choice(["Tumor", "NAT", "Blood"], n_cells)),
            "patient": pd.Categorical(rng.choice(["p1", "p2", "p3", "p4"], n_cells)),
        },
        index=cells,
    )
    var = pd.DataFrame({"kind": pd.Categorical(rng.choice(["a", "b"], n_genes))}, index=genes)
    adata = ad.AnnData(sp.csr_matrix(counts, dtype=np.float32), obs=obs, var=var)
    adata.obsm["X_umap"] = rng.normal(size=(n_cells, 2))
    adata.uns["note"] = "x"
    return adata


def _same_adata(a: ad.AnnData, b: ad.AnnData) -> None:
    xa, xb = sp.csr_matrix(a.X), sp.csr_matrix(b.X)
    assert xa.dtype == xb.dtype
    np.testing.assert_array_equal(xa.indptr, xb.indptr)
    np.testing.assert_array_equal(xa.indices, xb.indices)
    np.testing.assert_array_equal(xa.data, xb.data)  # bit for bit
    pd.testing.assert_frame_equal(a.obs, b.obs, check_exact=True)
    pd.testing.assert_frame_equal(a.var, b.var, check_exact=True)
    assert sorted(a.obsm) == sorted(b.obsm)
    for k in a.obsm:
        np.testing.assert_array_equal(a.obsm[k], b.obsm[k])


# -- readers ------------------------------------------------------------------------------


def _blocks_of(counts, chunk=CHUNK):
    return sp.vstack([x for _, _, x in counts.chunks(chunk)], format="csr")


def _check_reader(path, **options):
    whole = read_counts(path, **options)
    with open_counts(path, **options) as counts:
        x = _blocks_of(counts)
        assert counts.shape == whole.shape
        np.testing.assert_array_equal(x.toarray(), whole.X.toarray())
        assert x.dtype == np.float32 and x.has_canonical_format
        assert list(counts.obs.index) == list(whole.obs_names)
        assert list(counts.var.index) == list(whole.var_names)
        return counts, whole


def test_h5ad_streams_with_duplicates_and_layers(tmp_path):
    adata = _study()
    adata.var_names = [*adata.var_names[:-2], "G5", "G6"]  # two duplicated gene names
    adata.obs_names = [*adata.obs_names[:-1], "c0"]  # a duplicated cell name
    adata.layers["raw"] = adata.X.copy() * 2
    path = tmp_path / "a.h5ad"
    adata.write_h5ad(path)
    counts, whole = _check_reader(path)
    assert counts.streamed
    pd.testing.assert_frame_equal(counts.obs, whole.obs)
    pd.testing.assert_frame_equal(counts.var, whole.var)
    _check_reader(path, layer="raw")
    dense = adata.copy()
    dense.X = dense.X.toarray()
    dense.write_h5ad(tmp_path / "dense.h5ad")
    assert _check_reader(tmp_path / "dense.h5ad")[0].streamed
    csc = adata.copy()
    csc.X = sp.csc_matrix(csc.X)
    csc.write_h5ad(tmp_path / "csc.h5ad")
    assert not _check_reader(tmp_path / "csc.h5ad")[0].streamed


def _write_10x_h5(path, counts, genes, cells):
    csr = sp.csr_matrix(counts)
    types = ["Gene Expression"] * (len(genes) - 1) + ["Antibody Capture"]
    with h5py.File(path, "w") as f:
        m = f.create_group("matrix")
        m["data"] = csr.data.astype(np.int32)
        m["indices"] = csr.indices.astype(np.int64)
        m["indptr"] = csr.indptr.astype(np.int64)
        m["shape"] = np.array([counts.shape[1], counts.shape[0]], dtype=np.int32)
        m["barcodes"] = np.array(cells, dtype="S")
        feats = m.create_group("features")
        feats["id"] = np.array([f"ENSG{i:011d}" for i in range(len(genes))], dtype="S")
        feats["name"] = np.array(genes, dtype="S")
        feats["feature_type"] = np.array(types, dtype="S")
        feats["genome"] = np.array(["GRCh38"] * len(genes), dtype="S")


def test_10x_h5_streams(tmp_path):
    adata = _study()
    counts = adata.X.toarray().astype(np.int64)
    _write_10x_h5(tmp_path / "a.h5", counts, list(adata.var_names), list(adata.obs_names))
    chunked, whole = _check_reader(tmp_path / "a.h5")
    assert chunked.streamed and chunked.n_genes == adata.n_vars - 1  # antibody dropped
    pd.testing.assert_frame_equal(chunked.var, whole.var)


@pytest.mark.parametrize("gz", [False, True])
def test_mtx_streams_in_any_entry_order(tmp_path, gz, monkeypatch):
    import geneattn.io.chunks as chunks

    monkeypatch.setattr(chunks, "MTX_LINES", 50)  # many blocks of lines
    adata = _study()
    directory = tmp_path / "mtx"
    directory.mkdir()
    coo = sp.coo_matrix(adata.X.toarray().astype(np.int64).T)
    order = np.random.default_rng(1).permutation(coo.nnz)
    shuffled = sp.coo_matrix((coo.data[order], (coo.row[order], coo.col[order])), coo.shape)
    scipy.io.mmwrite(directory / "matrix.mtx", shuffled)
    (directory / "features.tsv").write_text(
        "".join(f"ENSG{i}\t{g}\tGene Expression\n" for i, g in enumerate(adata.var_names))
    )
    (directory / "barcodes.tsv").write_text("".join(c + "\n" for c in adata.obs_names))
    if gz:
        for name in ("matrix.mtx", "features.tsv", "barcodes.tsv"):
            data = (directory / name).read_bytes()
            (directory / f"{name}.gz").write_bytes(gzip.compress(data))
            (directory / name).unlink()
    counts, whole = _check_reader(directory)
    pd.testing.assert_frame_equal(counts.var, whole.var)


def test_loom_streams(tmp_path):
    adata = _study()
    adata.obsm = {}
    adata.uns = {}
    path = tmp_path / "a.loom"
    adata.write_loom(path)
    counts, _ = _check_reader(path)
    assert counts.streamed and "source" in counts.obs


def test_csv_is_read_whole(tmp_path):
    adata = _study(n_cells=12, n_genes=6)
    path = tmp_path / "a.csv"
    pd.DataFrame(adata.X.toarray(), index=adata.obs_names, columns=adata.var_names).to_csv(path)
    counts, _ = _check_reader(path)
    assert not counts.streamed
    assert set(STREAMED_FORMATS) == {"h5ad", "10x_h5", "10x_mtx", "loom"}


def test_bad_value_names_the_global_row(tmp_path):
    adata = _study()
    x = adata.X.toarray()
    x[23, 5] = -1
    adata.X = sp.csr_matrix(x)
    adata.write_h5ad(tmp_path / "bad.h5ad")
    with open_counts(tmp_path / "bad.h5ad") as counts:
        with pytest.raises(InputError, match=r"negative value -1.0 at cell 'c23'.*row 23"):
            _blocks_of(counts)


# -- column sums --------------------------------------------------------------------------


def test_column_sums_match_scanpy_and_scipy_bit_for_bit():
    from scanpy.preprocessing._utils import _get_mean_var

    rng = np.random.default_rng(3)
    x = sp.random(97, 13, density=0.4, random_state=4, format="csr", dtype=np.float64)
    x.data = np.exp(rng.normal(5, 4, x.nnz))  # wide range: order matters in the last bits
    moments = ColumnMoments(13)
    totals = ColumnTotals(13, dtype=np.float32)
    x32 = x.astype(np.float32)
    for start in range(0, 97, 10):
        moments.add(x[start : start + 10])
        totals.add(x32[start : start + 10])
    mean, var = _get_mean_var(x, axis=0)
    got_mean, got_var = moments.mean_var()
    np.testing.assert_array_equal(got_mean, mean)
    np.testing.assert_array_equal(got_var, var)
    np.testing.assert_array_equal(totals.total, np.ravel(x32.sum(axis=0)))


# -- QC -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "keep", "max_counts"),
    [("source", ["Tumor", "NAT"], None), ("source", ["NAT", "Tumor"], 1e6), (None, None, None)],
)
def test_chunked_qc_equals_in_memory(tmp_path, condition, keep, max_counts, caplog):
    adata = _study(big=max_counts is None)
    if condition is None:  # a single-condition study replaces a column of that name
        adata.obs["condition"] = "input label"
    path = tmp_path / "raw.h5ad"
    adata.write_h5ad(path)
    options = dict(
        condition_column=condition,
        keep=keep,
        min_genes=5,
        min_cells=2,
        max_pct_mito=30.0,
        max_counts=max_counts,
    )
    whole, summary = run_qc(read_counts(path), **options, source=path)
    whole.write_h5ad(tmp_path / "whole.h5ad")
    with open_counts(path) as counts:
        shell, chunked_summary = run_qc_chunked(
            counts, tmp_path / "chunked.h5ad", **options, chunk_cells=CHUNK, source=path
        )
    assert chunked_summary == summary
    assert 0 < summary["cells_after"] < adata.n_obs
    a, b = ad.read_h5ad(tmp_path / "whole.h5ad"), ad.read_h5ad(tmp_path / "chunked.h5ad")
    _same_adata(a, b)
    pd.testing.assert_frame_equal(a.uns["qc_cells"], b.uns["qc_cells"], check_exact=True)
    assert a.uns.get("note") == b.uns.get("note")
    pd.testing.assert_frame_equal(shell.uns["qc_cells"], b.uns["qc_cells"])
    if condition is None:
        assert set(b.obs["condition"]) == {"all"}
        replaced = [r for r in caplog.records if "single-condition label" in r.getMessage()]
        assert len(replaced) == 2  # once per path


def test_chunked_qc_refuses_an_empty_result(tmp_path):
    adata = _study()
    adata.write_h5ad(tmp_path / "raw.h5ad")
    with open_counts(tmp_path / "raw.h5ad") as counts, pytest.raises(InputError, match="min_genes"):
        run_qc_chunked(
            counts,
            tmp_path / "out.h5ad",
            condition_column="source",
            keep=["Tumor", "NAT"],
            min_genes=10_000,
            chunk_cells=CHUNK,
        )


def test_qc_cli_chunk_sizes_agree(tmp_path):
    from geneattn.cli import main

    _study().write_h5ad(tmp_path / "raw.h5ad")
    for chunk in (5, 1000):
        argv = [
            "qc", str(tmp_path / "raw.h5ad"), "--condition-column", "source",
            "--keep", "Tumor", "NAT", "--min-genes", "5", "--min-cells", "2",
            "--chunk-cells", str(chunk), "--out", str(tmp_path / f"qc{chunk}.h5ad"),
            "--summary", str(tmp_path / f"qc{chunk}.json"),
            "--plot", str(tmp_path / f"qc{chunk}.png"),
        ]  # fmt: skip
        assert main(argv) == 0
    _same_adata(ad.read_h5ad(tmp_path / "qc5.h5ad"), ad.read_h5ad(tmp_path / "qc1000.h5ad"))
    assert (tmp_path / "qc5.json").read_text() == (tmp_path / "qc1000.json").read_text()
    assert (tmp_path / "qc5.png").read_bytes() == (tmp_path / "qc1000.png").read_bytes()


# -- tokenize -----------------------------------------------------------------------------

TOKENS = {"<pad>": 0, "<mask>": 1, **{f"ENSG{i}": i + 2 for i in range(40)}}
MEDIANS = {f"ENSG{i}": 0.5 + (i % 7) for i in range(40) if i % 9}
NAMES = {f"G{i}": f"ENSG{i}" for i in range(40)} | {"MT-0": "ENSG0", "MT-1": "ENSG0"}


def _dictionaries(tmp_path):
    rows = "".join(f"{g}\t{t}\n" for g, t in TOKENS.items())
    (tmp_path / "dict.tsv").write_text("gene_id\ttoken\n" + rows)
    rows = "".join(f"{s}\t{g}\n" for s, g in NAMES.items())
    (tmp_path / "names.tsv").write_text("symbol\tgene_id\n" + rows)


def _qc_file(tmp_path):
    adata = _study()
    adata.obs["n_counts"] = np.asarray(adata.X.sum(axis=1), dtype=np.float64).ravel()
    adata.obs.loc[adata.obs_names[3], "n_counts"] = 0.0
    path = tmp_path / "qc.h5ad"
    adata.write_h5ad(path)
    return adata, path


@pytest.mark.parametrize("medians", ["geneformer_v1", "corpus", "none"])
def test_tokenize_blocks_equals_in_memory(tmp_path, medians, monkeypatch):
    from geneattn.tokenize import (
        load_condition_labels,
        load_obs_rows,
        load_tokens,
        save_tokens,
        tokenize_counts,
    )
    from geneattn.tokenize_stream import h5ad_blocks, tokenize_blocks

    adata, path = _qc_file(tmp_path)
    options = dict(
        token_dictionary=TOKENS,
        gene_medians=MEDIANS,
        name_map=NAMES,
        medians=medians,
        max_len=9,
    )
    cells, summary = tokenize_counts(
        adata.X, adata.var_names.to_numpy(), cell_ids=adata.obs_names.to_numpy(),
        n_counts=adata.obs["n_counts"].to_numpy(), **options,
    )  # fmt: skip
    # the rows of the written cells and their condition labels, as the tokenize CLI records
    rows = adata.obs_names.get_indexer(cells.cell_ids)
    labels = np.where(np.arange(adata.n_obs) % 3 == 0, "case", "control")
    save_tokens(tmp_path / "whole.npz", cells, obs_rows=rows, conditions=("c", labels[rows]))
    blocks, _, _ = h5ad_blocks(path, CHUNK)
    import geneattn.tokenize_stream as stream

    monkeypatch.setattr(stream, "MAX_MEDIAN_VALUES", 40)  # corpus: several passes
    ids, chunked = tokenize_blocks(
        blocks, adata.var_names.to_numpy(), tmp_path / "chunked.npz",
        cell_ids=adata.obs_names.to_numpy(), n_counts=adata.obs["n_counts"].to_numpy(),
        conditions=("c", labels), **options,
    )  # fmt: skip
    assert chunked == summary
    a, b = np.load(tmp_path / "whole.npz"), np.load(tmp_path / "chunked.npz")
    assert a.files == b.files
    for name in a.files:
        assert a[name].dtype == b[name].dtype
        np.testing.assert_array_equal(a[name], b[name])
    np.testing.assert_array_equal(ids, cells.cell_ids)
    assert load_tokens(tmp_path / "chunked.npz", cells=[2, 0]).n_cells == 2
    np.testing.assert_array_equal(load_obs_rows(tmp_path / "chunked.npz", [2, 0]), rows[[2, 0]])
    np.testing.assert_array_equal(
        load_condition_labels(tmp_path / "chunked.npz", "c"), labels[rows]
    )
    assert load_condition_labels(tmp_path / "chunked.npz", "other") is None


def test_corpus_medians_in_passes_equal_in_memory():
    from geneattn.tokenize import corpus_medians
    from geneattn.tokenize_stream import corpus_medians_chunked

    x = sp.csr_matrix(_study().X)
    n_counts = np.asarray(x.sum(axis=1)).ravel() + 1.0

    def blocks():
        for s in range(0, x.shape[0], CHUNK):
            yield s, min(s + CHUNK, x.shape[0]), x[s : s + CHUNK]

    for budget in (1, 30, 10_000):
        got = corpus_medians_chunked(blocks, n_counts, lambda b: b, x.shape[1], max_values=budget)
        np.testing.assert_array_equal(got, corpus_medians(x, n_counts))


def test_tokenize_cli_writes_what_the_in_memory_path_writes(tmp_path):
    """Blocks of 4 cells, one block, and a CSC ``X`` (read whole) give the same files."""
    from geneattn.cli import main

    adata, path = _qc_file(tmp_path)
    csc = adata.copy()
    csc.X = sp.csc_matrix(csc.X)
    csc.write_h5ad(tmp_path / "qc_csc.h5ad")
    _dictionaries(tmp_path)
    outs = {}
    for name, source, chunk in [
        ("4", path, 4),
        ("whole_block", path, 100_000),
        ("csc", tmp_path / "qc_csc.h5ad", 4),
    ]:
        argv = [
            "tokenize", str(source), "--token-dictionary", str(tmp_path / "dict.tsv"),
            "--gene-names", str(tmp_path / "names.tsv"), "--medians", "none",
            "--max-len", "9", "--chunk-cells", str(chunk), "--condition-column", "source",
            "--attribute", "source=label",
            "--out", str(tmp_path / f"t{name}.npz"), "--summary", str(tmp_path / f"t{name}.json"),
        ]  # fmt: skip
        assert main(argv) == 0
        outs[name] = json.loads((tmp_path / f"t{name}.json").read_text())
        del outs[name]["input"]
    assert outs["4"] == outs["whole_block"] == outs["csc"] and outs["4"]["cells_by_label"]
    assert (tmp_path / "t4.npz").read_bytes() == (tmp_path / "twhole_block.npz").read_bytes()
    assert (tmp_path / "t4.npz").read_bytes() == (tmp_path / "tcsc.npz").read_bytes()
    a = np.load(tmp_path / "t4.npz")
    assert {"attr__label", "obs_rows", "conditions"} <= set(a.files)


# -- universe -----------------------------------------------------------------------------


def _tokens_file(tmp_path):
    from geneattn.tokenize import save_tokens, tokenize_counts

    adata, path = _qc_file(tmp_path)
    cells, _ = tokenize_counts(
        adata.X, adata.var_names.to_numpy(), cell_ids=adata.obs_names.to_numpy(),
        n_counts=None, token_dictionary=TOKENS, name_map=NAMES, medians="none", max_len=12,
    )  # fmt: skip
    save_tokens(tmp_path / "tokens.npz", cells)
    return adata, path, cells


def test_streamed_universes_equal_in_memory(tmp_path):
    from geneattn.tokenize_stream import h5ad_blocks
    from geneattn.universe import choose_universe, highly_variable_universe
    from geneattn.universe_stream import frequent_universe, variable_universe

    adata, path, cells = _tokens_file(tmp_path)
    tokens = tmp_path / "tokens.npz"
    gene_ids = np.array([NAMES.get(g, "") for g in adata.var_names], dtype=object)
    for min_cells, max_genes in ((1, 100), (5, 8)):
        got, _ = frequent_universe(tokens, min_cells=min_cells, max_genes=max_genes, chunk_cells=6)
        np.testing.assert_array_equal(
            got, choose_universe(cells, min_cells=min_cells, max_genes=max_genes)
        )
        blocks, _, _ = h5ad_blocks(path, CHUNK)
        got, _ = variable_universe(
            tokens, blocks, gene_ids, min_cells=min_cells, max_genes=max_genes, chunk_cells=6
        )
        want = highly_variable_universe(
            cells, adata.X, gene_ids, min_cells=min_cells, max_genes=max_genes
        )
        np.testing.assert_array_equal(got, want)


def test_seurat_statistics_equal_scanpy():
    import scanpy as sc

    from geneattn.universe_stream import seurat_dispersions

    x = sp.csr_matrix(_study(n_cells=80, n_genes=30).X, dtype=np.float64)
    columns = np.arange(2, 30)

    def blocks():
        for s in range(0, x.shape[0], CHUNK):
            yield s, min(s + CHUNK, x.shape[0]), x[s : s + CHUNK]

    got = seurat_dispersions(blocks, columns, n_top_genes=10)
    adata = ad.AnnData(x[:, columns])
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    want = sc.pp.highly_variable_genes(adata, flavor="seurat", n_top_genes=10, inplace=False)
    for column in ("means", "dispersions", "dispersions_norm", "highly_variable"):
        np.testing.assert_array_equal(got[column].to_numpy(), want[column].to_numpy())


# -- PCA ----------------------------------------------------------------------------------


def test_streamed_pca_matches_arpack():
    """Stated tolerance: subspace sine < 1e-5 overall and per head, variances to 1e-8."""
    from geneattn.models.pca import log_normalised, streaming_gene_loadings, subspace_sine
    from geneattn.models.study import pca_gene_loadings

    rng = np.random.default_rng(5)
    n, g, k = 400, 120, 8
    factors = rng.gamma(1.0, 1.0, (n, 12)) @ rng.gamma(0.3, 1.0, (12, g))
    x = sp.csr_matrix(rng.poisson(factors * 3).astype(np.float32))
    n_counts = np.asarray(x.sum(axis=1), dtype=np.float64).ravel()

    def blocks():
        for s in range(0, n, 37):
            yield s, min(s + 37, n), x[s : s + 37]

    want = pca_gene_loadings(x, n_counts, n_components=k, seed=0)
    got = streaming_gene_loadings(blocks, n_counts, g, n_components=k, seed=0)
    assert subspace_sine(want, got) < 1e-5
    for h in range(0, k, 2):
        assert subspace_sine(want[:, h : h + 2], got[:, h : h + 2]) < 1e-5
    np.testing.assert_allclose((got**2).sum(0), (want**2).sum(0), rtol=1e-8)
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
    assert log_normalised(x[:2], n_counts[:2]).shape == (2, g)


def test_model_cli_streams_above_chunk_cells(tmp_path):
    from geneattn.cli import main
    from geneattn.models.pca import subspace_sine
    from geneattn.models.study import load_study_model

    _, path = _qc_file(tmp_path)
    _dictionaries(tmp_path)
    for chunk in (10, 100_000):
        argv = [
            "model", str(path), "--token-dictionary", str(tmp_path / "dict.tsv"),
            "--gene-names", str(tmp_path / "names.tsv"), "--d-model", "8", "--n-heads", "2",
            "--chunk-cells", str(chunk), "--out", str(tmp_path / f"m{chunk}.npz"),
        ]  # fmt: skip
        assert main(argv) == 0
    streamed, whole = (
        load_study_model(tmp_path / "m10.npz"),
        load_study_model(tmp_path / "m100000.npz"),
    )
    assert "pca" in streamed.params and "pca" not in whole.params
    rows = np.flatnonzero(np.abs(whole.gene_embeddings).sum(1))
    assert subspace_sine(whole.gene_embeddings[rows], streamed.gene_embeddings[rows]) < 1e-4


# -- gather -------------------------------------------------------------------------------


def test_gather_embeddings_in_shards_equals_concat(tmp_path):
    from geneattn.embeddings import gather_embedding_files

    rng = np.random.default_rng(0)
    parts, paths = [], []
    for s in range(3):
        n = 4 + s
        obs = pd.DataFrame(
            {"source": pd.Categorical(rng.choice(["Tumor", "NAT"], n))},
            index=[f"s{s}c{i}" for i in range(n)],
        )
        part = ad.AnnData(X=np.zeros((n, 0), dtype=np.float32), obs=obs)
        part.obsm["X_geneattn"] = rng.normal(size=(n, 5)).astype(np.float32)
        part.uns["geneattn_model"] = {"kind": "study_pca", "seed": "42"}
        part.write_h5ad(tmp_path / f"shard{s}.h5ad")
        parts.append(part)
        paths.append(tmp_path / f"shard{s}.h5ad")
    assert gather_embedding_files(paths, tmp_path / "out.h5ad") == 15
    got = ad.read_h5ad(tmp_path / "out.h5ad")
    want = ad.concat(parts, axis=0, merge="same", uns_merge="first")
    _same_adata(want, got)
    assert got.uns["geneattn_model"] == want.uns["geneattn_model"]
    parts[1].obs_names = parts[0].obs_names[:1].append(parts[1].obs_names[1:])
    parts[1].write_h5ad(tmp_path / "shard1.h5ad")
    with pytest.raises(InputError, match="also in"):
        gather_embedding_files(paths, tmp_path / "again.h5ad")
