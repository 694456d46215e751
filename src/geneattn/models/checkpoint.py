"""A pretrained checkpoint as the workflow's model: embed, attention and perturb stages.

``model.kind: checkpoint`` makes the ``model`` rule write a small JSON manifest
(``model.json``) instead of study-derived weights: where the Hugging Face directory is,
which token dictionary and Geneformer version, and the layer and pooling choices. Every
stage that takes ``--model`` reads either file through :func:`geneattn.models.load_model`,
and :class:`CheckpointAttention` implements the
:class:`~geneattn.models.protocol.AttentionModel` protocol as the study model does:

- embed: Geneformer's ``EmbExtractor`` (hidden states of ``emb_layer``, mean over gene
  tokens, or the ``<cls>`` vector of a V2 model);
- attention and module attention: the attention of ``attention_layer``, averaged over
  ``attention_heads`` (all by default), aggregated in Rust while the encoder runs (no
  per-cell matrix reaches Python);
- perturb: Geneformer's approach, a forward pass of every perturbed sequence (the
  checkpoint has position embeddings, so rank shifts matter), pooled without the perturbed
  gene's own token as for the study model.

Our tokens are ids of the dictionary they were made with; they are mapped by gene onto the
checkpoint's dictionary (:meth:`BertEncoder.input_ids`), truncated to the model's input
size and framed by ``<cls>``/``<eos>`` for V2.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from geneattn.errors import InputError
from geneattn.models.bert import BertEncoder
from geneattn.models.inputs import token_remap
from geneattn.models.protocol import TokenInputs
from geneattn.tokenize import TokenizedCells

log = logging.getLogger(__name__)

#: Tokens per encoder call when perturbed sequences are embedded (bounds the memory of a
#: call's hidden states: 2^18 tokens x 256 floats is 256 MiB).
TOKENS_PER_CALL = 1 << 18


@dataclasses.dataclass
class CheckpointAttention:
    """A checkpoint with the workflow's choices of layers, heads and pooling.

    Attributes
    ----------
    model
        The loaded checkpoint.
    emb_layer
        Geneformer's embedding layer: 0 the last layer's output, -1 the one before.
    pooling
        ``"mean"`` over gene tokens or ``"cls"`` (V2 only).
    attention_layer
        0-based layer whose attention the network stages use (-1: the last).
    attention_heads
        Heads averaged (None: all).
    params
        The manifest (JSON-serialisable), carried into outputs.
    """

    model: BertEncoder
    emb_layer: int = -1
    pooling: str = "mean"
    attention_layer: int = -1
    attention_heads: tuple[int, ...] | None = None
    params: dict = dataclasses.field(default_factory=dict)

    @property
    def d_model(self) -> int:
        """Width of the cell embeddings."""
        return self.model.hidden_size

    def inputs(self, cells: TokenizedCells) -> tuple[np.ndarray, np.ndarray]:
        """Model input ids of ``cells`` (mapped by gene, truncated, framed)."""
        return self.model.input_ids(cells.tokens, cells.offsets, cells.vocabulary)

    def model_index(self, cells: TokenizedCells, tokens: np.ndarray, values: np.ndarray):
        """An int64 array over the model's vocabulary: ``values[i]`` at the model id of our
        token ``tokens[i]``, -1 elsewhere; and how many of ``tokens`` the model lacks."""
        ids = self.model_ids(cells, tokens)
        index = np.full(self.model.config.vocab_size, -1, dtype=np.int64)
        known = ids >= 0
        index[ids[known]] = np.asarray(values, dtype=np.int64)[known]
        return index, int((~known).sum())

    def model_ids(self, cells: TokenizedCells, tokens: np.ndarray) -> np.ndarray:
        """The checkpoint's id of each of our ``tokens`` (-1: a gene it does not know)."""
        tokens = np.asarray(tokens, dtype=np.int64)
        if self.model.token_dictionary is None:
            ids = tokens.copy()
            ids[ids >= self.model.config.vocab_size] = -1
            return ids
        remap = token_remap(np.asarray(cells.vocabulary), self.model.token_dictionary)
        return remap[tokens].astype(np.int64)

    def embed(self, cells: TokenizedCells, *, n_threads: int = 1) -> np.ndarray:
        """Cell embeddings, float32 ``(n_cells, hidden_size)``."""
        ids, offsets = self.inputs(cells)
        return self.model.encode_batch(
            ids, offsets, emb_layer=self.emb_layer, pooling=self.pooling, n_threads=n_threads
        )

    def add_attention_sums(
        self,
        cells: TokenizedCells,
        universe: np.ndarray,
        sums: np.ndarray,
        incoming: np.ndarray,
        *,
        n_threads: int = 1,
    ) -> None:
        """Add the cells' attention among universe genes into ``sums`` and ``incoming``.

        ``universe`` holds our token ids; genes the checkpoint does not know get nothing.
        """
        index, _ = self.model_index(cells, universe, np.arange(len(universe)))
        ids, offsets = self.inputs(cells)
        self.model.attention_sums(
            ids,
            offsets,
            index,
            len(universe),
            layer=self.attention_layer,
            heads=self.attention_heads,
            n_threads=n_threads,
            sums=sums,
            incoming=incoming,
        )

    def module_sums(
        self,
        cells: TokenizedCells,
        gene_tokens: np.ndarray,
        gene_columns: np.ndarray,
        n_modules: int,
        *,
        n_threads: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per cell and module, attention among the module's genes and their pair count."""
        index, _ = self.model_index(cells, gene_tokens, np.arange(len(gene_tokens)))
        ids, offsets = self.inputs(cells)
        return self.model.module_sums(
            ids,
            offsets,
            index,
            np.asarray(gene_columns, dtype=np.int64),
            n_modules,
            layer=self.attention_layer,
            heads=self.attention_heads,
            n_threads=n_threads,
        )

    def token_inputs(self, cells: TokenizedCells) -> TokenInputs:
        """Model input ids of ``cells`` (mapped, truncated, framed) and the token map."""
        ids, offsets = self.inputs(cells)
        vocab = np.arange(len(cells.vocabulary), dtype=np.int64)
        return TokenInputs(
            ids=ids,
            offsets=offsets,
            model_id=self.model_ids(cells, vocab),
            special=self.model.version == "V2",
            max_len=self.model.max_len,
            cls=self.pooling == "cls",
        )

    def token_states(
        self, ids: np.ndarray, offsets: np.ndarray, *, n_threads: int = 1
    ) -> np.ndarray:
        """Hidden states of ``emb_layer`` of every input token, float32."""
        return self._hidden(ids, offsets, self.model.n_layers + self.emb_layer, n_threads)

    def edit_embeddings(
        self,
        cells: TokenizedCells,
        edit_cell: np.ndarray,
        edit_token: np.ndarray,
        mode: str,
        *,
        shift: float,
        n_threads: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Original and perturbed embeddings of each edit ``(cell, token)``.

        The original is pooled from one forward pass per cell, the perturbed from a forward
        pass of the perturbed sequence; both leave out the perturbed gene's own token (mean
        pooling) or take the ``<cls>`` vector. Returns float64 ``(n_edits, hidden_size)``.
        """
        from geneattn.edits import perturbed_tokens

        d = self.d_model
        n = len(edit_cell)
        original, perturbed = np.zeros((n, d)), np.zeros((n, d))
        if n == 0:
            return original, perturbed
        hidden = self.model.n_layers + self.emb_layer
        edit_ids = self.model_ids(cells, edit_token)
        ids, offsets = self.inputs(cells)
        states = self._hidden(ids, offsets, hidden, n_threads)
        for e, (c, g) in enumerate(zip(edit_cell.tolist(), edit_ids.tolist(), strict=True)):
            lo, hi = offsets[c], offsets[c + 1]
            original[e] = self._pool(ids[lo:hi], states[lo:hi], g)
        # perturbed sequences, as many per encoder call as TOKENS_PER_CALL allows
        sequences = [
            perturbed_tokens(cells.cell(c), t, mode, shift=shift)
            for c, t in zip(edit_cell.tolist(), edit_token.tolist(), strict=True)
        ]
        start = 0
        while start < n:
            stop, total = start, 0
            while stop < n and (stop == start or total + len(sequences[stop]) <= TOKENS_PER_CALL):
                total += len(sequences[stop])
                stop += 1
            lengths = [len(s) for s in sequences[start:stop]]
            tok = np.concatenate(sequences[start:stop]).astype(np.int32)
            off = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
            p_ids, p_off = self.model.input_ids(tok, off, cells.vocabulary)
            p_states = self._hidden(p_ids, p_off, hidden, n_threads)
            for k, e in enumerate(range(start, stop)):
                lo, hi = p_off[k], p_off[k + 1]
                perturbed[e] = self._pool(p_ids[lo:hi], p_states[lo:hi], int(edit_ids[e]))
            start = stop
        return original, perturbed

    def _hidden(self, ids: np.ndarray, offsets: np.ndarray, layer: int, n_threads: int):
        out = self.model.forward(ids, offsets, hidden_layers=[layer], n_threads=n_threads)
        return out["hidden"][0]

    def _pool(self, ids: np.ndarray, states: np.ndarray, gene: int) -> np.ndarray:
        """Mean of a sequence's gene-token states without ``gene`` (or its ``<cls>`` state)."""
        if self.pooling == "cls":
            return states[0].astype(np.float64)
        keep = ids != gene
        if self.model.version == "V2":
            keep[0] = keep[-1] = False
        if not keep.any():
            return np.zeros(states.shape[1])
        return states[keep].astype(np.float64).mean(axis=0)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(
    out: str | Path,
    checkpoint: str | Path,
    *,
    token_dictionary: str | Path | None,
    version: str | None,
    emb_layer: int,
    pooling: str,
    attention_layer: int,
    attention_heads: Sequence[int] | None,
) -> CheckpointAttention:
    """Check a checkpoint loads with these choices and write its manifest atomically.

    The manifest (:func:`checkpoint_manifest`) records the paths as given and the sha256 of
    ``config.json`` and the weight files, so a changed checkpoint changes the manifest's
    bytes.

    Returns
    -------
    CheckpointAttention
        The loaded checkpoint with the choices.
    """
    from geneattn.io.atomic import write_text

    stage, manifest = checkpoint_manifest(
        checkpoint,
        token_dictionary=token_dictionary,
        version=version,
        emb_layer=emb_layer,
        pooling=pooling,
        attention_layer=attention_layer,
        attention_heads=attention_heads,
        source=out,
    )
    write_text(out, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return stage


def checkpoint_manifest(
    checkpoint: str | Path,
    *,
    token_dictionary: str | Path | None = None,
    version: str | None = None,
    emb_layer: int = -1,
    pooling: str = "mean",
    attention_layer: int = -1,
    attention_heads: Sequence[int] | None = None,
    source: str | Path | None = None,
) -> tuple[CheckpointAttention, dict]:
    """Load a checkpoint with the workflow's choices, and the manifest that reloads it.

    Parameters
    ----------
    checkpoint
        Hugging Face model directory (``config.json``, ``*.safetensors``).
    token_dictionary, version
        As for :meth:`BertEncoder.load`.
    emb_layer, pooling, attention_layer, attention_heads
        As the attributes of :class:`CheckpointAttention`.
    source
        Named in errors about the choices.

    Returns
    -------
    tuple
        The model, and its manifest (JSON-serialisable; :func:`model_from_manifest`).
    """
    checkpoint = Path(checkpoint)
    model = BertEncoder.load(checkpoint, version=version, token_dictionary=token_dictionary)
    weights = sorted(p.name for p in checkpoint.glob("*.safetensors"))
    manifest = {
        "kind": "checkpoint",
        "path": str(checkpoint),
        "token_dictionary": None if token_dictionary is None else str(token_dictionary),
        "version": model.version,
        "emb_layer": int(emb_layer),
        "pooling": pooling,
        "attention_layer": int(attention_layer),
        "attention_heads": None if attention_heads is None else [int(h) for h in attention_heads],
        "layers": model.n_layers,
        "hidden_size": model.hidden_size,
        "heads": model.config.num_attention_heads,
        "max_len": model.max_len,
        "sha256": {name: _sha256(checkpoint / name) for name in ["config.json", *weights]},
    }
    return _stage(model, manifest, source), manifest


def _stage(model: BertEncoder, manifest: dict, source: str | Path) -> CheckpointAttention:
    """The stage model of a manifest, with its choices checked against the model."""
    heads = manifest.get("attention_heads")
    stage = CheckpointAttention(
        model=model,
        emb_layer=int(manifest.get("emb_layer", -1)),
        pooling=str(manifest.get("pooling", "mean")),
        attention_layer=int(manifest.get("attention_layer", -1)),
        attention_heads=None if heads is None else tuple(int(h) for h in heads),
        params={k: manifest[k] for k in sorted(manifest) if k != "sha256"},
    )
    n_layers, n_heads = model.n_layers, model.config.num_attention_heads
    if not -n_layers <= stage.emb_layer <= 0:
        raise InputError(f"emb_layer must be between -{n_layers} and 0", source)
    if stage.pooling not in ("mean", "cls") or (stage.pooling == "cls" and model.version != "V2"):
        raise InputError(f"pooling {stage.pooling!r}: use mean (cls needs a V2 model)", source)
    if not -n_layers <= stage.attention_layer < n_layers:
        raise InputError(f"attention_layer must be in -{n_layers}..{n_layers - 1}", source)
    if stage.attention_heads is not None and (
        not stage.attention_heads or any(not -n_heads <= h < n_heads for h in stage.attention_heads)
    ):
        raise InputError(f"attention_heads must be heads in -{n_heads}..{n_heads - 1}", source)
    return stage


def load_manifest(path: str | Path) -> CheckpointAttention:
    """The checkpoint a manifest file names (:func:`model_from_manifest`)."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read the model manifest ({err})", path) from None
    return model_from_manifest(manifest, source=path)


def model_from_manifest(manifest: dict, *, source: str | Path | None = None) -> CheckpointAttention:
    """The checkpoint a manifest names, loaded and checked against its recorded sha256.

    Raises
    ------
    InputError
        Not a checkpoint manifest, or the checkpoint's files changed since (naming
        ``source``).
    """
    if not isinstance(manifest, dict) or manifest.get("kind") != "checkpoint":
        raise InputError("not a checkpoint manifest (kind must be 'checkpoint')", source)
    checkpoint = Path(manifest["path"])
    for name, digest in manifest.get("sha256", {}).items():
        if not (checkpoint / name).is_file() or _sha256(checkpoint / name) != digest:
            raise InputError(
                f"{checkpoint / name} changed since the manifest was written; rerun the model rule",
                source,
            )
    model = BertEncoder.load(
        checkpoint, version=manifest["version"], token_dictionary=manifest["token_dictionary"]
    )
    return _stage(model, manifest, source)
