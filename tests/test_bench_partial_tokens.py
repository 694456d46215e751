"""Reading only some cells of a tokens file (``load_tokens(path, cells=...)``), for shard jobs.

The partial read must give exactly the cells a full read followed by
:func:`geneattn.attention.subset_cells` gives, for any slice or list of positions, on
synthetic ragged files (hypothesis) and on the demo study's real tokens, without reading
the whole file; the file format stays the same bytes.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geneattn.errors import InputError
from geneattn.io.npz import map_npz_arrays
from geneattn.tokenize import TokenizedCells, load_cell_ids, load_tokens, save_tokens, subset_cells


def _cells(lengths: list[int], seed: int = 0, vocab: int = 300) -> TokenizedCells:
    rng = np.random.default_rng(seed)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return TokenizedCells(
        tokens=rng.integers(0, vocab, offsets[-1]).astype(np.int32),
        offsets=offsets,
        cell_ids=np.array([f"cell-{i}-{'x' * (i % 7)}" for i in range(len(lengths))]),
        vocabulary=np.array([f"ENSG{t:011d}" for t in range(vocab)], dtype=object),
    )


def _same(got: TokenizedCells, want: TokenizedCells) -> None:
    assert got.tokens.dtype == np.int32 and got.offsets.dtype == np.int64
    np.testing.assert_array_equal(got.tokens, want.tokens)
    np.testing.assert_array_equal(got.offsets, want.offsets)
    np.testing.assert_array_equal(got.cell_ids.astype(str), want.cell_ids.astype(str))
    np.testing.assert_array_equal(got.vocabulary.astype(str), want.vocabulary.astype(str))
    assert got.tokens.flags.c_contiguous and got.tokens.flags.writeable


@st.composite
def _file_and_selection(draw):
    lengths = draw(st.lists(st.integers(0, 12), min_size=1, max_size=40))
    n = len(lengths)
    if draw(st.booleans()):
        start = draw(st.none() | st.integers(-n - 2, n + 2))
        stop = draw(st.none() | st.integers(-n - 2, n + 2))
        step = draw(st.none() | st.sampled_from([1, 2, 3, -1, -2]))
        return lengths, slice(start, stop, step)
    return lengths, draw(st.lists(st.integers(0, n - 1), max_size=30))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=_file_and_selection(), seed=st.integers(0, 2**16))
def test_partial_equals_full_then_subset(tmp_path, case, seed):
    lengths, selection = case
    if sum(lengths) == 0:
        lengths = [*lengths[:-1], 1]
    path = tmp_path / f"t{seed}.npz"
    save_tokens(path, _cells(lengths, seed))
    full = load_tokens(path)
    index = np.arange(full.n_cells)[selection] if isinstance(selection, slice) else selection
    _same(load_tokens(path, cells=selection), subset_cells(full, np.asarray(index, dtype=int)))
    if not isinstance(selection, slice):
        _same(load_tokens(path, cells=np.asarray(selection, dtype=np.int32)),
              subset_cells(full, np.asarray(index, dtype=int)))  # fmt: skip


def test_format_unchanged_and_byte_deterministic(tmp_path):
    cells = _cells([3, 0, 5, 1] * 50)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    save_tokens(a, cells)
    save_tokens(b, cells)
    assert a.read_bytes() == b.read_bytes()
    with np.load(a, allow_pickle=False) as z:
        assert sorted(z.files) == ["cell_ids", "lengths", "offsets", "tokens", "vocabulary"]


def test_stored_members_are_memory_mapped(tmp_path):
    path = tmp_path / "t.npz"
    save_tokens(path, _cells([4, 2, 7]))
    arrays = map_npz_arrays(path, ("tokens", "offsets", "cell_ids"), "a tokens file")
    assert all(isinstance(arrays[k], np.memmap) for k in arrays)
    assert not arrays["tokens"].flags.writeable


def test_partial_read_does_not_load_the_whole_file(tmp_path, monkeypatch):
    path = tmp_path / "t.npz"
    cells = _cells([5] * 100)
    save_tokens(path, cells)

    def refuse(*args, **kwargs):
        raise AssertionError("np.load reads whole arrays")

    monkeypatch.setattr(np, "load", refuse)
    _same(load_tokens(path, cells=slice(10, 20)), subset_cells(cells, np.arange(10, 20)))
    np.testing.assert_array_equal(load_cell_ids(path), cells.cell_ids)


def test_compressed_files_still_read(tmp_path):
    cells = _cells([3, 1, 4, 1, 5])
    path = tmp_path / "c.npz"
    np.savez_compressed(
        path,
        tokens=cells.tokens,
        offsets=cells.offsets,
        cell_ids=cells.cell_ids.astype(str),
        vocabulary=cells.vocabulary.astype(str),
    )
    _same(load_tokens(path, cells=[4, 0]), subset_cells(cells, np.array([4, 0])))
    _same(load_tokens(path, cells=slice(1, 3)), subset_cells(cells, np.arange(1, 3)))


def test_bad_selections_and_files(tmp_path):
    path = tmp_path / "t.npz"
    save_tokens(path, _cells([2, 2, 2]))
    with pytest.raises(IndexError):
        load_tokens(path, cells=[3])
    with pytest.raises(IndexError):
        load_tokens(path, cells=[-1])
    with pytest.raises(IndexError):
        load_tokens(path, cells=np.array([0.5]))
    with pytest.raises(InputError, match="file not found"):
        load_tokens(tmp_path / "missing.npz", cells=slice(0, 1))
    bad = tmp_path / "bad.npz"
    np.savez(
        bad,
        tokens=np.arange(5, dtype=np.int32),
        offsets=np.array([0, 2, 6], dtype=np.int64),
        cell_ids=np.array(["a", "b"]),
        vocabulary=np.array(["g"]),
    )
    with pytest.raises(InputError, match="inconsistent"):
        load_tokens(bad, cells=slice(0, 1))
    objects = tmp_path / "objects.npz"
    np.savez(
        objects,
        tokens=np.arange(2, dtype=np.int32),
        offsets=np.array([0, 2], dtype=np.int64),
        cell_ids=np.array(["a"], dtype=object),
        vocabulary=np.array(["g"]),
    )
    with pytest.raises(InputError, match="Python objects"):
        load_tokens(objects, cells=[0])
    np.savez(tmp_path / "short.npz", tokens=np.arange(2, dtype=np.int32))
    with pytest.raises(InputError, match="missing offsets, cell_ids, vocabulary"):
        load_tokens(tmp_path / "short.npz", cells=[0])


def test_real_demo_tokens_in_shards(tmp_path, resources_dir):
    """The demo study's real tokens: shards read alone equal the full file's cells."""
    import anndata as ad
    import scipy.sparse as sp

    from geneattn.resources.load import load_gene_medians, load_gene_name_map, load_token_dictionary
    from geneattn.tokenize import tokenize_counts

    adata = ad.read_h5ad(resources_dir / "wu2020_200.h5ad")
    gf = resources_dir / "geneformer_v1"
    x = sp.csr_matrix(adata.X, dtype=np.float64)
    cells, _ = tokenize_counts(
        x,
        adata.var_names.to_numpy(),
        cell_ids=adata.obs_names.to_numpy(),
        n_counts=None,
        token_dictionary=load_token_dictionary(gf / "token_dictionary.tsv"),
        gene_medians=load_gene_medians(gf / "gene_median_dictionary.tsv"),
        name_map=load_gene_name_map(gf / "gene_name_id.tsv"),
    )
    path = tmp_path / "tokens.npz"
    save_tokens(path, cells)
    full = load_tokens(path)
    bounds = np.linspace(0, full.n_cells, 8).astype(int)
    parts = [load_tokens(path, cells=slice(a, b)) for a, b in itertools.pairwise(bounds)]
    np.testing.assert_array_equal(np.concatenate([p.tokens for p in parts]), full.tokens)
    np.testing.assert_array_equal(np.concatenate([p.cell_ids for p in parts]), full.cell_ids)
    tumor = np.flatnonzero(adata.obs["source"].to_numpy() == "Tumor")
    tumor = tumor[np.isin(adata.obs_names.to_numpy()[tumor], full.cell_ids)]
    position = {c: i for i, c in enumerate(full.cell_ids)}
    index = np.array([position[c] for c in adata.obs_names.to_numpy()[tumor]])
    _same(load_tokens(path, cells=index), subset_cells(full, index))
    np.testing.assert_array_equal(load_cell_ids(path), full.cell_ids)


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 60),
    pairs=st.lists(st.tuples(st.integers(0, 60), st.integers(0, 8)), max_size=20),
    kind=st.sampled_from(["<i4", "<i8", "<U7", "<f8"]),
)
def test_read_ranges_from_the_file_equals_indexing(tmp_path, n, pairs, kind):
    from geneattn.io.npz import read_ranges

    rng = np.random.default_rng(n)
    values = rng.integers(0, 10**6, n)
    array = values.astype(str).astype(kind) if kind == "<U7" else values.astype(kind)
    path = tmp_path / f"r{n}{kind[1:]}.npz"
    np.savez(path, a=array)
    mapped = map_npz_arrays(path, ["a"], "a test file")["a"]
    starts = np.array([min(s, n) for s, _ in pairs], dtype=np.int64)
    ends = np.minimum(starts + np.array([k for _, k in pairs], dtype=np.int64), n)
    want = np.concatenate([array[s:e] for s, e in zip(starts, ends, strict=True)] or [array[:0]])
    for source in (mapped, array):
        got = read_ranges(source, starts, ends)
        assert got.dtype == array.dtype and got.flags.writeable
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError):
        read_ranges(mapped, [0], [n + 1])
