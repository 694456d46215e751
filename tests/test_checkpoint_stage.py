"""Pretrained checkpoints as the workflow's model: manifest, embed, attention, perturb.

Random checkpoints (written in numpy with ``save_checkpoint``) over a small gene
vocabulary; every stage result is compared with the numpy reference encoder
(:mod:`geneattn.testing.bert_reference`) applied to the same mapped, framed sequences.
"""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from geneattn.attention import aggregate_attention
from geneattn.cli import main
from geneattn.differential import module_attention
from geneattn.errors import InputError
from geneattn.models import load_model
from geneattn.models.bert_weights import BertConfig, BertWeights, save_checkpoint
from geneattn.models.checkpoint import load_manifest, write_manifest
from geneattn.perturb import perturbation_shifts
from geneattn.testing import bert_reference as ref
from geneattn.tokenize import TokenizedCells, save_tokens

N_GENES = 40
TOL = {"rtol": 2e-4, "atol": 2e-4}


def _cells(n_cells: int = 6, seed: int = 0) -> TokenizedCells:
    """Cells of 3..20 distinct genes, tokens are ids of a 40-gene vocabulary."""
    rng = np.random.default_rng(seed)
    seqs = [rng.permutation(N_GENES)[: rng.integers(3, 21)] for _ in range(n_cells)]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    return TokenizedCells(
        tokens=np.concatenate(seqs).astype(np.int32),
        offsets=offsets,
        cell_ids=np.array([f"c{i}" for i in range(n_cells)]),
        vocabulary=np.array([f"ENSG{g:011d}" for g in range(N_GENES)]),
    )


def _config(vocab: int, positions: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=24,
        max_position_embeddings=positions,
        hidden_act="relu",
    )


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    """A V1-style checkpoint whose ids are our token ids (no dictionary), 16 positions."""
    root = tmp_path_factory.mktemp("v1")
    config = _config(N_GENES, 16)
    save_checkpoint(root / "model", config, BertWeights.random(config, seed=1))
    return root


@pytest.fixture(scope="module")
def v2(tmp_path_factory):
    """A V2-style checkpoint: its own dictionary (shuffled ids, 5 genes unknown, specials)."""
    root = tmp_path_factory.mktemp("v2")
    rng = np.random.default_rng(7)
    ids = rng.permutation(N_GENES + 3)
    genes = [f"ENSG{g:011d}" for g in range(5, N_GENES)]
    dictionary = {"<pad>": int(ids[0]), "<cls>": int(ids[1]), "<eos>": int(ids[2])}
    dictionary.update({g: int(i) for g, i in zip(genes, ids[3:], strict=False)})
    lines = "".join(f"{g}\t{i}\n" for g, i in dictionary.items())
    (root / "dict.tsv").write_text("gene_id\ttoken\n" + lines)
    config = _config(N_GENES + 3, 24)
    save_checkpoint(root / "model", config, BertWeights.random(config, seed=2))
    return root


def _stage(root, tmp_path, **choices):
    dictionary = root / "dict.tsv"
    out = tmp_path / "model.json"
    kw = {"emb_layer": -1, "pooling": "mean", "attention_layer": -1, "attention_heads": None}
    kw.update(choices)
    write_manifest(
        out,
        root / "model",
        token_dictionary=dictionary if dictionary.exists() else None,
        version=None if dictionary.exists() else "V1",
        **kw,
    )
    return load_model(out)


def _reference_inputs(stage, cells):
    """The mapped, truncated, framed sequences the stage feeds the encoder, one per cell."""
    ids, offsets = stage.inputs(cells)
    return [ids[offsets[c] : offsets[c + 1]] for c in range(cells.n_cells)]


def _ref_forward(stage, ids):
    return ref.forward(ids, stage.model.weights, stage.model.config)


# --- manifest ------------------------------------------------------------------------


def test_model_cli_writes_a_manifest_that_loads_the_checkpoint(v1, tmp_path, capsys):
    out = tmp_path / "model.json"
    args = ["model", "--checkpoint", str(v1 / "model"), "--version", "V1", "--emb-layer", "0"]
    args += ["--attention-layer", "1", "--attention-heads", "0", "2", "--out", str(out)]
    assert main(args) == 0, capsys.readouterr().err
    manifest = json.loads(out.read_text())
    assert manifest["version"] == "V1" and manifest["attention_heads"] == [0, 2]
    again = tmp_path / "again.json"
    assert main([*args[:-1], str(again)]) == 0
    assert out.read_bytes() == again.read_bytes()
    stage = load_model(out)
    assert (stage.emb_layer, stage.attention_layer, stage.attention_heads) == (0, 1, (0, 2))
    # weights changed after the manifest was written: refused, naming the manifest
    weights = v1 / "model" / "model.safetensors"
    saved = weights.read_bytes()
    try:
        weights.write_bytes(saved[:-4] + b"\0\0\0\0")
        with pytest.raises(InputError, match="changed since"):
            load_manifest(out)
    finally:
        weights.write_bytes(saved)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--attention-layer", "3"], "attention_layer"),
        (["--attention-heads", "4"], "attention_heads"),
        (["--emb-layer", "-4"], "emb_layer"),
        (["--pooling", "cls"], "cls needs a V2"),
    ],
)
def test_bad_choices_are_refused_without_a_manifest(v1, tmp_path, capsys, extra, message):
    out = tmp_path / "model.json"
    args = ["model", "--checkpoint", str(v1 / "model"), "--version", "V1", *extra]
    args += ["--out", str(out)]
    assert main(args) == 2
    assert message in capsys.readouterr().err and not out.exists()


# --- embed ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_embeddings_are_geneformers_mean_over_gene_tokens(which, request, tmp_path):
    stage = _stage(request.getfixturevalue(which), tmp_path)
    cells = _cells()
    got = stage.embed(cells, n_threads=2)
    skip = 1 if stage.model.version == "V2" else 0
    for c, ids in enumerate(_reference_inputs(stage, cells)):
        hidden, _ = _ref_forward(stage, ids)
        want = ref.mean_pool(hidden[-2], skip, skip)  # emb_layer -1: the second-to-last
        np.testing.assert_allclose(got[c], want, **TOL)


def test_embed_cli_with_a_checkpoint(v2, tmp_path, capsys):
    cells = _cells()
    save_tokens(tmp_path / "tokens.npz", cells)
    obs = pd.DataFrame({"source": ["a"] * cells.n_cells}, index=cells.cell_ids)
    ad.AnnData(np.zeros((cells.n_cells, 1), np.float32), obs=obs).write_h5ad(tmp_path / "qc.h5ad")
    stage = _stage(v2, tmp_path, pooling="cls")
    args = ["embed", str(tmp_path / "tokens.npz"), "--model", str(tmp_path / "model.json")]
    args += ["--obs", str(tmp_path / "qc.h5ad"), "--out", str(tmp_path / "emb.h5ad")]
    assert main(args) == 0, capsys.readouterr().err
    emb = ad.read_h5ad(tmp_path / "emb.h5ad")
    np.testing.assert_array_equal(emb.obsm["X_geneattn"], stage.embed(cells))
    assert emb.uns["geneattn_model"]["pooling"] == "cls"


# --- perturb -------------------------------------------------------------------------


def _pool_without(stage, ids, hidden, gene_id):
    keep = ids != gene_id
    if stage.model.version == "V2":
        keep[0] = keep[-1] = False
    return hidden[keep].mean(axis=0)


@pytest.mark.parametrize("which", ["v1", "v2"])
@pytest.mark.parametrize("mode", ["delete", "overexpress", "inhibit", "activate"])
def test_perturbation_is_a_forward_pass_of_the_perturbed_sequence(which, mode, request, tmp_path):
    from geneattn.edits import perturbed_tokens

    stage = _stage(request.getfixturevalue(which), tmp_path)
    cells = _cells(4, seed=3)
    genes = [5, 11, 30]
    goal = np.linspace(-1, 1, stage.d_model)
    got = perturbation_shifts(stage, cells, genes, mode, goal=goal, shift=0.3, n_threads=2)
    assert len(got) > 0
    layer = stage.model.n_layers + stage.emb_layer
    for row in got.itertuples():
        seq = cells.cell(row.cell)
        gene_id = int(stage.model_ids(cells, np.array([row.token]))[0])
        ids, _ = stage.model.input_ids(seq, np.array([0, len(seq)]), cells.vocabulary)
        new = perturbed_tokens(seq, row.token, mode, shift=0.3)
        p_ids, _ = stage.model.input_ids(new, np.array([0, len(new)]), cells.vocabulary)
        z = _pool_without(stage, ids, _ref_forward(stage, ids)[0][layer], gene_id)
        zp = _pool_without(stage, p_ids, _ref_forward(stage, p_ids)[0][layer], gene_id)
        cos = zp @ z / np.linalg.norm(z) / np.linalg.norm(zp)
        np.testing.assert_allclose(row.cosine_shift, 1 - cos, rtol=0, atol=2e-4)
        g = goal / np.linalg.norm(goal)
        want_goal = zp @ g / np.linalg.norm(zp) - z @ g / np.linalg.norm(z)
        np.testing.assert_allclose(row.goal_shift, want_goal, rtol=0, atol=2e-4)
    if mode in ("inhibit", "activate"):
        # position embeddings: unlike the order-free study model, a rank shift moves cells
        assert (got["cosine_shift"].abs() > 1e-6).any()


def test_perturbation_ignores_thread_count(v1, tmp_path):
    stage = _stage(v1, tmp_path)
    cells = _cells(5, seed=4)
    one = perturbation_shifts(stage, cells, [1, 2, 3], "delete", goal=None, n_threads=1)
    two = perturbation_shifts(stage, cells, [1, 2, 3], "delete", goal=None, n_threads=2)
    pd.testing.assert_frame_equal(one, two)


# --- attention -----------------------------------------------------------------------


def _head_mean(att, heads):
    return att[list(heads)].mean(axis=0) if heads is not None else att.mean(axis=0)


@pytest.mark.parametrize("which", ["v1", "v2"])
@pytest.mark.parametrize(("layer", "heads"), [(-1, None), (0, (1, 3))])
def test_attention_sums_equal_the_reference_attention(which, layer, heads, request, tmp_path):
    stage = _stage(request.getfixturevalue(which), tmp_path, attention_layer=layer,
                   attention_heads=heads)  # fmt: skip
    cells = _cells(6, seed=5)
    universe = np.array([0, 3, 7, 8, 12, 20, 33, 39])
    got = aggregate_attention(cells, stage, universe, n_threads=2, chunks=3)
    want = np.zeros((len(universe), len(universe)))
    incoming = np.zeros(len(universe))
    model_universe = stage.model_ids(cells, universe)
    for ids in _reference_inputs(stage, cells):
        _, atts = _ref_forward(stage, ids)
        a = _head_mean(atts[layer], heads)
        for u, gu in enumerate(model_universe):
            rows = np.flatnonzero(ids == gu) if gu >= 0 else []
            for i in rows:
                incoming[u] += a[:, i].sum()
                for v, gv in enumerate(model_universe):
                    for j in np.flatnonzero(ids == gv) if gv >= 0 else []:
                        want[u, v] += a[i, j]
    np.testing.assert_allclose(got.sums, want, **TOL)
    np.testing.assert_allclose(got.incoming, incoming, **TOL)


def test_module_attention_with_a_checkpoint(v2, tmp_path):
    stage = _stage(v2, tmp_path)
    cells = _cells(6, seed=6)
    genes = np.array([2, 6, 9, 10, 14, 22, 31])
    modules = np.array([1, 1, 2, 2, 0, 2, 1])
    got = module_attention(cells, stage, genes, modules, n_threads=2)
    model_genes = stage.model_ids(cells, genes)
    for c, ids in enumerate(_reference_inputs(stage, cells)):
        a = _head_mean(_ref_forward(stage, ids)[1][-1], None)
        for k, label in enumerate(got.modules):
            member = {int(g) for g, m in zip(model_genes, modules, strict=True) if m == label}
            pos = [i for i, t in enumerate(ids.tolist()) if t in member and t >= 0]
            total = sum(a[i, j] for i in pos for j in pos if i != j)
            np.testing.assert_allclose(got.sums[c, k], total, **TOL)
            assert got.pairs[c, k] == len(pos) * (len(pos) - 1)


@pytest.mark.parametrize("mode", ["inhibit", "activate"])
def test_rank_shift_over_several_chunks_of_cells(mode, v1, tmp_path):
    """More cells than one chunk (64): every chunk gets the same rank shift fraction.

    Regression: the cosine shifts of the first chunk once overwrote the ``shift`` fraction,
    so the second chunk handed an array to the checkpoint and failed.
    """
    stage = _stage(v1, tmp_path)
    cells = _cells(70, seed=8)
    genes = [1, 2, 3]
    got = perturbation_shifts(stage, cells, genes, mode, goal=None, shift=0.3, chunk=64)
    assert got["cell"].max() >= 64
    # the same as one chunk of all 70 cells
    whole = perturbation_shifts(stage, cells, genes, mode, goal=None, shift=0.3, chunk=70)
    pd.testing.assert_frame_equal(got, whole)


@pytest.mark.parametrize("which", ["v1", "v2"])
def test_checkpoint_implements_the_model_protocol(which, request, tmp_path):
    from geneattn.models.protocol import AttentionModel

    stage = _stage(request.getfixturevalue(which), tmp_path)
    assert isinstance(stage, AttentionModel)
    assert stage.embed(_cells(3), n_threads=1).shape == (3, stage.d_model)
