"""Parity with Geneformer itself: tokens, embeddings and perturbation shifts, to 1e-5.

The fixtures under ``tests/golden/geneformer`` were written by
``tests/golden/make_geneformer_fixtures.py``, which ran Geneformer's own code (upstream
commit 05fcbeb, PyTorch on the CPU) on 8 real demo cells and a tiny random V1-shaped
checkpoint. Here the checkpoint is rebuilt from its seed (numpy only, sha256 checked), our
Rust encoder computes the hidden states, and :mod:`geneattn.geneformer_shifts` applies
Geneformer's definitions. Nothing here needs torch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from geneattn import geneformer_shifts as gs
from geneattn.models.bert import BertEncoder
from geneattn.models.bert_weights import BertConfig, BertWeights, save_checkpoint

GOLDEN = Path(__file__).resolve().parent / "golden"
FIXTURES = GOLDEN / "geneformer"
TOL = {"rtol": 0.0, "atol": 1e-5}


def _script():
    """The fixture script as a module (its top level needs no torch)."""
    spec = importlib.util.spec_from_file_location(
        "make_geneformer_fixtures", GOLDEN / "make_geneformer_fixtures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _npz(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / name, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def meta() -> dict:
    return json.loads((FIXTURES / "meta.json").read_text())


@pytest.fixture(scope="module")
def model(meta, tmp_path_factory) -> BertEncoder:
    """The fixture checkpoint, rebuilt from its seed and checked against its sha256."""
    config = BertConfig(**meta["checkpoint"])
    weights = BertWeights.random(config, meta["checkpoint_seed"])
    path = save_checkpoint(tmp_path_factory.mktemp("gf_model"), config, weights)
    digest = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    assert digest == meta["checkpoint_sha256"], "the checkpoint generator changed"
    return BertEncoder.load(path, version="V1")


@pytest.fixture(scope="module")
def tokens() -> dict[str, np.ndarray]:
    return _npz("tokens.npz")


def _cell(t: dict[str, np.ndarray], prefix: str, c: int) -> np.ndarray:
    off = t[f"{prefix}_offsets"]
    return t[f"{prefix}_tokens"][off[c] : off[c + 1]].astype(np.int64)


def _states(model: BertEncoder, seqs: list[np.ndarray], layer: int) -> list[np.ndarray]:
    """Hidden states (``hidden_states`` index ``layer``) of each sequence."""
    ids = np.concatenate(seqs).astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(s) for s in seqs])]).astype(np.int64)
    hidden = model.hidden_states(ids, offsets, layers=[layer])[layer]
    return [hidden[offsets[i] : offsets[i + 1]] for i in range(len(seqs))]


# --- tokens --------------------------------------------------------------------------------


def _fixture_counts():
    cells = _npz("cells.npz")
    x = sp.csr_matrix(
        (cells["data"], cells["indices"], cells["indptr"]),
        shape=(len(cells["cell_ids"]), len(cells["gene_ids"])),
    )
    return cells, x


def test_v1_tokens_match_geneformer_tokenizer(resources_dir, tokens):
    from geneattn.resources.load import load_gene_medians, load_token_dictionary
    from geneattn.tokenize import tokenize_counts

    cells, x = _fixture_counts()
    res = resources_dir / "geneformer_v1"
    got, _ = tokenize_counts(
        x,
        cells["gene_ids"],
        cell_ids=cells["cell_ids"],
        n_counts=cells["n_counts"],
        token_dictionary=load_token_dictionary(res / "token_dictionary.tsv"),
        gene_medians=load_gene_medians(res / "gene_median_dictionary.tsv"),
        gene_id="ensembl",
        max_len=2048,
    )
    np.testing.assert_array_equal(got.offsets, tokens["v1_offsets"])
    np.testing.assert_array_equal(got.tokens, tokens["v1_tokens"])
    assert np.diff(tokens["v1_offsets"]).max() == 2048  # the cap is exercised


def test_v2_format_tokens_match_geneformer_tokenizer(resources_dir, tokens, tmp_path):
    """V2 dictionary and V2 medians given as Geneformer pickles; <cls>/<eos>, 4,096 tokens."""
    import pickle

    from geneattn.models.inputs import model_input_ids
    from geneattn.resources.load import load_gene_medians, load_token_dictionary
    from geneattn.tokenize import tokenize_counts

    res = resources_dir / "geneformer_v1"
    v2_tokens, v2_medians = _script().v2_format_dictionaries(
        load_token_dictionary(res / "token_dictionary.tsv"),
        load_gene_medians(res / "gene_median_dictionary.tsv"),
    )
    for name, obj in (("tok.pkl", v2_tokens), ("med.pkl", v2_medians)):
        with open(tmp_path / name, "wb") as fh:
            pickle.dump(obj, fh)
    token_dictionary = load_token_dictionary(tmp_path / "tok.pkl")
    cells, x = _fixture_counts()
    got, _ = tokenize_counts(
        x,
        cells["gene_ids"],
        cell_ids=cells["cell_ids"],
        n_counts=cells["n_counts"],
        token_dictionary=token_dictionary,
        gene_medians=load_gene_medians(tmp_path / "med.pkl"),
        gene_id="ensembl",
        medians="dictionary",
        max_len=4094,
    )
    ids, offsets = model_input_ids(
        got.tokens,
        got.offsets,
        max_len=4096,
        cls_id=token_dictionary["<cls>"],
        eos_id=token_dictionary["<eos>"],
    )
    np.testing.assert_array_equal(offsets, tokens["v2_offsets"])
    np.testing.assert_array_equal(ids, tokens["v2_tokens"])
    # V2 medians rank differently from V1's: the comparison sees which medians were used
    v1 = tokens["v1_tokens"][: tokens["v1_offsets"][1]]
    v2 = tokens["v2_tokens"][1 : tokens["v2_offsets"][1] - 1]
    assert not np.array_equal(v1[: len(v2)], v2[: len(v1)])


def test_custom_attributes_are_carried_as_geneformer_does(tokens):
    cells = _npz("cells.npz")
    np.testing.assert_array_equal(tokens["v1_source"], cells["source"])
    np.testing.assert_array_equal(tokens["v2_source"], cells["source"])


# --- embeddings ----------------------------------------------------------------------------


@pytest.mark.parametrize("emb_layer", [-1, 0])
def test_cell_embeddings_match_emb_extractor(model, tokens, emb_layer):
    want = _npz("embeddings.npz")[f"cell_layer{-emb_layer}"]
    got = model.encode_batch(tokens["v1_tokens"], tokens["v1_offsets"], emb_layer=emb_layer)
    np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("stat", ["exact_mean", "exact_median"])
def test_state_embeddings_match_get_state_embs(model, tokens, meta, stat):
    emb = _npz("embeddings.npz")
    cells = model.encode_batch(tokens["v1_tokens"], tokens["v1_offsets"], emb_layer=-1)
    source = tokens["v1_source"]
    states = meta["states"]
    for state in [states["start_state"], states["goal_state"], *states["alt_states"]]:
        got = gs.cell_embedding_states(cells[source == state], stat)
        np.testing.assert_allclose(got, emb[f"state_{stat}_{state}"], **TOL)


# --- perturbations: every gene of a cell ---------------------------------------------------


def _layer(model: BertEncoder) -> int:
    return model.n_layers - 1  # emb_layer -1: hidden_states index n_layers - 1


@pytest.mark.parametrize("mode", ["delete", "overexpress"])
def test_cell_cos_sims_match_in_silico_perturber(model, tokens, mode):
    rows = _npz("perturb.npz")[f"{mode}_cell"]
    checked = 0
    for c in np.unique(rows[:, 0]).astype(int):
        seq = _cell(tokens, "v1", c)
        mine = rows[rows[:, 0] == c]
        edits = [gs.single_edit(seq, [int(np.flatnonzero(seq == t)[0])], mode) for t in mine[:, 1]]
        states = _states(model, [seq] + [e.perturbed for e in edits], _layer(model))
        got = [gs.cell_cos_sim(states[0], s, e) for s, e in zip(states[1:], edits, strict=True)]
        np.testing.assert_allclose(got, mine[:, 2], **TOL)
        # every perturbable gene of the cell was perturbed (overexpress: all but the first)
        assert len(mine) == len(seq) - (mode == "overexpress")
        checked += len(mine)
    assert checked > 500


@pytest.mark.parametrize("mode", ["delete", "overexpress"])
def test_gene_level_cosines_match_cell_and_gene(model, tokens, mode):
    rows = _npz("perturb.npz")[f"{mode}_gene"]
    for c in np.unique(rows[:, 0]).astype(int):
        seq = _cell(tokens, "v1", c)
        mine = rows[rows[:, 0] == c]
        for t in np.unique(mine[:, 1]).astype(int):
            edit = gs.single_edit(seq, [int(np.flatnonzero(seq == t)[0])], mode)
            o, p = _states(model, [seq, edit.perturbed], _layer(model))
            values = gs.gene_cosines(o, p, edit)
            labels = gs.affected_genes(edit, len(values))
            got = dict(zip(labels.tolist(), values.tolist(), strict=True))
            want = mine[mine[:, 1] == t]
            assert len(want) == np.count_nonzero(labels >= 0)
            np.testing.assert_allclose([got[int(a)] for a in want[:, 2]], want[:, 3], **TOL)


@pytest.mark.parametrize("mode", ["delete", "overexpress"])
def test_goal_state_shifts_match_in_silico_perturber(model, tokens, mode):
    p = _npz("perturb.npz")
    emb = _npz("embeddings.npz")
    states = {
        k.removeprefix("state_exact_mean_"): v
        for k, v in emb.items()
        if k.startswith("state_exact_mean_")
    }
    cell_tok, state = p[f"{mode}_goal_cell"], p[f"{mode}_goal_state"]
    value = p[f"{mode}_goal_value"]
    assert len(value) > 100
    for c in np.unique(cell_tok[:, 0]):
        seq = _cell(tokens, "v1", int(c))
        toks = np.unique(cell_tok[cell_tok[:, 0] == c, 1])
        edits = {t: gs.single_edit(seq, [int(np.flatnonzero(seq == t)[0])], mode) for t in toks}
        hs = _states(model, [seq] + [e.perturbed for e in edits.values()], _layer(model))
        shifts = {t: gs.goal_shifts(hs[0], h, states) for t, h in zip(edits, hs[1:], strict=True)}
        for i in np.flatnonzero(cell_tok[:, 0] == c):
            got = shifts[cell_tok[i, 1]][str(state[i])]
            assert abs(got - value[i]) <= 1e-5, (c, cell_tok[i, 1], state[i])


# --- group perturbations (genes_to_perturb = a list) and combinations ----------------------

GROUPS = {
    "group_delete_a": ("delete", "a"),
    "group_delete_ab": ("delete", "ab"),
    "group_overexpress_c": ("overexpress", "c"),
    "group_overexpress_ac": ("overexpress", "ac"),
}


def _group_tokens(p: dict[str, np.ndarray], which: str) -> list[int]:
    a, b, c = (int(t) for t in p["group_tokens"])
    return [{"a": a, "b": b, "c": c}[k] for k in which]


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_group_perturbations_match_in_silico_perturber(model, tokens, name):
    p = _npz("perturb.npz")
    mode, which = GROUPS[name]
    group = _group_tokens(p, which)
    rows = p[f"{name}_cell"]
    got = []
    for c in range(len(tokens["cell_ids"])):
        seq = _cell(tokens, "v1", c)
        edit = gs.group_edit(seq, group, mode, max_len=model.max_len)
        if edit is None:
            continue
        o, q = _states(model, [edit.original, edit.perturbed], _layer(model))
        got.append((c, gs.cell_cos_sim(o, q, edit)))
    np.testing.assert_array_equal([g[0] for g in got], rows[:, 0])
    np.testing.assert_allclose([g[1] for g in got], rows[:, 1], **TOL)
    if mode == "overexpress":  # the 2,048 cap and Geneformer's n_overflow are exercised
        capped = [gs.group_edit(_cell(tokens, "v1", c), group, mode, max_len=2048) for c in (6, 7)]
        assert any(len(e.original) < 2048 for e in capped)


@pytest.mark.parametrize("name", ["group_delete_a", "group_overexpress_c"])
def test_group_gene_level_cosines_match_cell_and_gene(model, tokens, name):
    p = _npz("perturb.npz")
    mode, which = GROUPS[name]
    group = _group_tokens(p, which)
    rows = p[f"{name}_gene"]
    for c in np.unique(rows[:, 0]).astype(int):
        edit = gs.group_edit(_cell(tokens, "v1", c), group, mode, max_len=model.max_len)
        o, q = _states(model, [edit.original, edit.perturbed], _layer(model))
        values = gs.gene_cosines(o, q, edit)
        labels = gs.affected_genes(edit, len(values), group=group)
        got = dict(zip(labels.tolist(), values.tolist(), strict=True))
        mine = rows[rows[:, 0] == c]
        assert len(mine) == np.count_nonzero(labels >= 0)
        np.testing.assert_allclose([got[int(a)] for a in mine[:, 1]], mine[:, 2], **TOL)


def test_anchor_combinations_match_in_silico_perturber(model, tokens):
    p = _npz("perturb.npz")
    anchor = _group_tokens(p, "a")[0]
    rows = p["combo_delete_cell"]
    for c in np.unique(rows[:, 0]).astype(int):
        seq = _cell(tokens, "v1", c)
        pa = int(np.flatnonzero(seq == anchor)[0])
        mine = rows[rows[:, 0] == c]
        edits = [
            gs.single_edit(seq, [pa, int(np.flatnonzero(seq == t)[0])], "delete")
            for t in mine[:, 1]
        ]
        states = _states(model, [seq] + [e.perturbed for e in edits], _layer(model))
        got = [gs.cell_cos_sim(states[0], s, e) for s, e in zip(states[1:], edits, strict=True)]
        np.testing.assert_allclose(got, mine[:, 2], **TOL)
        assert len(mine) == len(seq) - 1


# --- the perturb stage's Geneformer definition on the same cells ---------------------------


def test_stage_definition_reproduces_geneformer_group_runs(model, meta, tokens, tmp_path):
    """geneformer_perturbation_shifts (what `geneattn perturb` runs) through a checkpoint
    manifest: genes_to_perturb=[gene] cos_sims and goal shifts as Geneformer's."""
    from geneattn.geneformer_perturb import geneformer_perturbation_shifts
    from geneattn.models import load_model
    from geneattn.models.checkpoint import write_manifest
    from geneattn.tokenize import TokenizedCells

    write_manifest(
        tmp_path / "model.json",
        model.path,
        token_dictionary=None,
        version="V1",
        emb_layer=-1,
        pooling="mean",
        attention_layer=-1,
        attention_heads=None,
    )
    stage = load_model(tmp_path / "model.json")
    cells = TokenizedCells(
        tokens=tokens["v1_tokens"],
        offsets=tokens["v1_offsets"],
        cell_ids=tokens["cell_ids"],
        vocabulary=np.array([f"t{i}" for i in range(meta["checkpoint"]["vocab_size"])]),
    )
    p = _npz("perturb.npz")
    emb = _npz("embeddings.npz")
    states = {
        k.removeprefix("state_exact_mean_"): v
        for k, v in emb.items()
        if k.startswith("state_exact_mean_")
    }
    for name in ("group_delete_a", "group_overexpress_c"):
        mode, which = GROUPS[name]
        got = geneformer_perturbation_shifts(
            stage, cells, _group_tokens(p, which), mode, states=states, goal="NAT", n_threads=2
        )
        want = p[f"{name}_cell"]
        np.testing.assert_array_equal(got["cell"], want[:, 0])
        np.testing.assert_allclose(got["cos_sim"], want[:, 1], **TOL)
        goal_cell, goal_state = p[f"{name}_goal_cell"], p[f"{name}_goal_state"]
        goal_value = p[f"{name}_goal_value"]
        assert len(goal_value) > 0
        by_cell = got.set_index("cell")
        for (c, _), s, v in zip(goal_cell, goal_state, goal_value, strict=True):
            assert abs(by_cell.loc[int(c), f"shift_to_{s}"] - v) <= 1e-5


# --- InSilicoPerturberStats tables ---------------------------------------------------------


def _stats(name: str):
    import pandas as pd

    return pd.read_csv(FIXTURES / f"stats_{name}.tsv.gz", sep="\t")


def _goal_frame(p: dict[str, np.ndarray], name: str):
    import pandas as pd

    cell_tok, state, value = (
        p[f"{name}_goal_cell"],
        p[f"{name}_goal_state"],
        p[f"{name}_goal_value"],
    )
    long = pd.DataFrame(
        {"cell": cell_tok[:, 0], "token": cell_tok[:, 1], "state": state, "value": value}
    )
    wide = long.pivot_table(index=["token", "cell"], columns="state", values="value")
    return wide.add_prefix("shift_to_").reset_index()


@pytest.mark.parametrize("mode", ["delete", "overexpress"])
def test_goal_state_shift_table_matches_geneformer(meta, mode):
    from geneattn.geneformer_stats import goal_state_shift

    states = meta["states"]
    got = goal_state_shift(
        _goal_frame(_npz("perturb.npz"), mode),
        goal=states["goal_state"],
        alt_states=states["alt_states"],
    )
    want = _stats(f"goal_state_shift_{mode}")
    assert len(got) == len(want)
    merged = got.merge(want, on="Gene", suffixes=("", "_gf"))
    assert len(merged) == len(want)
    alt = states["alt_states"][0]
    for col in (
        "Shift_to_goal_end",
        "Goal_end_vs_random_pval",
        "Goal_end_FDR",
        f"Shift_to_alt_end_{alt}",
        f"Alt_end_vs_random_pval_{alt}",
        f"Alt_end_FDR_{alt}",
    ):
        np.testing.assert_allclose(merged[col], merged[f"{col}_gf"], rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(merged["N_Detections"], merged["N_Detections_gf"])
    np.testing.assert_array_equal(merged["Sig"], merged["Sig_gf"])


def _cell_frame(rows: np.ndarray, cells: list[int]):
    import pandas as pd

    keep = np.isin(rows[:, 0].astype(int), cells)
    return pd.DataFrame(
        {
            "cell": rows[keep, 0].astype(int),
            "token": rows[keep, 1].astype(int),
            "cos_sim": rows[keep, 2],
        }
    )


def _sources(tokens) -> np.ndarray:
    return np.asarray(tokens["v1_source"]).astype(str)


def test_vs_null_table_matches_geneformer(tokens):
    from geneattn.geneformer_stats import vs_null

    p = _npz("perturb.npz")
    small = sorted(set(p["delete_cell"][:, 0].astype(int)))
    source = _sources(tokens)
    test = _cell_frame(p["delete_cell"], [c for c in small if source[c] == "Tumor"])
    null = _cell_frame(p["delete_cell"], [c for c in small if source[c] == "NAT"])
    got = vs_null(test, null)
    want = _stats("vs_null_delete")
    merged = got.merge(want, on="Gene", suffixes=("", "_gf"))
    assert len(merged) == len(want) == len(got)
    for col in ("Test_avg_shift", "Null_avg_shift", "Test_vs_null_pval", "Test_vs_null_FDR"):
        np.testing.assert_allclose(
            merged[col], merged[f"{col}_gf"], rtol=1e-9, atol=1e-12, equal_nan=True
        )
    np.testing.assert_array_equal(merged["N_Detections_test"], merged["N_Detections_test_gf"])


def test_mixture_model_table_matches_geneformer():
    from geneattn.geneformer_stats import mixture_model

    p = _npz("perturb.npz")
    small = sorted(set(p["delete_cell"][:, 0].astype(int)))
    frame = _cell_frame(p["delete_cell"], small)
    want = _stats("mixture_model_delete")
    # Geneformer's scikit-learn fit put the higher-mean component first here, so its rule
    # calls impact only genes below the lower mean (see geneformer_stats.mixture_model)
    got = mixture_model(frame, impact="higher_mean")
    merged = got.merge(want, on="Gene", suffixes=("", "_gf"))
    assert len(merged) == len(want) == len(got)
    np.testing.assert_allclose(merged["Test_avg_shift"], merged["Test_avg_shift_gf"], rtol=1e-9)
    np.testing.assert_array_equal(merged["N_Detections"], merged["N_Detections_gf"])
    # the fits agree to ~2e-4 (scikit-learn stops EM at a 1e-3 change of the likelihood from
    # its own k-means start): labels may differ only for means that close to the border
    differ = merged["Impact_component"] != merged["Impact_component_gf"]
    low = merged.loc[merged["Impact_component_gf"] == 1, "Test_avg_shift"].max()
    assert (np.abs(merged.loc[differ, "Test_avg_shift"] - low) < 5e-4).all()
    assert differ.sum() <= 3
    # with the impact component at the lower mean, as Geneformer intends, more genes count
    ours = mixture_model(frame)
    assert ours["Impact_component"].sum() >= want["Impact_component"].sum()


def test_aggregate_gene_shifts_table_matches_geneformer():
    from geneattn.geneformer_perturb import GeneShiftSums

    p = _npz("perturb.npz")
    small = sorted(set(p["delete_cell"][:, 0].astype(int)))
    rows = p["group_delete_a_gene"]
    rows = rows[np.isin(rows[:, 0].astype(int), small)]
    a = _group_tokens(p, "a")[0]
    sums = GeneShiftSums.empty([a], rows[:, 1].astype(np.int64))
    for c in small:
        mine = rows[rows[:, 0] == c]
        sums.add(0, mine[:, 1].astype(np.int64), mine[:, 2])
    vocab = np.arange(int(rows[:, 1].max()) + 1).astype(str)
    got = sums.table(vocab)
    want = _stats("aggregate_gene_shifts_group_delete_a")
    want = want[want["Affected"] != "cell_emb"].astype({"Affected": np.int64})
    got = got.assign(Affected=got["affected"].astype(np.int64))
    merged = got.merge(want, on="Affected")
    assert len(merged) == len(want) == len(got)
    np.testing.assert_allclose(merged["cosine_sim_mean"], merged["Cosine_sim_mean"], atol=1e-12)
    np.testing.assert_allclose(merged["cosine_sim_stdev"], merged["Cosine_sim_stdev"], atol=1e-9)
    np.testing.assert_array_equal(merged["n_detections"], merged["N_Detections"])


def test_group_stats_tables_match_geneformer(meta):
    """aggregate_data (per-cell cos_sims of a group) and goal_state_shift of a group: the
    raw values our definitions reproduce above, summarised as Geneformer does."""
    p = _npz("perturb.npz")
    cells = np.sort(_stats("aggregate_data_group_delete_a")["Cosine_sim"].to_numpy())
    np.testing.assert_allclose(cells, np.sort(p["group_delete_a_cell"][:, 1]), atol=1e-12)
    want = _stats("goal_state_shift_group_delete_a")
    state, value = p["group_delete_a_goal_state"], p["group_delete_a_goal_value"]
    goal, alt = meta["states"]["goal_state"], meta["states"]["alt_states"][0]
    assert want["Shift_to_goal_end"].item() == pytest.approx(value[state == goal].mean(), abs=1e-12)
    assert want[f"Shift_to_alt_end_{alt}"].item() == pytest.approx(
        value[state == alt].mean(), abs=1e-12
    )


def test_gene_embeddings_match_emb_extractor_gene_mode(
    model, meta, tokens, resources_dir, tmp_path
):
    from geneattn.gene_embeddings import gene_embedding_sums
    from geneattn.models import load_model
    from geneattn.models.checkpoint import write_manifest
    from geneattn.resources.load import load_token_dictionary
    from geneattn.tokenize import TokenizedCells, vocabulary_array

    want = _npz("gene_embeddings.npz")
    write_manifest(
        tmp_path / "model.json",
        model.path,
        token_dictionary=None,
        version="V1",
        emb_layer=-1,
        pooling="mean",
        attention_layer=-1,
        attention_heads=None,
    )
    vocab = vocabulary_array(
        load_token_dictionary(resources_dir / "geneformer_v1" / "token_dictionary.tsv")
    )
    cells = TokenizedCells(
        tokens=tokens["v1_tokens"],
        offsets=tokens["v1_offsets"],
        cell_ids=tokens["cell_ids"],
        vocabulary=vocab,
    )
    table = gene_embedding_sums(load_model(tmp_path / "model.json"), cells).table(vocab)
    assert len(table) == int(want["n_genes"])
    got = table.set_index("gene_id").loc[want["gene_ids"]].drop(columns="n").to_numpy()
    np.testing.assert_allclose(got, want["embeddings"], **TOL)
