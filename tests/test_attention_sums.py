"""Attention-sums file format: round trip, gathering shards, and errors that name the file."""

from __future__ import annotations

import dataclasses
import zipfile

import numpy as np
import pytest

from geneattn.attention_sums import (
    ARRAY_NAMES,
    AttentionSums,
    check_attention_sums,
    gather_attention_sums,
    load_attention_sums,
    save_attention_sums,
)
from geneattn.cli import main
from geneattn.errors import InputError


def simulate_cells(n_cells: int, n_genes: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per cell: the present genes and a row-stochastic attention matrix over them."""
    rng = np.random.default_rng(seed)
    cells = []
    for _ in range(n_cells):
        idx = np.flatnonzero(rng.random(n_genes) < 0.7)
        logits = rng.normal(size=(len(idx), len(idx)))
        a = np.exp(logits)
        cells.append((idx, a / a.sum(axis=1, keepdims=True)))
    return cells


def aggregate(cells, n_genes: int, condition: str = "Tumor") -> AttentionSums:
    """Plain per-cell loop implementing the format's definitions."""
    sums = np.zeros((n_genes, n_genes))
    counts = np.zeros((n_genes, n_genes), dtype=np.int64)
    incoming = np.zeros(n_genes)
    gene_cells = np.zeros(n_genes, dtype=np.int64)
    for idx, a in cells:
        for r, i in enumerate(idx):
            gene_cells[i] += 1
            incoming[i] += a[:, r].sum()
            for c, j in enumerate(idx):
                sums[i, j] += a[r, c]
                counts[i, j] += 1
    return AttentionSums(
        gene_ids=np.array([f"ENSG{i:011d}" for i in range(n_genes)]),
        gene_symbols=np.array(["TP53", "", "CD3E", "GZMB", "IL7R", "CCR7"][:n_genes]),
        sums=sums,
        counts=counts,
        incoming=incoming,
        gene_cells=gene_cells,
        n_cells=len(cells),
        condition=condition,
    )


@pytest.fixture
def cells():
    return simulate_cells(30, 6, seed=1)


@pytest.fixture
def sums(cells):
    return aggregate(cells, 6)


def _assert_same(a: AttentionSums, b: AttentionSums) -> None:
    for f in dataclasses.fields(AttentionSums):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) and x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=1e-12, atol=1e-12)
        else:
            np.testing.assert_array_equal(x, y)


def test_round_trip_keeps_arrays_and_dtypes(tmp_path, sums):
    path = tmp_path / "Tumor.npz"
    save_attention_sums(path, sums)
    back = load_attention_sums(path)
    _assert_same(back, sums)
    assert back.sums.dtype == np.float64 and back.counts.dtype == np.int64
    assert back.gene_cells.dtype == np.int64 and isinstance(back.n_cells, int)
    assert back.condition == "Tumor" and back.gene_symbols[1] == ""
    with np.load(path) as z:
        contract = "gene_ids gene_symbols sums counts incoming gene_cells n_cells condition"
        assert sorted(z.files) == sorted(contract.split()) == sorted(ARRAY_NAMES)
        assert z["n_cells"].dtype == np.int64 and z["condition"].shape == ()
    with zipfile.ZipFile(path) as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_STORED}


def test_save_is_byte_deterministic(tmp_path, sums):
    save_attention_sums(tmp_path / "a.npz", sums)
    save_attention_sums(tmp_path / "b.npz", sums)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_gather_equals_sums_over_all_cells(tmp_path, cells):
    whole = aggregate(cells, 6)
    paths = []
    for k, part in enumerate([cells[:7], cells[7:20], cells[20:]]):
        paths.append(tmp_path / f"shard{k}.npz")
        save_attention_sums(paths[-1], aggregate(part, 6))
    gathered = gather_attention_sums(paths)
    _assert_same(gathered, whole)
    assert gathered.n_cells == 30


def test_gather_rejects_other_gene_order_naming_the_shard(tmp_path, cells, sums):
    save_attention_sums(tmp_path / "s0.npz", sums)
    order = np.array([1, 0, 2, 3, 4, 5])
    swapped = dataclasses.replace(
        sums,
        gene_ids=sums.gene_ids[order],
        gene_symbols=sums.gene_symbols[order],
        sums=sums.sums[np.ix_(order, order)],
        counts=sums.counts[np.ix_(order, order)],
        incoming=sums.incoming[order],
        gene_cells=sums.gene_cells[order],
    )
    save_attention_sums(tmp_path / "s1.npz", swapped)
    with pytest.raises(InputError, match="gene order differs") as err:
        gather_attention_sums([tmp_path / "s0.npz", tmp_path / "s1.npz"])
    assert err.value.path == tmp_path / "s1.npz"


def test_gather_rejects_other_condition(tmp_path, sums):
    save_attention_sums(tmp_path / "s0.npz", sums)
    save_attention_sums(tmp_path / "s1.npz", dataclasses.replace(sums, condition="NAT"))
    with pytest.raises(InputError, match="condition 'NAT' differs") as err:
        gather_attention_sums([tmp_path / "s0.npz", tmp_path / "s1.npz"])
    assert "s1.npz" in str(err.value)


def test_gather_needs_a_shard():
    with pytest.raises(InputError, match="no attention shard"):
        gather_attention_sums([])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: {"sums": np.where(np.eye(6, dtype=bool), np.nan, s.sums)}, "NaN"),
        (lambda s: {"sums": -s.sums}, "negative"),
        (lambda s: {"sums": s.sums + s.counts}, "exceeds counts"),
        (lambda s: {"counts": np.triu(s.counts)}, "diagonal|symmetric|exceeds"),
        (lambda s: {"counts": s.counts.astype(np.float64)}, "dtype"),
        (lambda s: {"gene_cells": s.gene_cells + 1}, "diagonal of counts"),
        (lambda s: {"gene_ids": np.array(["A", "A", "B", "C", "D", "E"])}, "duplicated gene IDs"),
        (lambda s: {"gene_ids": np.array(["A", "", "B", "C", "D", "E"])}, "empty gene ID"),
        (lambda s: {"incoming": s.incoming[:5]}, r"shape \(5,\)"),
        (lambda s: {"n_cells": 2}, "n_cells"),
        (lambda s: {"condition": ""}, "condition"),
    ],
)
def test_bad_content_is_refused_with_the_file_named(tmp_path, sums, change, message):
    bad = dataclasses.replace(sums, **change(sums))
    with pytest.raises(InputError, match=message) as err:
        check_attention_sums(bad, tmp_path / "bad.npz")
    assert str(err.value).startswith(str(tmp_path / "bad.npz"))
    # save refuses it too and leaves nothing behind
    with pytest.raises(InputError):
        save_attention_sums(tmp_path / "bad.npz", bad)
    assert list(tmp_path.iterdir()) == []


def test_load_errors_name_the_file(tmp_path, sums):
    with pytest.raises(InputError, match="file not found") as err:
        load_attention_sums(tmp_path / "missing.npz")
    assert err.value.path == tmp_path / "missing.npz"

    text = tmp_path / "text.npz"
    text.write_text("not a zip\n")
    with pytest.raises(InputError, match=r"cannot read as \.npz") as err:
        load_attention_sums(text)
    assert err.value.path == text

    partial = tmp_path / "partial.npz"
    np.savez(partial, gene_ids=sums.gene_ids, sums=sums.sums)
    with pytest.raises(InputError, match="missing gene_symbols, counts") as err:
        load_attention_sums(partial)
    assert err.value.path == partial

    bad = tmp_path / "bad.npz"
    arrays = {f.name: getattr(sums, f.name) for f in dataclasses.fields(AttentionSums)}
    arrays["counts"] = arrays["counts"].T.copy()
    arrays["counts"][0, 1] += 1
    np.savez(bad, **{k: np.asarray(v) for k, v in arrays.items()})
    with pytest.raises(InputError) as err:
        load_attention_sums(bad)
    assert err.value.path == bad


def test_cli_gather(tmp_path, cells, capsys):
    shards = []
    for k, part in enumerate([cells[:10], cells[10:]]):
        shards.append(str(tmp_path / f"shard{k}.npz"))
        save_attention_sums(shards[-1], aggregate(part, 6))
    out = tmp_path / "attention" / "Tumor.npz"
    assert main(["gather-attention", *shards, "--out", str(out)]) == 0
    _assert_same(load_attention_sums(out), aggregate(cells, 6))

    save_attention_sums(tmp_path / "other.npz", aggregate(cells[:3], 6, condition="NAT"))
    out2 = tmp_path / "attention" / "bad.npz"
    other = str(tmp_path / "other.npz")
    assert main(["gather-attention", shards[0], other, "--out", str(out2)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "other.npz" in err[0] and "condition" in err[0]
    assert not out2.exists()
