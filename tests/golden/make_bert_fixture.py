"""Write the tiny-BERT golden fixture: a Hugging Face checkpoint and its PyTorch outputs.

Run once by a developer, in an environment with ``torch``, ``transformers``, ``safetensors``
and ``numpy`` (not the project's venv, which has no torch)::

    python tests/golden/make_bert_fixture.py

It builds a seeded random ``BertForMaskedLM`` (2 layers, hidden 32, 4 heads, intermediate 64,
vocabulary 100, 64 positions, ReLU like Geneformer), saves it with ``save_pretrained`` under
``tests/golden/tiny_bert/`` (``config.json`` + ``model.safetensors``), and runs three token
sequences of lengths 5, 17 and 64 through it as one right-padded batch with the padding
mask, as Geneformer does. ``tests/golden/tiny_bert.npz`` records, for the valid positions of
each sequence:

- ``ids_{i}``: the input ids of sequence ``i``;
- ``relu_hidden_{k}_{i}``: ``hidden_states[k]`` (0 = embedding output, 2 = last layer);
- ``relu_attention_{l}_{i}``: layer ``l``'s attention per head, ``(4, n, n)``, for sequences
  0 and 1, and ``relu_attention_mean_{l}_2``: the head average for sequence 2 (kept small);
- ``relu_pooled_{k}``: the mean over tokens of ``hidden_states[k]`` (Geneformer's cell
  embedding), ``(3, 32)``, for ``k`` = 1 and 2;
- ``gelu_*``: the same weights with ``hidden_act="gelu"`` (exact erf GELU):
  ``gelu_hidden_2_{i}``, ``gelu_attention_mean_1_{i}`` for sequences 0 and 1, ``gelu_pooled_2``.

Weights are drawn larger than BERT's 0.02 initialisation so that attention is far from
uniform and every layer matters. Everything is float32, computed on the CPU with eager
attention (the implementation that returns attention weights).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import BertConfig, BertForMaskedLM

HERE = Path(__file__).resolve().parent
SEED = 20_240_611
LENGTHS = (5, 17, 64)
PER_HEAD = (0, 1)  # sequences whose attention is stored per head


def build(hidden_act: str) -> BertForMaskedLM:
    """The seeded tiny model with the given activation (weights do not depend on it)."""
    torch.manual_seed(SEED)
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        type_vocab_size=2,
        hidden_act=hidden_act,
        layer_norm_eps=1e-12,
        pad_token_id=0,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    config._attn_implementation = "eager"
    model = BertForMaskedLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn_like(p))
            elif "embeddings" in name:
                p.normal_(0.0, 1.0)
            else:
                p.normal_(0.0, 2.0 / math.sqrt(p.shape[1]))
    return model.eval()


def run(model: BertForMaskedLM, ids: list[np.ndarray]) -> tuple[list, list]:
    """Hidden states and attentions of the right-padded batch, with the padding mask."""
    width = max(len(x) for x in ids)
    batch = torch.zeros((len(ids), width), dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for i, x in enumerate(ids):
        batch[i, : len(x)] = torch.from_numpy(x)
        mask[i, : len(x)] = 1
    with torch.no_grad():
        out = model.bert(
            input_ids=batch,
            attention_mask=mask,
            output_hidden_states=True,
            output_attentions=True,
        )
    hidden = [h.numpy().astype(np.float32) for h in out.hidden_states]
    attention = [a.numpy().astype(np.float32) for a in out.attentions]
    return hidden, attention


def main() -> None:
    rng = np.random.default_rng(SEED)
    ids = [rng.integers(1, 100, size=n).astype(np.int64) for n in LENGTHS]
    relu = build("relu")
    relu.save_pretrained(HERE / "tiny_bert", safe_serialization=True)
    gelu = build("gelu")
    for a, b in zip(relu.parameters(), gelu.parameters(), strict=True):
        assert torch.equal(a, b)

    arrays: dict[str, np.ndarray] = {
        "versions": np.array(
            [f"torch {torch.__version__}", f"transformers {transformers.__version__}"]
        )
    }
    hidden, attention = run(relu, ids)
    for i, x in enumerate(ids):
        n = len(x)
        arrays[f"ids_{i}"] = x
        for k, h in enumerate(hidden):
            arrays[f"relu_hidden_{k}_{i}"] = h[i, :n]
        for layer, a in enumerate(attention):
            if i in PER_HEAD:
                arrays[f"relu_attention_{layer}_{i}"] = a[i, :, :n, :n]
            else:
                arrays[f"relu_attention_mean_{layer}_{i}"] = a[i, :, :n, :n].mean(axis=0)
    for k in (1, 2):
        arrays[f"relu_pooled_{k}"] = np.stack(
            [hidden[k][i, : len(x)].mean(axis=0) for i, x in enumerate(ids)]
        )
    hidden, attention = run(gelu, ids)
    for i, x in enumerate(ids):
        n = len(x)
        arrays[f"gelu_hidden_2_{i}"] = hidden[2][i, :n]
        if i in PER_HEAD:
            arrays[f"gelu_attention_mean_1_{i}"] = attention[1][i, :, :n, :n].mean(axis=0)
    arrays["gelu_pooled_2"] = np.stack(
        [hidden[2][i, : len(x)].mean(axis=0) for i, x in enumerate(ids)]
    )
    np.savez_compressed(HERE / "tiny_bert.npz", **arrays)


if __name__ == "__main__":
    main()
