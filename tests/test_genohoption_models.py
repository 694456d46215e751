"""GenoHoption behind the model protocol: the study model and a checkpoint in
``attention.mode: genohoption``, their files, the command line and the whole workflow."""

from __future__ import annotations

import dataclasses
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml
from workflow_runs import prepare_workdir, run_workflow

from geneattn.cli import main
from geneattn.errors import InputError
from geneattn.models import AttentionModel, load_model
from geneattn.models.bert import BertEncoder
from geneattn.models.bert_weights import BertConfig, BertWeights, save_checkpoint
from geneattn.models.checkpoint import load_manifest, write_manifest
from geneattn.models.genohoption import (
    GenoHoptionConfig,
    TokenGraph,
    load_token_graph,
    save_token_graph,
)
from geneattn.models.study import (
    StudyModel,
    load_study_model,
    save_study_model,
    with_genohoption,
)
from geneattn.resources.load import load_token_dictionary
from geneattn.testing import genohoption as ref
from geneattn.tokenize import TokenizedCells

TOL64 = {"rtol": 1e-9, "atol": 1e-12}
TOL32 = {"rtol": 1e-4, "atol": 1e-4}


def _cells(rng: np.random.Generator, vocab: int, lengths: list[int]) -> TokenizedCells:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    tokens = np.concatenate([rng.permutation(vocab)[:n] for n in lengths]).astype(np.int32)
    vocabulary = np.array([f"ENSG{t:05d}" for t in range(vocab)])
    ids = np.array([f"c{i}" for i in range(len(lengths))])
    return TokenizedCells(tokens, offsets, ids, vocabulary)


def _graph(rng: np.random.Generator, vocab: int, **options) -> TokenGraph:
    p = sp.random(vocab, vocab, density=0.2, random_state=rng, format="csr")
    p = ((p + p.T) != 0).astype(float).tocsr()
    p.setdiag(0)
    p.eliminate_zeros()
    vocabulary = np.array([f"ENSG{t:05d}" for t in range(vocab)])
    return TokenGraph(p.indptr, p.indices, GenoHoptionConfig(**options), vocabulary)


@pytest.fixture
def study():
    """A random study model of 25 tokens, 4 cells, a prior, in GenoHoption mode."""
    rng = np.random.default_rng(0)
    vocab, d, heads = 25, 8, 2
    eye = np.eye(d)
    base = StudyModel(
        rng.normal(size=(vocab, d)), eye, eye.copy(), eye.copy(), eye.copy(), heads, {"k": 1}
    )
    graph = _graph(rng, vocab, diffusion="heat", iterations=4, t=2.0)
    return with_genohoption(base, graph), _cells(rng, vocab, [12, 1, 20, 7]), graph


def _reference_cell(model: StudyModel, tokens: np.ndarray, graph: TokenGraph) -> tuple:
    x = model.gene_embeddings[tokens]
    c = graph.config
    out, mats = ref.genohoption_attention(
        x @ model.w_q,
        x @ model.w_k,
        x @ model.w_v,
        ref.seq2graph(tokens, graph.matrix()),
        model.n_heads,
        diffusion=c.diffusion,
        alpha=c.alpha,
        t=c.t,
        iterations=c.iterations,
    )
    return out, mats.mean(axis=0)


def test_study_model_in_genohoption_mode(study, tmp_path):
    model, cells, graph = study
    assert isinstance(model, AttentionModel)
    assert model.params["attention"]["mode"] == "genohoption"
    assert model.params["attention"]["prior_edges"] == graph.n_edges
    emb = model.embed(cells, n_threads=2)
    universe = np.array([3, 7, 11, 19, 0, 24])
    g = universe.size
    sums, inc = np.zeros((g, g)), np.zeros(g)
    model.add_attention_sums(cells, universe, sums, inc, n_threads=2)
    index = np.full(25, -1)
    index[universe] = np.arange(g)
    want_sums, want_inc = np.zeros((g, g)), np.zeros(g)
    columns = np.array([0, 0, 1, 1, -1, 0])
    mod, pairs = model.module_sums(cells, universe, columns, 2, n_threads=2)
    for c in range(cells.n_cells):
        tokens = cells.cell(c).astype(np.int64)
        out, m = _reference_cell(model, tokens, graph)
        np.testing.assert_allclose(emb[c], out.mean(axis=0) @ model.w_o, **TOL64)
        ref.add_attention(want_sums, want_inc, m, index[tokens])
        want_mod, want_pairs = ref.module_sums(m, index[tokens], columns, 2)
        np.testing.assert_allclose(mod[c], want_mod, **TOL64)
        np.testing.assert_array_equal(pairs[c], want_pairs)
    np.testing.assert_allclose(sums, want_sums, **TOL64)
    np.testing.assert_allclose(inc, want_inc, **TOL64)
    # the file keeps the prior; dense models' files are unchanged
    save_study_model(tmp_path / "m.npz", model)
    back = load_study_model(tmp_path / "m.npz")
    assert back.genohoption is not None and back.params == model.params
    np.testing.assert_array_equal(back.genohoption.indices, graph.indices)
    assert back.genohoption.config == graph.config
    np.testing.assert_array_equal(back.embed(cells), emb)
    dense = StudyModel(*(getattr(model, f) for f in ("gene_embeddings", "w_q", "w_k")),
                       model.w_v, model.w_o, model.n_heads, {"k": 1})  # fmt: skip
    save_study_model(tmp_path / "d.npz", dense)
    with np.load(tmp_path / "d.npz") as z:
        assert not any(f.startswith("genohoption") for f in z.files)
    assert load_study_model(tmp_path / "d.npz").genohoption is None
    assert not np.allclose(dense.embed(cells), emb)


@pytest.mark.parametrize("mode", ["delete", "overexpress", "inhibit"])
def test_study_model_perturbations_equal_encoding_the_edited_cells(study, mode):
    model, cells, graph = study
    edit_cell = np.array([0, 0, 2, 3])
    edit_token = np.array([cells.cell(0)[3], cells.cell(0)[0], cells.cell(2)[5], 24])
    if mode != "overexpress":
        edit_token[3] = cells.cell(3)[1]
    original, perturbed = model.edit_embeddings(cells, edit_cell, edit_token, mode, n_threads=2)
    for e, (c, t) in enumerate(zip(edit_cell, edit_token, strict=True)):
        seq = cells.cell(c).astype(np.int64)
        out, _ = _reference_cell(model, seq, graph)
        keep = seq != t
        np.testing.assert_allclose(original[e], out[keep].mean(axis=0) @ model.w_o, **TOL64)
        if mode == "inhibit":  # order-free: moving a gene changes nothing
            np.testing.assert_array_equal(perturbed[e], original[e])
            continue
        if mode == "delete":
            edited = seq[keep]
        elif t in seq:  # overexpress of a present gene only moves it
            np.testing.assert_array_equal(perturbed[e], original[e])
            continue
        else:
            edited = np.concatenate([seq[:-1], [t]])
        out, _ = _reference_cell(model, edited, graph)
        want = out[edited != t].mean(axis=0) @ model.w_o
        np.testing.assert_allclose(perturbed[e], want, **TOL64)


def test_with_genohoption_refuses_a_prior_of_another_vocabulary(study):
    model, _, _ = study
    small = TokenGraph(np.zeros(4, np.int64), np.zeros(0, np.int64), GenoHoptionConfig())
    with pytest.raises(InputError, match="3 token ids but the model 25"):
        with_genohoption(model, small)


def _checkpoint(tmp_path, vocab: int = 30):
    config = BertConfig(
        vocab_size=vocab,
        hidden_size=12,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=20,
        max_position_embeddings=40,
        hidden_act="relu",
        layer_norm_eps=1e-12,
    )
    save_checkpoint(tmp_path / "gf", config, BertWeights.random(config, seed=3))
    return tmp_path / "gf", config


def test_checkpoint_in_genohoption_mode(tmp_path):
    path, config = _checkpoint(tmp_path)
    rng = np.random.default_rng(1)
    graph = _graph(rng, config.vocab_size, iterations=3)
    save_token_graph(tmp_path / "graph.npz", graph)
    stage = write_manifest(
        tmp_path / "model.json",
        path,
        token_dictionary=None,
        version="V1",
        emb_layer=0,
        pooling="mean",
        attention_layer=1,
        attention_heads=None,
        attention_graph=tmp_path / "graph.npz",
    )
    manifest = json.loads((tmp_path / "model.json").read_text())
    assert manifest["attention"]["mode"] == "genohoption"
    assert stage.params["attention"]["iterations"] == 3
    model = load_model(tmp_path / "model.json")
    cells = _cells(rng, config.vocab_size, [15, 3, 30])
    emb = model.embed(cells)
    universe = np.arange(0, 30, 2)
    g = universe.size
    sums, inc = np.zeros((g, g)), np.zeros(g)
    model.add_attention_sums(cells, universe, sums, inc, n_threads=2)
    want_sums, want_inc = np.zeros((g, g)), np.zeros(g)
    index = np.full(30, -1)
    index[universe] = np.arange(g)
    weights = model.model.weights
    for c in range(cells.n_cells):
        ids = cells.cell(c).astype(np.int64)
        adj = ref.seq2graph(ids, graph.matrix())
        hidden, mats = ref.bert_forward(ids, weights, config, adj, iterations=3)
        np.testing.assert_allclose(emb[c], hidden[2].mean(axis=0), **TOL32)
        ref.add_attention(want_sums, want_inc, mats[1].mean(axis=0), index[ids])
    np.testing.assert_allclose(sums, want_sums, **TOL32)
    np.testing.assert_allclose(inc, want_inc, **TOL32)
    # dense on the same checkpoint differs; a changed prior is refused
    dense = BertEncoder.load(path, version="V1")
    ids, offsets = model.inputs(cells)
    assert not np.allclose(dense.encode_batch(ids, offsets, emb_layer=0), emb, atol=1e-3)
    save_token_graph(tmp_path / "graph.npz", _graph(rng, config.vocab_size))
    with pytest.raises(InputError, match="changed since the manifest was written"):
        load_manifest(tmp_path / "model.json")


def test_checkpoint_prior_is_moved_onto_its_dictionary_by_gene(tmp_path):
    path, _ = _checkpoint(tmp_path)
    rng = np.random.default_rng(2)
    graph = _graph(rng, 30)
    # the checkpoint's dictionary lists our genes in reverse order
    td = {f"ENSG{t:05d}": 29 - t for t in range(30)}
    stage = write_manifest(
        tmp_path / "model.json",
        path,
        token_dictionary=None,
        version="V1",
        emb_layer=0,
        pooling="mean",
        attention_layer=0,
        attention_heads=None,
    )
    stage.model.token_dictionary = td
    stage.use_genohoption(graph)
    arg = stage.model.genohoption
    moved = sp.csr_matrix((np.ones(arg["indices"].size), arg["indices"], arg["indptr"]))
    np.testing.assert_array_equal(moved.toarray(), graph.matrix().toarray()[::-1, ::-1])
    stage.model.token_dictionary = td
    with pytest.raises(InputError, match="no vocabulary"):
        stage.use_genohoption(TokenGraph(graph.indptr, graph.indices, graph.config))


def test_attention_graph_and_model_commands(tmp_path, resources_dir):
    """The two commands on real demo counts: the union prior and a GenoHoption model."""
    adata = ad.read_h5ad(resources_dir / "wu2020_200.h5ad")[:80].copy()
    adata.obs["n_counts"] = np.asarray(adata.X.sum(axis=1)).ravel()
    adata.write_h5ad(tmp_path / "qc.h5ad")
    gf = resources_dir / "geneformer_v1"
    common = ["--token-dictionary", str(gf / "token_dictionary.tsv")]
    common += ["--gene-names", str(gf / "gene_name_id.tsv")]
    args = ["attention-graph", *common, "--ppi", str(resources_dir / "ppi" / "h_sapiens.tsv")]
    args += ["--counts", str(tmp_path / "qc.h5ad"), "--graph", "union", "--diffusion", "heat"]
    assert main([*args, "--out", str(tmp_path / "g.npz")]) == 0
    graph = load_token_graph(tmp_path / "g.npz")
    vocab = len(load_token_dictionary(gf / "token_dictionary.tsv"))
    assert graph.n_tokens == vocab and graph.config.diffusion == "heat"
    assert graph.n_edges > 500_000  # the PPI alone has about a million directed pairs
    model_args = ["model", str(tmp_path / "qc.h5ad"), *common, "--d-model", "8"]
    model_args += ["--attention-graph", str(tmp_path / "g.npz"), "--out", str(tmp_path / "m.npz")]
    assert main(model_args) == 0
    model = load_model(tmp_path / "m.npz")
    assert model.params["attention"]["graph"] == "union"
    no_counts = ["attention-graph", *common, "--graph", "coexpression"]
    assert main([*no_counts, "--out", str(tmp_path / "x.npz")]) == 2
    assert not (tmp_path / "x.npz").exists()


@pytest.mark.early
def test_demo_study_runs_in_genohoption_mode(tmp_path, resources_dir):
    """The demo study with GenoHoption attention in the study model: every stage the model
    shapes runs on it and records it."""
    workdir = prepare_workdir(tmp_path / "run", resources_dir)
    study = {
        "study": "genohoption_demo",
        "attention": {"mode": "genohoption", "graph": "union", "diffusion": "heat"},
        "modules": {"permutations": 200},
        "evaluation": {"permutations": 200},
        # two listed genes and one null gene per bin: GenoHoption re-runs the encoder per edit
        "perturb": {"genes_from": "list", "genes": ["CCL5", "GZMB"], "null_per_bin": 1},
    }
    (workdir / "study.yaml").write_text(yaml.safe_dump(study))
    # up to the tables the model shapes; evaluate, module analysis and the report only read
    # tables (the demo run and the checkpoint run cover them)
    out = workdir / "results" / "genohoption_demo"
    targets = [str(out.relative_to(workdir) / n) for n in ("differential.tsv", "perturbation.tsv")]
    run_workflow(workdir, *targets, "--configfile", "config.yaml", "study.yaml")
    model = load_model(out / "model.npz")
    assert model.params["attention"] == {
        "mode": "genohoption",
        **GenoHoptionConfig(graph="union", diffusion="heat").params(),
        "prior_edges": model.genohoption.n_edges,
    }
    emb = ad.read_h5ad(out / "embeddings.h5ad")
    assert np.isfinite(emb.obsm["X_geneattn"]).all()
    edges = pd.read_csv(out / "network" / "case_edges.tsv", sep="\t")
    assert len(edges) > 0
    perturbation = pd.read_csv(out / "perturbation.tsv", sep="\t")
    assert len(perturbation) > 0 and np.isfinite(perturbation["mean_cosine_shift"]).all()
    assert set(perturbation["gene"]) == {"CCL5", "GZMB"}
    differential = pd.read_csv(out / "differential.tsv", sep="\t", comment="#")
    assert len(differential) > 0


def test_rank_scaled_study_model_in_genohoption_mode(study):
    """Values scaled by ln((n + 1) / (i + 1)) as the dense default model's; a moved gene's
    value takes its new position's weight, the other genes keep theirs."""
    from geneattn.edits import kernel_moves

    model, cells, graph = study
    ranked = dataclasses.replace(model, params={**model.params, "value_rank": "log"})
    c = graph.config
    kw = {"diffusion": c.diffusion, "alpha": c.alpha, "t": c.t, "iterations": c.iterations}

    def reference(tokens, weights):
        x = ranked.gene_embeddings[tokens]
        out, _ = ref.genohoption_attention(
            x @ ranked.w_q, x @ ranked.w_k, (x @ ranked.w_v) * weights[:, None],
            ref.seq2graph(tokens, graph.matrix()), ranked.n_heads, **kw,
        )  # fmt: skip
        return out

    def rank(n):
        return np.log((n + 1) / (np.arange(n) + 1))

    emb = ranked.embed(cells)
    for cell in range(cells.n_cells):
        seq = cells.cell(cell).astype(np.int64)
        want = reference(seq, rank(seq.size)).mean(axis=0) @ ranked.w_o
        np.testing.assert_allclose(emb[cell], want, **TOL64)
    assert not np.allclose(emb, model.embed(cells))
    edit_cell = np.array([0, 2, 2])
    edit_token = np.array([cells.cell(0)[3], cells.cell(2)[5], cells.cell(2)[0]])
    moves = kernel_moves(cells, edit_cell, edit_token, "inhibit", shift=0.25)
    original, perturbed = ranked.edit_embeddings(
        cells, edit_cell, edit_token, "inhibit", shift=0.25, n_threads=2
    )
    for e, (cell, token) in enumerate(zip(edit_cell, edit_token, strict=True)):
        seq = cells.cell(cell).astype(np.int64)
        w = rank(seq.size)
        p = int(np.flatnonzero(seq == token)[0])
        keep = np.arange(seq.size) != p
        np.testing.assert_allclose(
            original[e], reference(seq, w)[keep].mean(axis=0) @ ranked.w_o, **TOL64
        )
        w[p] = np.log((seq.size + 1) / (moves[e] + 1))
        want = reference(seq, w)[keep].mean(axis=0) @ ranked.w_o
        np.testing.assert_allclose(perturbed[e], want, **TOL64)
    assert not np.allclose(perturbed, original)
