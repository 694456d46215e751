"""A BERT checkpoint's configuration and weights, read without PyTorch.

:class:`BertConfig` holds the fields of ``config.json`` the encoder uses;
:func:`load_weights` reads ``model.safetensors`` (or its shards) with ``safetensors.numpy``,
maps the ``BertForMaskedLM`` tensor names onto :class:`BertWeights` and checks every shape
against the config. Errors are :class:`~geneattn.errors.InputError` naming the file.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from geneattn.errors import InputError

__all__ = ["ACTIVATIONS", "BertConfig", "BertWeights", "LayerWeights", "load_weights"]

#: ``hidden_act`` values the encoder implements.
ACTIVATIONS = ("relu", "gelu", "gelu_new", "gelu_pytorch_tanh", "gelu_fast", "silu", "swish")

#: Model input sizes of the Geneformer generations.
V1_INPUT_SIZE, V2_INPUT_SIZE = 2048, 4096


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The fields of a BERT ``config.json`` the encoder uses (Hugging Face defaults)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    type_vocab_size: int = 2

    @classmethod
    def from_dict(cls, raw: Mapping[str, object], origin: str | Path | None = None) -> BertConfig:
        """Check and convert a parsed ``config.json``.

        Raises
        ------
        InputError
            A missing or invalid field, a model type other than BERT, or position
            embeddings other than absolute.
        """
        if raw.get("model_type", "bert") != "bert":
            raise InputError(f"model_type is {raw['model_type']!r}; only bert is supported", origin)
        pet = raw.get("position_embedding_type", "absolute")
        if pet != "absolute":
            raise InputError(f"position_embedding_type {pet!r} is not supported", origin)
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            if f.name not in raw:
                if f.default is dataclasses.MISSING:
                    raise InputError(f"config has no {f.name}", origin)
                continue
            v = raw[f.name]
            if f.type == "int":
                if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                    raise InputError(f"{f.name} must be a non-negative integer, got {v!r}", origin)
            elif f.type == "float":
                if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
                    raise InputError(f"{f.name} must be a number >= 0, got {v!r}", origin)
                v = float(v)
            elif v not in ACTIVATIONS:
                raise InputError(
                    f"hidden_act {v!r} is not supported (expected one of {', '.join(ACTIVATIONS)})",
                    origin,
                )
            values[f.name] = v
        config = cls(**values)  # type: ignore[arg-type]
        for name in ("vocab_size", "hidden_size", "num_attention_heads", "intermediate_size"):
            if getattr(config, name) == 0:
                raise InputError(f"{name} must be positive", origin)
        if config.hidden_size % config.num_attention_heads:
            raise InputError(
                f"hidden_size {config.hidden_size} is not a multiple of num_attention_heads "
                f"{config.num_attention_heads}",
                origin,
            )
        return config

    @classmethod
    def read(cls, path: str | Path) -> BertConfig:
        """Read ``config.json``."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise InputError("no config.json: not a Hugging Face model directory", path) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError(f"cannot read the config: {err}", path) from None
        if not isinstance(raw, dict):
            raise InputError("config.json must hold a JSON object", path)
        return cls.from_dict(raw, path)


@dataclasses.dataclass
class LayerWeights:
    """One encoder layer, float32, ``nn.Linear`` layout (``out x in``).

    ``qkv_w`` (``3d x d``) and ``qkv_b`` stack ``attention.self.{query,key,value}``.
    """

    qkv_w: np.ndarray
    qkv_b: np.ndarray
    attn_out_w: np.ndarray
    attn_out_b: np.ndarray
    attn_ln_w: np.ndarray
    attn_ln_b: np.ndarray
    inter_w: np.ndarray
    inter_b: np.ndarray
    out_w: np.ndarray
    out_b: np.ndarray
    out_ln_w: np.ndarray
    out_ln_b: np.ndarray

    def arrays(self) -> list[np.ndarray]:
        """The arrays in the kernel's order."""
        return [getattr(self, f.name) for f in dataclasses.fields(self)]


@dataclasses.dataclass
class BertWeights:
    """The encoder's weights, float32 and C-contiguous.

    ``token_type`` is row 0 of ``token_type_embeddings`` (every token has type 0).
    """

    word: np.ndarray
    position: np.ndarray
    token_type: np.ndarray
    emb_ln_w: np.ndarray
    emb_ln_b: np.ndarray
    layers: list[LayerWeights]

    def kernel_args(self) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
        """``(embeddings, layers)`` as :func:`geneattn._kernels.bert_forward` takes them."""
        emb = [self.word, self.position, self.token_type, self.emb_ln_w, self.emb_ln_b]
        return emb, [lw.arrays() for lw in self.layers]

    @classmethod
    def random(cls, config: BertConfig, seed: int = 0) -> BertWeights:
        """Random weights of the config's shapes (for tests and benchmarks).

        Embeddings are ``N(0, 1)``, dense weights ``N(0, 1 / fan_in)``, LayerNorm weights
        ``1 + N(0, 0.1)`` and biases ``N(0, 0.1)``: attention is far from uniform.
        """
        rng = np.random.default_rng(seed)
        d, i = config.hidden_size, config.intermediate_size

        def r(*shape: int, scale: float = 0.1, mean: float = 0.0) -> np.ndarray:
            return (mean + scale * rng.standard_normal(shape)).astype(np.float32)

        def lin(out: int, inp: int) -> np.ndarray:
            return r(out, inp, scale=1.0 / np.sqrt(inp))

        layers = [
            LayerWeights(
                *(lin(3 * d, d), r(3 * d), lin(d, d), r(d), r(d, mean=1.0), r(d)),
                *(lin(i, d), r(i), lin(d, i), r(d), r(d, mean=1.0), r(d)),
            )
            for _ in range(config.num_hidden_layers)
        ]
        return cls(
            r(config.vocab_size, d, scale=1.0),
            r(config.max_position_embeddings, d, scale=1.0),
            r(d),
            r(d, mean=1.0),
            r(d),
            layers,
        )


def _read_tensors(directory: Path) -> tuple[dict[str, np.ndarray], Path]:
    """All tensors of the checkpoint, and the file to name in errors."""
    try:
        from safetensors.numpy import load_file
    except ImportError:  # pragma: no cover - safetensors is a dependency of the venv
        raise InputError(
            "reading checkpoints needs the safetensors package (pip install safetensors)"
        ) from None
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            raise InputError(f"cannot read the shard index: {err}", index) from None
        files = [directory / s for s in shards]
    else:
        torch_files = [p.name for p in directory.glob("pytorch_model*.bin")]
        hint = (
            f" (found {', '.join(torch_files)}: convert it once with transformers, "
            "model.save_pretrained(dir, safe_serialization=True); torch is not used here)"
            if torch_files
            else ""
        )
        raise InputError(f"no model.safetensors{hint}", directory)
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        try:
            tensors.update(load_file(str(f)))
        except Exception as err:
            raise InputError(f"cannot read the weights: {err}", f) from None
    return tensors, files[0] if len(files) == 1 else index


def load_weights(directory: str | Path, config: BertConfig) -> BertWeights:
    """Read a checkpoint's encoder weights and check their shapes against the config.

    Tensor names are those of ``BertForMaskedLM`` (``bert.`` prefix) or ``BertModel``
    (none); TensorFlow-era LayerNorm names (``gamma``/``beta``) are accepted too.

    Parameters
    ----------
    directory
        The model directory.
    config
        Its configuration.

    Returns
    -------
    BertWeights
        float32 weights.

    Raises
    ------
    InputError
        A missing file or tensor, a shape that does not match the config, or a dtype that
        is not a float.
    """
    directory = Path(directory)
    tensors, origin = _read_tensors(directory)
    d, i = config.hidden_size, config.intermediate_size

    def get(name: str, *shape: int) -> np.ndarray:
        names = [f"bert.{name}", name]
        if name.endswith("LayerNorm.weight") or name.endswith("LayerNorm.bias"):
            alt = name.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
                "LayerNorm.bias", "LayerNorm.beta"
            )
            names += [f"bert.{alt}", alt]
        found = next((n for n in names if n in tensors), None)
        if found is None:
            raise InputError(f"missing tensor {name!r} (looked for {', '.join(names)})", origin)
        a = tensors[found]
        if a.shape != shape:
            raise InputError(
                f"tensor {found!r} has shape {a.shape}, config.json implies {shape}", origin
            )
        if not np.issubdtype(a.dtype, np.floating):
            raise InputError(f"tensor {found!r} has dtype {a.dtype}, not a float", origin)
        a = np.ascontiguousarray(a, dtype=np.float32)
        if not np.isfinite(a).all():
            raise InputError(f"tensor {found!r} has non-finite values", origin)
        return a

    e = "embeddings."
    token_type = get(e + "token_type_embeddings.weight", config.type_vocab_size, d)
    if token_type.shape[0] == 0:
        raise InputError("token_type_embeddings has no rows", origin)
    layers = []
    for n in range(config.num_hidden_layers):
        p = f"encoder.layer.{n}."
        a = p + "attention."
        qkv = [get(f"{a}self.{x}.weight", d, d) for x in ("query", "key", "value")]
        qkv_b = [get(f"{a}self.{x}.bias", d) for x in ("query", "key", "value")]
        layers.append(
            LayerWeights(
                np.concatenate(qkv, axis=0),
                np.concatenate(qkv_b),
                get(a + "output.dense.weight", d, d),
                get(a + "output.dense.bias", d),
                get(a + "output.LayerNorm.weight", d),
                get(a + "output.LayerNorm.bias", d),
                get(p + "intermediate.dense.weight", i, d),
                get(p + "intermediate.dense.bias", i),
                get(p + "output.dense.weight", d, i),
                get(p + "output.dense.bias", d),
                get(p + "output.LayerNorm.weight", d),
                get(p + "output.LayerNorm.bias", d),
            )
        )
    weights = BertWeights(
        get(e + "word_embeddings.weight", config.vocab_size, d),
        get(e + "position_embeddings.weight", config.max_position_embeddings, d),
        np.ascontiguousarray(token_type[0]),
        get(e + "LayerNorm.weight", d),
        get(e + "LayerNorm.bias", d),
        layers,
    )
    extra = f"encoder.layer.{config.num_hidden_layers}."
    if any(k.startswith(extra) or k.startswith("bert." + extra) for k in tensors):
        raise InputError(
            f"the file has more layers than num_hidden_layers = {config.num_hidden_layers}",
            origin,
        )
    return weights


def save_checkpoint(directory: str | Path, config: BertConfig, weights: BertWeights) -> Path:
    """Write a Hugging Face ``BertForMaskedLM``-style directory readable by :func:`load_weights`.

    ``config.json`` and ``model.safetensors`` (encoder tensors with the ``bert.`` prefix; no
    masked-LM head, which the encoder does not use; token type embeddings of row 0 only
    repeated over ``type_vocab_size`` rows). Written with ``safetensors.numpy``, no torch:
    for test fixtures and for models built or converted in numpy.

    Returns
    -------
    Path
        The directory.
    """
    from safetensors.numpy import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    d = config.hidden_size
    tensors: dict[str, np.ndarray] = {}
    e = "bert.embeddings."
    tensors[e + "word_embeddings.weight"] = weights.word
    tensors[e + "position_embeddings.weight"] = weights.position
    tensors[e + "token_type_embeddings.weight"] = np.tile(
        weights.token_type, (config.type_vocab_size, 1)
    )
    tensors[e + "LayerNorm.weight"] = weights.emb_ln_w
    tensors[e + "LayerNorm.bias"] = weights.emb_ln_b
    for n, lw in enumerate(weights.layers):
        p = f"bert.encoder.layer.{n}."
        a = p + "attention."
        for k, x in enumerate(("query", "key", "value")):
            tensors[f"{a}self.{x}.weight"] = lw.qkv_w[k * d : (k + 1) * d]
            tensors[f"{a}self.{x}.bias"] = lw.qkv_b[k * d : (k + 1) * d]
        tensors[a + "output.dense.weight"] = lw.attn_out_w
        tensors[a + "output.dense.bias"] = lw.attn_out_b
        tensors[a + "output.LayerNorm.weight"] = lw.attn_ln_w
        tensors[a + "output.LayerNorm.bias"] = lw.attn_ln_b
        tensors[p + "intermediate.dense.weight"] = lw.inter_w
        tensors[p + "intermediate.dense.bias"] = lw.inter_b
        tensors[p + "output.dense.weight"] = lw.out_w
        tensors[p + "output.dense.bias"] = lw.out_b
        tensors[p + "output.LayerNorm.weight"] = lw.out_ln_w
        tensors[p + "output.LayerNorm.bias"] = lw.out_ln_b
    save_file(
        {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()},
        str(directory / "model.safetensors"),
        metadata={"format": "pt"},  # transformers' from_pretrained requires it
    )
    raw = {"model_type": "bert", "architectures": ["BertForMaskedLM"]}
    raw.update(dataclasses.asdict(config))
    (directory / "config.json").write_text(json.dumps(raw, indent=2, sort_keys=True) + "\n")
    return directory
