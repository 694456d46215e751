"""Pretrained-checkpoint encoder: golden outputs of PyTorch, the numpy reference, inputs, errors.

The golden fixture (``tests/golden``, written by ``make_bert_fixture.py`` with torch and
transformers) holds a tiny random ``BertForMaskedLM`` and the Hugging Face outputs of three
sequences run as one padded batch; nothing here needs torch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geneattn import _kernels
from geneattn.errors import InputError
from geneattn.models.bert import BertEncoder
from geneattn.models.bert_weights import BertConfig, BertWeights, load_weights
from geneattn.models.inputs import model_input_ids
from geneattn.testing import bert_reference as ref

GOLDEN = Path(__file__).resolve().parent / "golden"
TINY = GOLDEN / "tiny_bert"
TOL = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(GOLDEN / "tiny_bert.npz") as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def tiny() -> BertEncoder:
    return BertEncoder.load(TINY, version="V1")


def _batch(golden: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    ids = [golden[f"ids_{i}"] for i in range(3)]
    offsets = np.concatenate([[0], np.cumsum([x.size for x in ids])]).astype(np.int64)
    return np.concatenate(ids), offsets


def _with_config(tmp_path: Path, **changes: object) -> Path:
    """A copy of the tiny checkpoint with config fields changed (None removes one)."""
    dest = tmp_path / "model"
    shutil.copytree(TINY, dest)
    config = json.loads((dest / "config.json").read_text())
    for k, v in changes.items():
        if v is None:
            config.pop(k, None)
        else:
            config[k] = v
    (dest / "config.json").write_text(json.dumps(config))
    return dest


# --- golden: PyTorch's padded batch ----------------------------------------------------


def test_hidden_states_of_every_layer_match_pytorch(tiny, golden):
    ids, offsets = _batch(golden)
    hidden = tiny.hidden_states(ids, offsets, layers=(0, 1, 2))
    for k in range(3):
        for i in range(3):
            got = hidden[k][offsets[i] : offsets[i + 1]]
            np.testing.assert_allclose(got, golden[f"relu_hidden_{k}_{i}"], **TOL)


def test_attention_matches_pytorch_per_head_and_averaged(tiny, golden):
    ids, offsets = _batch(golden)
    per_head = tiny.attention(ids, offsets, layers=(0, 1), per_head=True)
    averaged = tiny.attention(ids, offsets, layers=(0, -1))
    averaged[1] = averaged.pop(-1)  # keys are the layers as given
    for layer in range(2):
        for i in range(2):
            want = golden[f"relu_attention_{layer}_{i}"]
            np.testing.assert_allclose(per_head[layer][i], want, **TOL)
            np.testing.assert_allclose(averaged[layer][i], want.mean(axis=0), **TOL)
        want = golden[f"relu_attention_mean_{layer}_2"]
        np.testing.assert_allclose(averaged[layer][2], want, **TOL)
        np.testing.assert_allclose(per_head[layer][2].mean(axis=0), want, **TOL)


def test_mean_pooled_embeddings_match_pytorch(tiny, golden):
    ids, offsets = _batch(golden)
    np.testing.assert_allclose(tiny.encode_batch(ids, offsets), golden["relu_pooled_1"], **TOL)
    last = tiny.encode_batch(ids, offsets, emb_layer=0)
    np.testing.assert_allclose(last, golden["relu_pooled_2"], **TOL)
    assert last.dtype == np.float32 and last.shape == (3, 32)


def test_gelu_checkpoint_matches_pytorch(tmp_path, golden):
    model = BertEncoder.load(_with_config(tmp_path, hidden_act="gelu"), version="V1")
    ids, offsets = _batch(golden)
    hidden = model.hidden_states(ids, offsets, layers=(2,))[2]
    for i in range(3):
        np.testing.assert_allclose(
            hidden[offsets[i] : offsets[i + 1]], golden[f"gelu_hidden_2_{i}"], **TOL
        )
    att = model.attention(ids, offsets, layers=(1,))[1]
    for i in range(2):
        np.testing.assert_allclose(att[i], golden[f"gelu_attention_mean_1_{i}"], **TOL)
    pooled = model.encode_batch(ids, offsets, emb_layer=0)
    np.testing.assert_allclose(pooled, golden["gelu_pooled_2"], **TOL)


def test_numpy_reference_matches_pytorch(tiny, golden):
    for i in range(3):
        hidden, att = ref.forward(golden[f"ids_{i}"], tiny.weights, tiny.config)
        for k in range(3):
            np.testing.assert_allclose(hidden[k], golden[f"relu_hidden_{k}_{i}"], **TOL)
        for layer in range(2):
            want = golden.get(f"relu_attention_{layer}_{i}")
            if want is None:
                want = golden[f"relu_attention_mean_{layer}_{i}"]
                np.testing.assert_allclose(att[layer].mean(axis=0), want, **TOL)
            else:
                np.testing.assert_allclose(att[layer], want, **TOL)


def test_names_without_the_bert_prefix_load_the_same_weights(tmp_path, tiny):
    from safetensors.numpy import load_file, save_file

    dest = tmp_path / "bare"
    dest.mkdir()
    shutil.copy(TINY / "config.json", dest)
    tensors = load_file(str(TINY / "model.safetensors"))
    bare = {k.removeprefix("bert."): v for k, v in tensors.items() if k.startswith("bert.")}
    save_file(bare, str(dest / "model.safetensors"))
    other = load_weights(dest, tiny.config)
    for a, b in zip(tiny.weights.kernel_args()[1][1], other.kernel_args()[1][1], strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(tiny.weights.word, other.word)


# --- the Rust encoder against the numpy reference ----------------------------------------

ACTS = ("relu", "gelu", "gelu_new", "silu")


def _config(layers: int, heads: int, dh: int, inter: int, act: str, vocab: int = 30) -> BertConfig:
    return BertConfig(
        vocab_size=vocab,
        hidden_size=heads * dh,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        max_position_embeddings=40,
        hidden_act=act,
        layer_norm_eps=1e-12,
    )


def _cells(rng: np.random.Generator, lengths: list[int], vocab: int):
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return rng.integers(0, vocab, size=int(offsets[-1])).astype(np.int64), offsets


@settings(max_examples=40, deadline=None)
@given(
    layers=st.integers(1, 3),
    heads=st.integers(1, 4),
    dh=st.integers(1, 8),
    inter=st.integers(1, 16),
    act=st.sampled_from(ACTS),
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=4),
    seed=st.integers(0, 2**32 - 1),
)
def test_encoder_matches_numpy_reference(layers, heads, dh, inter, act, lengths, seed):
    config = _config(layers, heads, dh, inter, act)
    model = BertEncoder(config, BertWeights.random(config, seed), version="V1")
    rng = np.random.default_rng(seed)
    ids, offsets = _cells(rng, lengths, config.vocab_size)
    out = model.forward(
        ids,
        offsets,
        hidden_layers=list(range(layers + 1)),
        pool_layer=layers,
        attention_layers=list(range(layers)),
        per_head=True,
        n_threads=2,
    )
    for c, n in enumerate(lengths):
        hidden, att = ref.forward(ids[offsets[c] : offsets[c + 1]], model.weights, config)
        for k in range(layers + 1):
            got = out["hidden"][k][offsets[c] : offsets[c + 1]]
            np.testing.assert_allclose(got, hidden[k], **TOL)
        a0, a1 = out["attention_offsets"][c : c + 2]
        for layer in range(layers):
            got = out["attention"][layer][a0:a1].reshape(heads, n, n)
            np.testing.assert_allclose(got, att[layer], **TOL)
        np.testing.assert_allclose(out["pooled"][c], ref.mean_pool(hidden[layers]), **TOL)


def test_ragged_batch_equals_cells_one_by_one_and_threads_change_nothing():
    config = _config(2, 4, 8, 48, "gelu", vocab=50)
    config = BertConfig(**{**config.__dict__, "max_position_embeddings": 400})
    model = BertEncoder(config, BertWeights.random(config, 3), version="V1")
    rng = np.random.default_rng(0)
    lengths = [300, 0, 7, 260, 1, 64]
    ids, offsets = _cells(rng, lengths, config.vocab_size)

    def run(ids, offsets, threads):
        return model.forward(
            ids,
            offsets,
            hidden_layers=[2, 0],
            pool_layer=1,
            attention_layers=[1],
            n_threads=threads,
        )

    batch = run(ids, offsets, 1)
    for threads in (2, 3):
        other = run(ids, offsets, threads)
        mine, theirs = batch["hidden"] + batch["attention"], other["hidden"] + other["attention"]
        for a, b in zip(mine, theirs, strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(batch["pooled"], other["pooled"])
    for c in range(len(lengths)):
        lo, hi = offsets[c], offsets[c + 1]
        alone = run(ids[lo:hi], np.array([0, hi - lo]), 2)
        np.testing.assert_array_equal(alone["hidden"][0], batch["hidden"][0][lo:hi])
        np.testing.assert_array_equal(alone["pooled"][0], batch["pooled"][c])
        a0, a1 = batch["attention_offsets"][c : c + 2]
        np.testing.assert_array_equal(alone["attention"][0], batch["attention"][0][a0:a1])


def test_iter_attention_and_head_selection(tiny, golden):
    ids, offsets = _batch(golden)
    full = tiny.attention(ids, offsets, layers=(1,), per_head=True)[1]
    chosen = tiny.attention(ids, offsets, layers=(1,), heads=(0, -1))[1]
    streamed = list(tiny.iter_attention(ids, offsets, layer=1, heads=(0, 3), cells_per_call=2))
    assert [c for c, _ in streamed] == [0, 1, 2]
    for c in range(3):
        want = full[c][[0, 3]].mean(axis=0)
        np.testing.assert_allclose(chosen[c], want, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(streamed[c][1], chosen[c])


# --- model inputs, V1 and V2 ---------------------------------------------------------------


def test_model_input_ids_truncate_map_and_frame():
    tokens = np.array([5, 6, 7, 8, 9, 6, 5], dtype=np.int32)
    offsets = np.array([0, 5, 5, 7])
    ids, off = model_input_ids(tokens, offsets, max_len=3)
    assert ids.tolist() == [5, 6, 7, 6, 5] and off.tolist() == [0, 3, 3, 5]
    remap = np.full(10, -1)
    remap[[5, 7, 8, 9]] = [50, 70, 80, 90]  # gene 6 unknown to the model
    ids, off = model_input_ids(tokens, offsets, max_len=4, cls_id=2, eos_id=3, remap=remap)
    assert ids.tolist() == [2, 50, 70, 3, 2, 3, 2, 50, 3]
    assert off.tolist() == [0, 4, 6, 9]
    assert ids.dtype == np.int32


def _v2() -> BertEncoder:
    """The tiny checkpoint read as a V2 model (a dictionary with <cls> and <eos>)."""
    vocab = {"<pad>": 0, "<mask>": 1, "<cls>": 2, "<eos>": 3}
    vocab |= {f"ENSG{i:011d}": i for i in range(4, 100)}
    return BertEncoder.load(TINY, token_dictionary=vocab)


def test_v2_inputs_pooling_and_cls():
    model = _v2()
    assert model.version == "V2" and (model.cls_id, model.eos_id) == (2, 3)
    # our token t is gene ENSG..(t + 40) (the model's id t + 40); 20 .. 24 are unknown to it
    vocabulary = np.array([f"ENSG{i + 40:011d}" for i in range(20)] + ["NOT_IN_V2"] * 5)
    tokens = np.array([1, 2, 3, 20, 4, 5], dtype=np.int32)
    ids, offsets = model.input_ids(tokens, np.array([0, 4, 6]), vocabulary)
    assert ids.tolist() == [2, 41, 42, 43, 3, 2, 44, 45, 3]
    mean = model.encode_batch(ids, offsets, emb_layer=0)
    cls = model.encode_batch(ids, offsets, emb_layer=0, pooling="cls")
    for c in range(2):
        hidden, _ = ref.forward(ids[offsets[c] : offsets[c + 1]], model.weights, model.config)
        np.testing.assert_allclose(mean[c], ref.mean_pool(hidden[2], 1, 1), **TOL)
        np.testing.assert_allclose(cls[c], hidden[2][0], **TOL)
    long = np.arange(4, 100, dtype=np.int32)
    ids, offsets = model.input_ids(long, np.array([0, long.size]))
    assert ids.size == 64 and (ids[0], ids[-1]) == (2, 3)
    assert ids[1:-1].tolist() == list(range(4, 66))
    with pytest.raises(InputError, match="not framed by <cls>"):
        model.encode_batch(np.array([5, 6, 3]), np.array([0, 3]))
    none = model.encode_batch(np.array([], dtype=np.int32), np.array([0]))
    assert none.shape == (0, 32)


def test_v1_inputs_and_empty_cells(tiny):
    ids, offsets = tiny.input_ids(np.arange(1, 90), np.array([0, 0, 89]))
    assert np.diff(offsets).tolist() == [0, 64]
    emb = tiny.encode_batch(ids, offsets)
    assert (emb[0] == 0).all() and np.isfinite(emb).all()
    with pytest.raises(InputError, match="no <cls> token"):
        tiny.encode_batch(ids, offsets, pooling="cls")


# --- bad input ----------------------------------------------------------------------------


def test_bad_checkpoints_are_refused_naming_the_file(tmp_path):
    with pytest.raises(InputError, match=r"no config\.json"):
        BertEncoder.load(tmp_path)
    d = _with_config(tmp_path, hidden_act="tanh")
    with pytest.raises(InputError, match="hidden_act 'tanh' is not supported"):
        BertEncoder.load(d, version="V1")
    shutil.rmtree(d)
    d = _with_config(tmp_path, hidden_size=48)
    shape = r"model.safetensors: tensor '.*' has shape \(2, 32\), config.json implies \(2, 48\)"
    with pytest.raises(InputError, match=shape):
        BertEncoder.load(d, version="V1")
    shutil.rmtree(d)
    d = _with_config(tmp_path, num_hidden_layers=3)
    with pytest.raises(InputError, match=r"missing tensor 'encoder\.layer\.2\.attention"):
        BertEncoder.load(d, version="V1")
    shutil.rmtree(d)
    d = _with_config(tmp_path, num_hidden_layers=1)
    with pytest.raises(InputError, match="more layers than num_hidden_layers"):
        BertEncoder.load(d, version="V1")
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"found pytorch_model\.bin: convert it"):
        BertEncoder.load(d, version="V1")
    shutil.rmtree(d)
    d = _with_config(tmp_path, num_attention_heads=5)
    with pytest.raises(InputError, match="not a multiple of num_attention_heads"):
        BertEncoder.load(d, version="V1")
    shutil.rmtree(d)
    d = _with_config(tmp_path, vocab_size=None)
    with pytest.raises(InputError, match=f"{d / 'config.json'}: config has no vocab_size"):
        BertEncoder.load(d, version="V1")
    shutil.rmtree(d)
    d = _with_config(tmp_path)
    (d / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError, match="cannot read the weights"):
        BertEncoder.load(d, version="V1")
    with pytest.raises(InputError, match="cannot tell a Geneformer V1 from a V2"):
        BertEncoder.load(TINY)
    with pytest.raises(InputError, match="needs its token dictionary"):
        BertEncoder.load(TINY, version="V2")


def test_bad_calls_get_clear_errors(tiny, golden):
    ids, offsets = _batch(golden)
    with pytest.raises(InputError, match="at most 64"):
        tiny.encode_batch(np.arange(65) % 100, np.array([0, 65]))
    with pytest.raises(ValueError, match="token 100 is outside"):
        tiny.encode_batch(np.array([1, 100]), np.array([0, 2]))
    with pytest.raises(InputError, match="offsets must rise"):
        tiny.encode_batch(ids, offsets[::-1])
    with pytest.raises(InputError, match="emb_layer"):
        tiny.encode_batch(ids, offsets, emb_layer=1)
    with pytest.raises(InputError, match="attention layer 2 is out of range"):
        tiny.attention(ids, offsets, layers=(2,))
    with pytest.raises(InputError, match="head 4 is out of range"):
        tiny.attention(ids, offsets, heads=(4,))
    emb, layers = tiny.weights.kernel_args()
    args = (ids, offsets, emb, layers, 4, "relu", 1e-12)
    with pytest.raises(TypeError, match="word_embeddings must be a numpy array of dtype float32"):
        _kernels.bert_forward(ids, offsets, [emb[0].astype(np.float64), *emb[1:]], *args[3:])
    with pytest.raises(ValueError, match="layers\\[1\\] intermediate weight must be C-contiguous"):
        bad = [list(layers[0]), list(layers[1])]
        bad[1][6] = np.asfortranarray(bad[1][6])
        _kernels.bert_forward(ids, offsets, emb, bad, 4, "relu", 1e-12)
    with pytest.raises(ValueError, match="must hold 12 arrays"):
        _kernels.bert_forward(ids, offsets, emb, [layers[0][:5]], 4, "relu", 1e-12)
    with pytest.raises(ValueError, match="unsupported hidden_act"):
        _kernels.bert_forward(*args[:5], "elu", 1e-12)
    with pytest.raises(ValueError, match="layer 0 query/key/value weight must be 96 x 32"):
        short = [[layers[0][0][:90], *layers[0][1:]], layers[1]]
        _kernels.bert_forward(ids, offsets, emb, short, 4, "relu", 1e-12)
    with pytest.raises(ValueError, match="n_threads"):
        _kernels.bert_forward(*args, hidden_layers=[0], n_threads=0)
    with pytest.raises(TypeError, match="tokens must be a 1-D numpy array of dtype int32 or int64"):
        _kernels.bert_forward(ids.astype(np.float32), *args[1:])


# --- fused attention -> gene-pair aggregation ----------------------------------------------


def _reference_sums(
    attention: list[np.ndarray], ids: np.ndarray, offsets: np.ndarray, universe: np.ndarray, g: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell ``(n, n)`` attention added into gene x gene sums by the definition."""
    sums, incoming = np.zeros((g, g)), np.zeros(g)
    for c, a in enumerate(attention):
        genes = universe[ids[offsets[c] : offsets[c + 1]]]
        ref.add_attention(sums, incoming, np.asarray(a, dtype=np.float64), genes)
    return sums, incoming


def _reference_modules(
    attention: list[np.ndarray],
    ids: np.ndarray,
    offsets: np.ndarray,
    universe: np.ndarray,
    modules: np.ndarray,
    n_modules: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Per cell and module: attention between distinct module genes, ordered pairs of them."""
    sums = np.zeros((len(attention), n_modules))
    pairs = np.zeros((len(attention), n_modules), dtype=np.int64)
    for c, a in enumerate(attention):
        u = universe[ids[offsets[c] : offsets[c + 1]]]
        mod = np.full(u.size, -1)
        mod[u >= 0] = modules[u[u >= 0]]
        for k in range(n_modules):
            both = (mod[:, None] == k) & (mod[None, :] == k) & (u[:, None] != u[None, :])
            sums[c, k] = a[both].sum(dtype=np.float64)
            n = np.unique(u[mod == k]).size
            pairs[c, k] = n * (n - 1)
    return sums, pairs


def _reference_attention(
    model: BertEncoder, ids: np.ndarray, offsets: np.ndarray, layer: int, heads: list[int]
) -> list[np.ndarray]:
    """Per cell, the numpy reference's attention of ``layer`` averaged over ``heads``."""
    out = []
    for c in range(offsets.size - 1):
        cell = ids[offsets[c] : offsets[c + 1]]
        _, att = ref.forward(cell, model.weights, model.config, n_layers=layer + 1)
        out.append(att[layer][heads].mean(axis=0) if cell.size else np.zeros((0, 0)))
    return out


@settings(max_examples=40, deadline=None)
@given(
    layers=st.integers(1, 3),
    heads=st.integers(1, 4),
    dh=st.integers(1, 6),
    lengths=st.lists(st.integers(0, 30), min_size=0, max_size=4),
    in_universe=st.floats(0.0, 1.0),
    n_modules=st.integers(1, 3),
    data=st.data(),
)
def test_fused_sums_match_numpy_reference(layers, heads, dh, lengths, in_universe, n_modules, data):
    seed = data.draw(st.integers(0, 2**32 - 1), label="seed")
    config = _config(layers, heads, dh, 8, data.draw(st.sampled_from(ACTS)), vocab=12)
    model = BertEncoder(config, BertWeights.random(config, seed), version="V1")
    rng = np.random.default_rng(seed)
    ids, offsets = _cells(rng, lengths, config.vocab_size)  # 12 tokens: repeats are common
    layer = data.draw(st.integers(-layers, layers - 1), label="layer")
    first_heads = st.permutations(range(heads)).flatmap(
        lambda p: st.integers(1, heads).map(lambda k: p[:k])
    )
    chosen = data.draw(st.none() | first_heads, label="heads")
    # heads may be given from the end
    given_heads = None if chosen is None else [h - heads if h % 2 else h for h in chosen]
    members = rng.permutation(config.vocab_size)[: int(in_universe * config.vocab_size)]
    g = members.size
    universe = np.full(config.vocab_size, -1, dtype=np.int64)
    universe[members] = rng.permutation(g)
    modules = rng.integers(-1, n_modules, size=g)

    attention = _reference_attention(
        model, ids, offsets, layer % layers, list(range(heads)) if chosen is None else chosen
    )
    sums, incoming = model.attention_sums(
        ids, offsets, universe, g, layer=layer, heads=given_heads, n_threads=2
    )
    want_sums, want_in = _reference_sums(attention, ids, offsets, universe, g)
    assert sums.dtype == incoming.dtype == np.float64
    np.testing.assert_allclose(sums, want_sums, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(incoming, want_in, rtol=1e-4, atol=1e-5)

    got = model.module_sums(
        ids, offsets, universe, modules, n_modules, layer=layer, heads=given_heads, n_threads=2
    )
    want = _reference_modules(attention, ids, offsets, universe, modules, n_modules)
    assert got[0].shape == got[1].shape == (len(lengths), n_modules)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got[1], want[1])


def _long_cells_model() -> tuple[BertEncoder, np.ndarray, np.ndarray, np.ndarray, int]:
    """A 2-layer model with 400 positions, cells past one block of query rows, a universe."""
    config = _config(2, 4, 8, 48, "gelu", vocab=50)
    config = BertConfig(**{**config.__dict__, "max_position_embeddings": 400})
    model = BertEncoder(config, BertWeights.random(config, 3), version="V1")
    rng = np.random.default_rng(1)
    ids, offsets = _cells(rng, [300, 0, 7, 260, 1, 64, 129], config.vocab_size)
    universe = np.full(config.vocab_size, -1, dtype=np.int64)
    universe[rng.permutation(config.vocab_size)[:30]] = np.arange(30)
    return model, ids, offsets, universe, 30


def test_fused_sums_are_bit_identical_across_threads_and_calls():
    model, ids, offsets, universe, g = _long_cells_model()
    one = model.attention_sums(ids, offsets, universe, g, layer=0, heads=[3, 1], n_threads=1)
    two = model.attention_sums(ids, offsets, universe, g, layer=0, heads=[3, 1], n_threads=2)
    sums, incoming = np.zeros((g, g)), np.zeros(g)
    split = 3
    for c0, c1 in ((0, split), (split, offsets.size - 1)):
        lo, hi = offsets[c0], offsets[c1]
        out = model.attention_sums(
            ids[lo:hi], offsets[c0 : c1 + 1] - lo, universe, g, layer=0, heads=[3, 1],
            n_threads=2, sums=sums, incoming=incoming,
        )  # fmt: skip
        assert out[0] is sums and out[1] is incoming
    for a, b, c in zip(one, two, (sums, incoming), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert one[0].sum() > 0
    modules = np.arange(g) % 4 - 1
    m1 = model.module_sums(ids, offsets, universe, modules, 3, n_threads=1)
    m2 = model.module_sums(ids, offsets, universe, modules, 3, n_threads=2)
    for a, b in zip(m1, m2, strict=True):
        np.testing.assert_array_equal(a, b)


def test_fused_sums_equal_summed_attention_matrices():
    model, ids, offsets, universe, g = _long_cells_model()
    for layer, heads in ((-1, None), (0, (2,)), (1, (0, -1))):
        att = model.attention(ids, offsets, layers=(layer,), heads=heads)[layer]
        want = _reference_sums(att, ids, offsets, universe, g)
        got = model.attention_sums(ids, offsets, universe, g, layer=layer, heads=heads)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # V2 inputs: <cls> and <eos> take part in the attention, outside the universe
    v2 = _v2()
    tokens = np.array([1, 2, 3, 20, 4, 5, 1, 7, 2], dtype=np.int32)
    vocabulary = np.array([f"ENSG{i + 40:011d}" for i in range(25)])
    ids, offsets = v2.input_ids(tokens, np.array([0, 4, 6, 9]), vocabulary)
    universe = np.full(v2.config.vocab_size, -1, dtype=np.int64)
    universe[40:50] = np.arange(10)
    att = v2.attention(ids, offsets, layers=(1,))[1]
    want = _reference_sums(att, ids, offsets, universe, 10)
    got = v2.attention_sums(ids, offsets, universe, 10, layer=1)
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="not framed by <cls>"):
        v2.attention_sums(np.array([41, 42]), np.array([0, 2]), universe, 10)


def test_fused_sums_match_pytorch(tiny, golden):
    ids, offsets = _batch(golden)
    universe = np.full(tiny.config.vocab_size, -1, dtype=np.int64)
    universe[::3] = np.arange(34)[::-1]
    for layer in (0, 1):
        att = [golden[f"relu_attention_{layer}_{i}"].mean(axis=0) for i in range(2)]
        att.append(golden[f"relu_attention_mean_{layer}_2"])
        want = _reference_sums(att, ids, offsets, universe, 34)
        got = tiny.attention_sums(ids, offsets, universe, 34, layer=layer)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
        # heads 1 and 3 of the first two cells, which have per-head golden attention
        two = offsets[2]
        att = [golden[f"relu_attention_{layer}_{i}"][[1, 3]].mean(axis=0) for i in range(2)]
        want = _reference_sums(att, ids, offsets, universe, 34)
        got = tiny.attention_sums(ids[:two], offsets[:3], universe, 34, layer=layer, heads=[1, 3])
        for a, b in zip(got, want, strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
        assert got[0].sum() > 0


def test_fused_sums_bad_inputs_get_clear_errors(tiny, golden):
    ids, offsets = _batch(golden)
    universe = np.full(100, -1, dtype=np.int64)
    universe[:10] = np.arange(10)
    modules = np.zeros(10, dtype=np.int64)

    def sums(**kw):
        args = {"universe": universe, "n_universe": 10} | kw
        return tiny.attention_sums(
            ids, offsets, args.pop("universe"), args.pop("n_universe"), **args
        )

    for kw, message in [
        ({"layer": 2}, "attention layer 2 is out of range"),
        ({"layer": -3}, "attention layer -3 is out of range"),
        ({"layer": 1.0}, "layer must be an integer, got 1.0"),
        ({"heads": (4,)}, "head 4 is out of range"),
        ({"heads": (0, -4)}, r"distinct heads, got \[0, -4\]"),
        ({"heads": ()}, "distinct heads, got"),
        ({"universe": universe[:-1]}, r"one entry per model token id \(100\), got 99"),
        ({"universe": universe.astype(np.float64)}, "universe must be a 1-D integer array"),
        ({"n_universe": 9}, "universe.* = 9 is neither -1 nor a universe index in 0..9"),
        ({"sums": np.zeros((9, 9)), "incoming": np.zeros(9)}, r"sums must have shape \(10, 10\)"),
        ({"sums": np.zeros((10, 10), dtype=np.float32), "incoming": np.zeros(10)}, "float64"),
        ({"sums": np.zeros((10, 10))}, "give both sums and incoming, or neither"),
        ({"n_threads": 0}, "n_threads must be an integer >= 1, got 0"),
        ({"n_threads": -1}, "n_threads must be an integer >= 1, got -1"),
        ({"n_universe": -1}, "n_universe must be an integer >= 0, got -1"),
        ({"heads": (1.5,)}, "a head must be an integer, got 1.5"),
        ({"heads": (True,)}, "a head must be an integer, got True"),
        ({"heads": (-5,)}, "head -5 is out of range"),
    ]:
        with pytest.raises(InputError, match=message):
            sums(**kw)
    with pytest.raises(InputError, match="token 100 is outside"):
        tiny.attention_sums(np.array([1, 100]), np.array([0, 2]), universe, 10)
    with pytest.raises(InputError, match=r"modules\[3\] = 2 is neither -1 nor a module in 0..2"):
        tiny.module_sums(ids, offsets, universe, np.where(np.arange(10) == 3, 2, 0), 2)
    # the universe has len(modules) genes
    with pytest.raises(InputError, match=r"universe\[9\] = 9 is neither -1 nor .* in 0..9"):
        tiny.module_sums(ids, offsets, universe, modules[:-1], 1)
    with pytest.raises(InputError, match="head 5 is out of range"):
        tiny.module_sums(ids, offsets, universe, modules, 1, heads=[5])
    with pytest.raises(InputError, match="n_modules must be an integer >= 0, got -1"):
        tiny.module_sums(ids, offsets, universe, modules, -1)

    # the kernels themselves: ValueError/TypeError, never a panic
    emb, layers = tiny.weights.kernel_args()
    model = (emb, layers, 4, "relu", 1e-12)
    with pytest.raises(ValueError, match="layer must be a 0-based index >= 0, got -1"):
        _kernels.bert_aggregate_cells(ids, offsets, *model, -1, universe, 10)
    with pytest.raises(ValueError, match="attention layer 2 does not exist"):
        _kernels.bert_aggregate_cells(ids, offsets, *model, 2, universe, 10)
    with pytest.raises(ValueError, match="head 4 does not exist"):
        _kernels.bert_aggregate_cells(ids, offsets, *model, 0, universe, 10, heads=[0, 4])
    with pytest.raises(ValueError, match="heads must be distinct"):
        _kernels.bert_module_cells(ids, offsets, *model, 0, universe, modules, 1, heads=[1, 1])
    with pytest.raises(ValueError, match=r"one entry per row of the word embeddings \(100\)"):
        _kernels.bert_aggregate_cells(ids, offsets, *model, 0, universe[:50], 10)
    with pytest.raises(TypeError, match="universe must be a 1-D numpy array of dtype int64"):
        _kernels.bert_aggregate_cells(ids, offsets, *model, 0, universe.astype(np.int32), 10)
    with pytest.raises(TypeError, match="tokens must be a 1-D numpy array of dtype int32 or int64"):
        _kernels.bert_aggregate_cells(ids.astype(np.float32), offsets, *model, 0, universe, 10)
    with pytest.raises(TypeError, match="modules must be a 1-D numpy array of dtype int64"):
        _kernels.bert_module_cells(ids, offsets, *model, 0, universe, modules * 1.0, 1)
    with pytest.raises(TypeError, match="word_embeddings must be a numpy array of dtype float32"):
        bad = [emb[0].astype(np.float64), *emb[1:]]
        _kernels.bert_aggregate_cells(ids, offsets, bad, *model[1:], 0, universe, 10)
    with pytest.raises(ValueError, match="unsupported hidden_act"):
        _kernels.bert_aggregate_cells(ids, offsets, emb, layers, 4, "elu", 1e-12, 0, universe, 10)


def test_fused_sums_of_nothing():
    model, ids, offsets, universe, _ = _long_cells_model()
    sums, incoming = model.attention_sums(ids, offsets, np.full_like(universe, -1), 0)
    assert sums.shape == (0, 0) and incoming.shape == (0,)
    none = np.array([], dtype=np.int32), np.array([0])
    sums, incoming = model.attention_sums(*none, universe, 30)
    assert not sums.any() and not incoming.any()
    s, p = model.module_sums(*none, universe, np.zeros(30, dtype=np.int64), 1)
    assert s.shape == p.shape == (0, 1)
