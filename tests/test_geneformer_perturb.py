"""Perturbation with Geneformer's definitions through the models and the perturb stage.

Random checkpoints over a 40-gene vocabulary (as in ``test_checkpoint_stage.py``) and the
study model; each shift is recomputed here with the numpy reference encoder and plain loops
(independent of :mod:`geneattn.geneformer_shifts` for the V1 case). Parity with Geneformer
itself is in ``test_geneformer_parity.py``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from geneattn.cli import main
from geneattn.errors import InputError
from geneattn.geneformer_perturb import (
    GeneShiftSums,
    geneformer_perturbation_shifts,
    load_gene_shifts,
)
from geneattn.models import load_model
from geneattn.models.bert_weights import BertConfig, BertWeights, save_checkpoint
from geneattn.models.checkpoint import write_manifest
from geneattn.testing import bert_reference as ref
from geneattn.tokenize import TokenizedCells

N_GENES = 40


def _cells(n_cells: int = 5, seed: int = 0, lo: int = 3, hi: int = 21) -> TokenizedCells:
    rng = np.random.default_rng(seed)
    seqs = [rng.permutation(N_GENES)[: rng.integers(lo, hi)] for _ in range(n_cells)]
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    return TokenizedCells(
        tokens=np.concatenate(seqs).astype(np.int32),
        offsets=offsets,
        cell_ids=np.array([f"c{i}" for i in range(n_cells)]),
        vocabulary=np.array([f"ENSG{g:011d}" for g in range(N_GENES)]),
    )


@pytest.fixture(scope="module")
def v1(tmp_path_factory):
    """A V1-style checkpoint (our token ids are its ids), 16 positions."""
    root = tmp_path_factory.mktemp("gfp_v1")
    config = BertConfig(
        vocab_size=N_GENES,
        hidden_size=16,
        num_hidden_layers=3,
        num_attention_heads=4,
        intermediate_size=24,
        max_position_embeddings=16,
        hidden_act="relu",
    )
    save_checkpoint(root / "model", config, BertWeights.random(config, seed=3))
    write_manifest(
        root / "model.json",
        root / "model",
        token_dictionary=None,
        version="V1",
        emb_layer=-1,
        pooling="mean",
        attention_layer=-1,
        attention_heads=None,
    )
    return load_model(root / "model.json")


def _cos(a, b):
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-8))


def _states(stage, ids):
    hidden, _ = ref.forward(ids, stage.model.weights, stage.model.config, attentions=False)
    return hidden[stage.model.n_layers + stage.emb_layer]


@pytest.mark.parametrize("mode", ["delete", "overexpress"])
def test_v1_checkpoint_shifts_match_a_plain_reimplementation(v1, mode):
    cells = _cells(n_cells=6, lo=8, hi=30)
    goal = np.random.default_rng(1).standard_normal(16)
    genes = [0, 5, 7, 11, 30]
    got = geneformer_perturbation_shifts(
        v1, cells, genes, mode, states={"g": goal}, goal="g", n_threads=2
    )
    rows = []
    for c in range(cells.n_cells):
        seq = cells.cell(c).astype(np.int64)[:16]  # the model's input size
        o = _states(v1, seq)
        for t in genes:
            where = np.flatnonzero(seq == t)
            if mode == "delete":
                if not where.size:
                    continue
                pert = np.delete(seq, where[0])
                kept = np.delete(np.arange(len(seq)), where[0])
                orig_seq, front = seq, 0
            else:
                rest = np.delete(seq, where[:1])
                pert = np.concatenate([[t], rest])[:16]
                overflow = len(pert) + (0 if where.size else 1) - 16
                orig_seq = seq[: len(seq) - overflow] if overflow > 0 else seq
                kept = [i for i in range(len(orig_seq)) if not (where.size and i == where[0])]
                front = 1
            p = _states(v1, pert)
            o2 = o if orig_seq is seq else _states(v1, orig_seq)
            cmp_p = p[front:]
            cos = [_cos(cmp_p[j], o2[kept[j]]) if j < len(kept) else 0.0 for j in range(len(cmp_p))]
            shift = _cos(p.mean(0), goal) - _cos(o2.mean(0), goal)
            rows.append((t, c, np.mean(cos), shift))
    want = pd.DataFrame(rows, columns=["token", "cell", "cos_sim", "goal_shift"])
    got = got.sort_values(["cell", "token"]).reset_index(drop=True)
    want = want.sort_values(["cell", "token"]).reset_index(drop=True)
    np.testing.assert_array_equal(got[["token", "cell"]], want[["token", "cell"]])
    np.testing.assert_allclose(got["cos_sim"], want["cos_sim"], atol=2e-5)
    np.testing.assert_allclose(got["cosine_shift"], 1 - want["cos_sim"], atol=2e-5)
    np.testing.assert_allclose(got["goal_shift"], want["goal_shift"], atol=2e-5)
    np.testing.assert_allclose(got["shift_to_g"], want["goal_shift"], atol=2e-5)
    if mode == "overexpress":  # every cell, absent genes inserted (and truncation hit)
        assert len(got) == cells.n_cells * len(genes)
        assert max(len(cells.cell(c)) for c in range(cells.n_cells)) > 16


def test_results_do_not_depend_on_threads_or_call_size(v1, monkeypatch):
    import geneattn.geneformer_perturb as gp

    cells = _cells(seed=4)
    one = geneformer_perturbation_shifts(v1, cells, [1, 2, 3], "delete", n_threads=1)
    monkeypatch.setattr(gp, "TOKENS_PER_CALL", 7)
    two = geneformer_perturbation_shifts(v1, cells, [1, 2, 3], "delete", n_threads=2)
    pd.testing.assert_frame_equal(one, two, atol=1e-6)


def test_gene_level_sums_give_mean_std_and_count(v1):
    cells = _cells(seed=5)
    targets = [2, 9]
    sums = GeneShiftSums.empty(targets, np.arange(N_GENES))
    geneformer_perturbation_shifts(v1, cells, [*targets, 4], "delete", gene_sums=sums)
    values: dict[tuple[int, int], list[float]] = {}
    for c in range(cells.n_cells):
        seq = cells.cell(c).astype(np.int64)[:16]
        o = _states(v1, seq)
        for t in targets:
            where = np.flatnonzero(seq == t)
            if not where.size:
                continue
            rest = np.delete(np.arange(len(seq)), where[0])
            p = _states(v1, seq[rest])
            for j, i in enumerate(rest):
                values.setdefault((t, int(seq[i])), []).append(_cos(p[j], o[i]))
    table = sums.table(cells.vocabulary)
    assert len(table) == len(values)
    for row in table.itertuples():
        t = int(row.perturbed[4:])
        a = int(row.affected[4:])
        v = values[(t, a)]
        assert row.n_detections == len(v)
        assert row.cosine_sim_mean == pytest.approx(np.mean(v), abs=2e-5)
        assert row.cosine_sim_stdev == pytest.approx(np.std(v), abs=2e-4)


def test_gene_shift_sums_save_load_and_merge(tmp_path):
    a = GeneShiftSums.empty([3, 1], [5, 2, 9])
    a.add(0, np.array([2, 9, 7, -1]), np.array([0.5, 0.25, 1.0, 1.0]))
    a.save(tmp_path / "a.npz")
    b = load_gene_shifts(tmp_path / "a.npz")
    np.testing.assert_array_equal(b.universe, [2, 5, 9])
    np.testing.assert_array_equal(b.count, [[1, 0, 1], [0, 0, 0]])
    b.merge(a)
    np.testing.assert_allclose(b.total, [[1.0, 0, 0.5], [0, 0, 0]])
    with pytest.raises(InputError):
        b.merge(GeneShiftSums.empty([3], [2]))
    with pytest.raises(InputError):
        load_gene_shifts(tmp_path / "missing.npz")


def test_study_model_token_states_pool_to_its_embedding():
    from geneattn.models.study import StudyModel

    rng = np.random.default_rng(0)
    d = 8
    model = StudyModel(
        rng.standard_normal((N_GENES, d)), np.eye(d), np.eye(d), np.eye(d), np.eye(d), 2, {}
    )
    cells = _cells(seed=6)
    inputs = model.token_inputs(cells)
    states = model.token_states(inputs.ids, inputs.offsets)
    pooled = np.array(
        [states[inputs.offsets[c] : inputs.offsets[c + 1]].mean(0) for c in range(cells.n_cells)]
    )
    np.testing.assert_allclose(pooled, model.embed(cells), atol=1e-10)
    got = geneformer_perturbation_shifts(model, cells, [0, 1], "overexpress")
    assert len(got) == 2 * cells.n_cells and np.isfinite(got["cos_sim"]).all()


def test_rank_shift_modes_are_refused():
    with pytest.raises(InputError, match="geneformer"):
        geneformer_perturbation_shifts(None, _cells(), [1], "inhibit")


def test_gene_shifts_cli_gathers_shards(tmp_path):
    from geneattn.tokenize import save_tokens

    cells = _cells()
    save_tokens(tmp_path / "tokens.npz", cells)
    (tmp_path / "names.tsv").write_text("symbol\tgene_id\nGENE2\tENSG00000000002\n")
    for k in range(2):
        s = GeneShiftSums.empty([2], np.arange(N_GENES))
        s.add(0, np.array([4, 5]), np.array([0.9, 0.8 + k / 10]))
        s.save(tmp_path / f"s{k}.npz")
    args = ["gene-shifts", str(tmp_path / "s0.npz"), str(tmp_path / "s1.npz")]
    args += ["--tokens", str(tmp_path / "tokens.npz"), "--gene-names", str(tmp_path / "names.tsv")]
    assert main([*args, "--out", str(tmp_path / "g.tsv")]) == 0
    table = pd.read_csv(tmp_path / "g.tsv", sep="\t")
    assert table["perturbed_gene"].tolist() == ["GENE2", "GENE2"]
    assert table["n_detections"].tolist() == [2, 2]
    np.testing.assert_allclose(table["cosine_sim_mean"], [0.85, 0.9])


def test_gene_embeddings_average_each_genes_states_over_cells(v1, tmp_path):
    from geneattn.gene_embeddings import gene_embedding_sums, load_gene_embedding_sums
    from geneattn.tokenize import save_tokens

    cells = _cells(n_cells=6, seed=8)
    sums = gene_embedding_sums(v1, cells, n_threads=2)
    want: dict[int, list[np.ndarray]] = {}
    for c in range(cells.n_cells):
        seq = cells.cell(c).astype(np.int64)[:16]
        for t, state in zip(seq.tolist(), _states(v1, seq), strict=True):
            want.setdefault(t, []).append(state)
    table = sums.table(cells.vocabulary)
    assert len(table) == len(want)
    for row in table.itertuples(index=False):
        t = int(row.gene_id[4:])
        assert row.n == len(want[t])
        np.testing.assert_allclose(np.array(row[2:]), np.mean(want[t], axis=0), atol=2e-5)
    # shards add up: two halves give the whole
    a = gene_embedding_sums(v1, _subset(cells, range(3)))
    b = gene_embedding_sums(v1, _subset(cells, range(3, 6)))
    a.save(tmp_path / "a.npz")
    b.save(tmp_path / "b.npz")
    merged = load_gene_embedding_sums(tmp_path / "a.npz")
    merged.merge(load_gene_embedding_sums(tmp_path / "b.npz"))
    np.testing.assert_array_equal(merged.count, sums.count)
    np.testing.assert_allclose(merged.total, sums.total, atol=1e-5)
    save_tokens(tmp_path / "tokens.npz", cells)
    (tmp_path / "names.tsv").write_text("symbol\tgene_id\nG1\tENSG00000000001\n")
    args = ["gather-gene-embeddings", str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]
    args += ["--tokens", str(tmp_path / "tokens.npz"), "--gene-names", str(tmp_path / "names.tsv")]
    assert main([*args, "--out", str(tmp_path / "genes.tsv")]) == 0
    genes = pd.read_csv(tmp_path / "genes.tsv", sep="\t")
    assert len(genes) == len(want) and "G1" in set(genes["gene"])


def _subset(cells: TokenizedCells, index) -> TokenizedCells:
    from geneattn.tokenize import subset_cells

    return subset_cells(cells, np.array(list(index)))


def test_gene_embeddings_leave_out_cls_and_eos(tmp_path):
    config = BertConfig(
        vocab_size=N_GENES + 3,
        hidden_size=8,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=24,
        hidden_act="relu",
    )
    save_checkpoint(tmp_path / "model", config, BertWeights.random(config, seed=4))
    dictionary = {"<pad>": 0, "<cls>": 1, "<eos>": 2}
    dictionary.update({f"ENSG{g:011d}": g + 3 for g in range(N_GENES)})
    lines = "".join(f"{g}\t{i}\n" for g, i in dictionary.items())
    (tmp_path / "dict.tsv").write_text("gene_id\ttoken\n" + lines)
    write_manifest(
        tmp_path / "model.json",
        tmp_path / "model",
        token_dictionary=tmp_path / "dict.tsv",
        version=None,
        emb_layer=-1,
        pooling="cls",
        attention_layer=-1,
        attention_heads=None,
    )
    v2 = load_model(tmp_path / "model.json")
    from geneattn.gene_embeddings import gene_embedding_sums

    cells = _cells(seed=9)
    sums = gene_embedding_sums(v2, cells)
    lengths = [min(len(cells.cell(c)), 22) for c in range(cells.n_cells)]
    assert sums.count.sum() == sum(lengths)
    # and the cls-pooled Geneformer shifts run on it
    got = geneformer_perturbation_shifts(v2, cells, [0, 1], "delete", states={"s": np.ones(8)})
    assert np.isfinite(got["cos_sim"]).all() and np.isfinite(got["shift_to_s"]).all()


def test_groups_and_anchor_pairs_are_perturbed_together(v1):
    from geneattn import geneformer_shifts as gs

    cells = _cells(n_cells=6, seed=11)
    groups = [[3, 8], [8], [3, 8, 39]]
    got = geneformer_perturbation_shifts(v1, cells, [], "delete", groups=groups)
    pairs = geneformer_perturbation_shifts(v1, cells, [1, 3, 8], "delete", anchor=3)
    for c in range(cells.n_cells):
        seq = cells.cell(c).astype(np.int64)[:16]
        o = _states(v1, seq)
        for i, group in enumerate(groups):
            row = got[(got["cell"] == c) & (got["token"] == i)]
            if not set(group) <= set(seq.tolist()):
                assert row.empty  # delete skips cells without every gene of the group
                continue
            edit = gs.group_edit(seq, group, "delete", max_len=16)
            want = gs.cell_cos_sim(o, _states(v1, edit.perturbed), edit)
            assert row["cos_sim"].item() == pytest.approx(want, abs=2e-5)
        for t in (1, 8):
            row = pairs[(pairs["cell"] == c) & (pairs["token"] == t)]
            if {3, t} <= set(seq.tolist()):
                pos = [int(np.flatnonzero(seq == 3)[0]), int(np.flatnonzero(seq == t)[0])]
                edit = gs.single_edit(seq, pos, "delete")  # Geneformer's combos=1 edit
                want = gs.cell_cos_sim(o, _states(v1, edit.perturbed), edit)
                assert row["cos_sim"].item() == pytest.approx(want, abs=2e-5)
            else:
                assert row.empty
    assert 3 not in set(pairs["token"])
