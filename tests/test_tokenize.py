"""Tokenizer: Geneformer V1 rules, against a small independent implementation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from geneattn import rank_value_encode
from geneattn.cli import main
from geneattn.errors import InputError
from geneattn.tokenize import load_tokens, save_tokens, tokenize_counts

TOKENS = {"<pad>": 0, "<mask>": 1, "ENSG_A": 2, "ENSG_B": 3, "ENSG_C": 4, "ENSG_D": 5}
MEDIANS = {"ENSG_A": 2.0, "ENSG_B": 0.5, "ENSG_C": 1.0, "ENSG_D": 4.0}
NAMES = {"A": "ENSG_A", "B": "ENSG_B", "C": "ENSG_C", "D": "ENSG_D", "D2": "ENSG_D"}


def reference_tokens(counts, genes, n_counts, medians, max_len):
    """Independent per-cell implementation of the V1 rules (dense, plain Python sort)."""
    out = []
    for c in range(counts.shape[0]):
        summed = {}
        for j, g in enumerate(genes):
            ens = NAMES.get(g)
            if ens is None or ens not in medians or ens not in TOKENS:
                continue
            summed[ens] = summed.get(ens, 0.0) + float(counts[c, j])
        entries = [
            (x / n_counts[c] * 10_000.0 / medians[ens], TOKENS[ens])
            for ens, x in summed.items()
            if x > 0
        ]
        entries.sort(key=lambda e: (-e[0], e[1]))
        out.append([t for _, t in entries[:max_len]])
    return out


def _run(counts, genes, **kw):
    kw.setdefault("medians", "geneformer_v1")
    return tokenize_counts(
        sp.csr_matrix(counts),
        np.array(genes),
        cell_ids=np.array([f"c{i}" for i in range(counts.shape[0])]),
        n_counts=kw.pop("n_counts", None),
        token_dictionary=TOKENS,
        gene_medians=MEDIANS,
        name_map=NAMES,
        **kw,
    )


def test_seed_example_rank_value_encode():
    assert rank_value_encode(np.array([0.0, 5.0, 1.0, 10.0, 3.0])).tolist() == [3, 1, 4, 2]
    medians = np.array([10.0, 0.1, 1.0, 5.0, 0.5])
    # weighted: 0, 50, 1, 2, 6 -> gene 1 moves up to first place
    assert rank_value_encode(np.array([0.0, 5.0, 1.0, 10.0, 3.0]), medians).tolist() == [
        1,
        4,
        3,
        2,
    ]


def test_rank_value_encode_edge_cases():
    empty = rank_value_encode(np.zeros(4))
    assert empty.dtype == np.int64 and empty.size == 0
    assert rank_value_encode(np.array([])).size == 0
    # negative values are not expressed; ties keep ascending index
    assert rank_value_encode(np.array([-1.0, 2.0, 2.0, 0.0])).tolist() == [1, 2]


def test_medians_and_duplicate_symbols():
    genes = ["A", "B", "C", "D", "D2", "UNKNOWN"]
    counts = np.array([[4, 1, 0, 3, 5, 9], [0, 0, 0, 0, 0, 7]], dtype=np.float32)
    cells, summary = _run(counts, genes, n_counts=np.array([22.0, 7.0]))
    # cell 0: A 4/2=2, B 1/0.5=2, D (3+5)/4=2 -> three-way tie broken by token id
    assert cells.cell(0).tolist() == [2, 3, 5]
    assert cells.n_cells == 1  # cell 1 expresses only an unmapped gene
    assert summary["cells_dropped_no_tokens"] == 1
    assert summary["genes_merged_duplicates"] == 1
    assert summary["genes_dropped"]["no_ensembl_id"] == 1


def test_medians_none_and_corpus():
    genes = ["A", "B", "C"]
    counts = np.array([[1, 3, 2], [4, 2, 6]], dtype=np.float32)
    none, _ = _run(counts, genes, medians="none")
    assert none.cell(0).tolist() == [3, 4, 2]
    corpus, _ = _run(counts, genes, medians="corpus")
    # normalised: c0 = [1/6, 3/6, 2/6], c1 = [4/12, 2/12, 6/12] (x 1e4); medians per gene
    norm = counts / counts.sum(1, keepdims=True)
    med = np.median(norm, axis=0)
    want = [np.array([2, 3, 4])[np.lexsort(([2, 3, 4], -(norm[c] / med)))] for c in range(2)]
    assert [corpus.cell(c).tolist() for c in range(2)] == [w.tolist() for w in want]


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 12),
    st.integers(1, 6),
    st.integers(1, 8),
    st.integers(0, 2**32 - 1),
)
def test_matches_independent_implementation(n_cells, max_len, max_count, seed):
    rng = np.random.default_rng(seed)
    genes = ["A", "B", "C", "D", "D2", "ZZZ"]
    counts = rng.integers(0, max_count + 1, size=(n_cells, len(genes))).astype(np.float32)
    counts[rng.random(counts.shape) < 0.4] = 0
    n_counts = counts.sum(axis=1) + rng.integers(0, 5, n_cells)
    if not (counts[:, :5] > 0).any():
        with pytest.raises(InputError):
            _run(counts, genes, n_counts=n_counts, max_len=max_len)
        return
    cells, _ = _run(counts, genes, n_counts=n_counts, max_len=max_len, n_threads=2)
    want = [w for w in reference_tokens(counts, genes, n_counts, MEDIANS, max_len) if w]
    assert [cells.cell(i).tolist() for i in range(cells.n_cells)] == want


def test_thread_count_does_not_change_tokens():
    counts = sp.random(300, 5, density=0.6, random_state=1, format="csr") * 50
    counts.data = np.ceil(counts.data)
    one, _ = _run(counts.toarray(), ["A", "B", "C", "D", "D2"], n_threads=1)
    two, _ = _run(counts.toarray(), ["A", "B", "C", "D", "D2"], n_threads=2)
    assert np.array_equal(one.tokens, two.tokens) and np.array_equal(one.offsets, two.offsets)


def test_bad_input():
    counts = np.array([[1.0, 2.0]], dtype=np.float32)
    with pytest.raises(InputError, match="n_counts"):
        _run(counts, ["A", "B"], n_counts=np.array([np.nan]))
    with pytest.raises(InputError, match="no cell"):
        _run(counts, ["X", "Y"])
    with pytest.raises(InputError, match="max_len"):
        _run(counts, ["A", "B"], max_len=0)


def test_save_load_roundtrip_is_byte_deterministic(tmp_path):
    counts = np.array([[4, 1, 0, 3], [1, 1, 1, 1]], dtype=np.float32)
    cells, _ = _run(counts, ["A", "B", "C", "D"])
    save_tokens(tmp_path / "a.npz", cells)
    save_tokens(tmp_path / "b.npz", cells)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    back = load_tokens(tmp_path / "a.npz")
    assert np.array_equal(back.tokens, cells.tokens)
    assert back.tokens.dtype == np.int32 and back.offsets.dtype == np.int64
    assert back.vocabulary[2] == "ENSG_A"
    with pytest.raises(InputError, match=r"b\.txt"):
        (tmp_path / "b.txt").write_text("nope")
        load_tokens(tmp_path / "b.txt")


def test_demo_study_tokens_match_reference(resources_dir):
    """Real data: the demo h5ad through the real Geneformer V1 dictionaries."""
    import anndata as ad

    from geneattn.resources.load import load_gene_medians, load_gene_name_map, load_token_dictionary

    gf = resources_dir / "geneformer_v1"
    tokens = load_token_dictionary(gf / "token_dictionary.tsv")
    medians = load_gene_medians(gf / "gene_median_dictionary.tsv")
    names = load_gene_name_map(gf / "gene_name_id.tsv")
    adata = ad.read_h5ad(resources_dir / "wu2020_200.h5ad")
    x = sp.csr_matrix(adata.X, dtype=np.float32)
    n_counts = np.asarray(x.sum(axis=1)).ravel().astype(np.float64)
    cells, summary = tokenize_counts(
        x,
        adata.var_names.to_numpy(),
        cell_ids=adata.obs_names.to_numpy(),
        n_counts=n_counts,
        token_dictionary=tokens,
        gene_medians=medians,
        name_map=names,
        max_len=2048,
        n_threads=2,
    )
    assert summary["genes_tokenized"] > 15_000
    assert cells.n_cells == adata.n_obs
    # independent check on a few cells: dense per-cell ranking
    symbols = adata.var_names.to_numpy()
    median_of_token = {tokens[g]: m for g, m in medians.items() if g in tokens}
    for c in (0, 57, 199):
        row = x[c].toarray().ravel()
        value = {}
        for j in np.flatnonzero(row > 0):
            ens = names.get(symbols[j])
            if ens in medians and ens in tokens:
                value[tokens[ens]] = value.get(tokens[ens], 0.0) + float(row[j])
        entries = sorted(
            ((v / n_counts[c] * 10_000.0 / median_of_token[t], t) for t, v in value.items()),
            key=lambda e: (-e[0], e[1]),
        )
        assert cells.cell(c).tolist() == [t for _, t in entries[:2048]]


def test_cli_writes_both_outputs_or_neither(tmp_path, resources_dir):
    import anndata as ad

    gf = resources_dir / "geneformer_v1"
    adata = ad.read_h5ad(resources_dir / "wu2020_200.h5ad")[:20].copy()
    adata.obs["n_counts"] = np.asarray(adata.X.sum(axis=1)).ravel()
    adata.write_h5ad(tmp_path / "qc.h5ad")
    args = [
        "tokenize",
        str(tmp_path / "qc.h5ad"),
        "--token-dictionary",
        str(gf / "token_dictionary.tsv"),
        "--medians-file",
        str(gf / "gene_median_dictionary.tsv"),
        "--gene-names",
        str(gf / "gene_name_id.tsv"),
        "--threads",
        "2",
        "--out",
        str(tmp_path / "tokens.npz"),
        "--summary",
        str(tmp_path / "summary.json"),
    ]
    assert main(args) == 0
    assert load_tokens(tmp_path / "tokens.npz").n_cells == 20
    assert json.loads((tmp_path / "summary.json").read_text())["cells_out"] == 20
    # the workflow counts shards per condition from the summary
    assert main([*args, "--condition-column", "source"]) == 0
    counts = json.loads((tmp_path / "summary.json").read_text())["cells_by_label"]
    assert counts == adata.obs["source"].astype(str).value_counts().to_dict()
    assert main([*args, "--condition-column", "nope"]) == 2
    bad = [a.replace("qc.h5ad", "missing.h5ad") for a in args]
    bad[-3], bad[-1] = str(tmp_path / "t2.npz"), str(tmp_path / "s2.json")
    assert main(bad) == 2
    assert not (tmp_path / "t2.npz").exists() and not (tmp_path / "s2.json").exists()


def test_cli_ensembl_ids_from_var_gene_ids(tmp_path, resources_dir):
    """10x-style input: symbols as var_names, Ensembl IDs in var['gene_ids']."""
    import anndata as ad

    from geneattn.resources.load import load_gene_name_map

    gf = resources_dir / "geneformer_v1"
    names = load_gene_name_map(gf / "gene_name_id.tsv")
    adata = ad.read_h5ad(resources_dir / "wu2020_200.h5ad")[:10].copy()
    adata.var["gene_ids"] = [names.get(s, f"NOID{i}") for i, s in enumerate(adata.var_names)]
    adata.write_h5ad(tmp_path / "qc.h5ad")
    common = [
        str(tmp_path / "qc.h5ad"),
        "--token-dictionary",
        str(gf / "token_dictionary.tsv"),
        "--medians-file",
        str(gf / "gene_median_dictionary.tsv"),
    ]
    by_symbol = ["--gene-id", "symbol", "--gene-names", str(gf / "gene_name_id.tsv")]
    for mode, extra in (("sym", by_symbol), ("ens", ["--gene-id", "ensembl"])):
        out = ["--out", str(tmp_path / f"{mode}.npz"), "--summary", str(tmp_path / f"{mode}.json")]
        assert main(["tokenize", *common, *extra, *out]) == 0
    sym, ens = load_tokens(tmp_path / "sym.npz"), load_tokens(tmp_path / "ens.npz")
    assert np.array_equal(sym.tokens, ens.tokens) and np.array_equal(sym.offsets, ens.offsets)


def test_cli_geneformer_pickles_gene_mapping_and_attributes(tmp_path, resources_dir):
    """Geneformer's .pkl dictionaries, its gene mapping (unmapped IDs dropped), and obs
    columns carried into tokens.npz (custom_attr_name_dict)."""
    import pickle

    import anndata as ad

    from geneattn.resources.load import (
        load_gene_medians,
        load_gene_name_map,
        load_token_dictionary,
    )
    from geneattn.tokenize import load_token_attributes

    gf = resources_dir / "geneformer_v1"
    tokens = load_token_dictionary(gf / "token_dictionary.tsv")
    medians = load_gene_medians(gf / "gene_median_dictionary.tsv")
    names = load_gene_name_map(gf / "gene_name_id.tsv")
    adata = ad.read_h5ad(resources_dir / "wu2020_200.h5ad")[:12].copy()
    adata.obs["n_counts"] = np.asarray(adata.X.sum(axis=1)).ravel()
    ens = [names.get(s, f"NOID{i}") for i, s in enumerate(adata.var_names)]
    adata.var_names = ens
    adata.var_names_make_unique()
    adata.var = adata.var.drop(columns="gene_ids")  # else the CLI reads var['gene_ids']
    adata.write_h5ad(tmp_path / "qc.h5ad")
    # a mapping that knows every gene but the most expressed one of cell 0 (lower-case keys
    # are never matched: Geneformer upper-cases the IDs first)
    x0 = np.asarray(adata.X[0].todense()).ravel()
    x0[~adata.var_names.isin(list(tokens))] = 0  # hashed: np.isin on strings is quadratic
    top = str(adata.var_names[int(np.argmax(x0))])
    mapping = {g.upper(): g for g in tokens if g.startswith("ENS") and g != top}
    for name, obj in (("tok.pkl", tokens), ("med.pkl", medians), ("map.pkl", mapping)):
        with open(tmp_path / name, "wb") as fh:
            pickle.dump(obj, fh)

    def run(out: str, *extra: str) -> int:
        return main(
            [
                "tokenize",
                str(tmp_path / "qc.h5ad"),
                "--gene-id",
                "ensembl",
                "--out",
                str(tmp_path / f"{out}.npz"),
                "--summary",
                str(tmp_path / f"{out}.json"),
                *extra,
            ]
        )

    tsv = ["--token-dictionary", str(gf / "token_dictionary.tsv")]
    tsv += ["--medians-file", str(gf / "gene_median_dictionary.tsv")]
    pkl = ["--token-dictionary", str(tmp_path / "tok.pkl"), "--medians", "dictionary"]
    pkl += ["--medians-file", str(tmp_path / "med.pkl")]
    assert run("tsv", *tsv) == 0
    assert run("pkl", *pkl, "--attribute", "source", "--attribute", "patient=donor") == 0
    a, b = load_tokens(tmp_path / "tsv.npz"), load_tokens(tmp_path / "pkl.npz")
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.offsets, b.offsets)
    attrs = load_token_attributes(tmp_path / "pkl.npz")
    assert sorted(attrs) == ["donor", "source"]
    assert attrs["source"].tolist() == adata.obs["source"].astype(str).tolist()
    assert attrs["donor"].tolist() == adata.obs["patient"].astype(str).tolist()
    assert load_token_attributes(tmp_path / "tsv.npz") == {}

    assert run("mapped", *pkl, "--gene-mapping", str(tmp_path / "map.pkl")) == 0
    mapped = load_tokens(tmp_path / "mapped.npz")
    assert tokens[top] in a.cell(0) and tokens[top] not in mapped.cell(0)
    summary = json.loads((tmp_path / "mapped.json").read_text())
    assert summary["genes_dropped"]["not_in_gene_mapping"] >= 1
    assert run("bad", *pkl, "--attribute", "nope") == 2
    assert not (tmp_path / "bad.npz").exists()


def test_pickled_dictionaries_are_checked(tmp_path):
    import pickle

    from geneattn.resources.load import load_gene_mapping, load_gene_medians, load_token_dictionary

    for name, obj, loader in (
        ("neg.pkl", {"A": 1.0, "B": -2.0}, load_gene_medians),
        ("dup.pkl", {"A": 1, "B": 1}, load_token_dictionary),
        ("list.pkl", [1, 2], load_token_dictionary),
        ("num.pkl", {"A": 3}, load_gene_mapping),
    ):
        with open(tmp_path / name, "wb") as fh:
            pickle.dump(obj, fh)
        with pytest.raises(InputError, match=name):
            loader(tmp_path / name)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with open(tmp_path / "evil.pkl", "wb") as fh:
        pickle.dump({"A": Evil()}, fh)
    with pytest.raises(InputError, match="refusing"):
        load_token_dictionary(tmp_path / "evil.pkl")
