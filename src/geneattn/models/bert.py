"""Pretrained Geneformer checkpoints on the CPU, without PyTorch.

A Geneformer checkpoint is a Hugging Face ``BertForMaskedLM`` directory: ``config.json``
and ``model.safetensors`` (or shards listed in ``model.safetensors.index.json``). The
weights are read with ``safetensors.numpy`` (no torch), checked against the config, and the
encoder runs in Rust (:func:`geneattn._kernels.bert_forward`): float32, cells of different
lengths in one call without padding, on a rayon pool of ``n_threads`` threads.

:meth:`BertEncoder.attention_sums` and :meth:`BertEncoder.module_sums` aggregate one
layer's attention over a gene universe in Rust (:func:`geneattn._kernels.bert_aggregate_cells`,
:func:`geneattn._kernels.bert_module_cells`), so no per-cell ``n x n`` matrix reaches Python.

Geneformer V1 (6 layers x 256 hidden x 4 heads, 2,048 tokens, ReLU) takes gene tokens only;
V2 (e.g. 12 x 768 x 12, 4,096 tokens) adds ``<cls>`` first and ``<eos>`` last. Build model
inputs from our tokens with :meth:`BertEncoder.input_ids`. The masked-LM head
(``cls.*``) is not used.

Layer numbers: :meth:`BertEncoder.hidden_states` uses Hugging Face's ``hidden_states``
indices (0 = embedding output, ``L`` = last layer; negative counts from the end);
:meth:`BertEncoder.attention`, :meth:`~BertEncoder.attention_sums` and
:meth:`~BertEncoder.module_sums` use 0-based layer indices (-1 = last layer);
:meth:`BertEncoder.encode_batch` uses Geneformer's ``emb_layer`` (0 = last layer's
output, -1 = the one before, Geneformer's default).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geneattn.errors import InputError
from geneattn.models.bert_weights import BertConfig, BertWeights, LayerWeights, load_weights
from geneattn.models.inputs import (
    CLS,
    EOS,
    check_ragged,
    model_input_ids,
    token_remap,
)
from geneattn.resources.load import load_token_dictionary

__all__ = ["BertConfig", "BertEncoder", "BertWeights", "LayerWeights", "load_weights"]


if TYPE_CHECKING:
    from geneattn.tokenize import TokenizedCells

#: Model input sizes of the Geneformer generations.
V1_INPUT_SIZE, V2_INPUT_SIZE = 2048, 4096

#: Cells per kernel call of :meth:`BertEncoder.iter_attention`.
CELLS_PER_CALL = 8


class BertEncoder:
    """A pretrained Geneformer (BERT) checkpoint, run on the CPU by the Rust encoder.

    Parameters
    ----------
    config
        The model configuration.
    weights
        Its float32 weights.
    version
        ``"V1"`` (gene tokens only) or ``"V2"`` (``<cls>`` first, ``<eos>`` last).
    token_dictionary
        The checkpoint's ``{gene_id: token id}``, needed for V2 (special token ids) and to
        map tokens of another dictionary by gene.
    path
        Where the checkpoint was read from (for messages).

    Notes
    -----
    ``n_threads`` (default 1) is the number of rayon threads of every call that does not
    pass its own; results do not depend on it. All outputs are float32.

    ``genohoption`` (default None: dense attention) is the kernels' ``genohoption``
    argument (:meth:`geneattn.models.genohoption.TokenGraph.kernel_arg` of a prior over this
    model's token ids): every layer then attends GenoHoption's way (seed 001), and the
    attention of :meth:`attention`, :meth:`attention_sums` and :meth:`module_sums` is each
    head's diffusion matrix.
    """

    def __init__(
        self,
        config: BertConfig,
        weights: BertWeights,
        *,
        version: str,
        token_dictionary: Mapping[str, int] | None = None,
        path: str | Path | None = None,
    ) -> None:
        if version not in ("V1", "V2"):
            raise InputError(f"version must be 'V1' or 'V2', got {version!r}", path)
        td = None if token_dictionary is None else dict(token_dictionary)
        if td and max(td.values()) >= config.vocab_size:
            raise InputError(
                f"the token dictionary has ids up to {max(td.values())} but the model has "
                f"{config.vocab_size} tokens",
                path,
            )
        self.cls_id: int | None = None
        self.eos_id: int | None = None
        if version == "V2":
            if td is None or CLS not in td or EOS not in td:
                raise InputError(
                    "a V2 model needs its token dictionary (with <cls> and <eos>): pass "
                    "token_dictionary=",
                    path,
                )
            self.cls_id, self.eos_id = td[CLS], td[EOS]
        self.config = config
        self.weights = weights
        self.version = version
        self.token_dictionary = td
        self.path = None if path is None else Path(path)
        self.n_threads = 1
        self.genohoption: dict | None = None

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        version: str | None = None,
        token_dictionary: str | Path | Mapping[str, int] | None = None,
        n_threads: int = 1,
    ) -> BertEncoder:
        """Read a Hugging Face model directory (``config.json`` + ``model.safetensors``).

        Parameters
        ----------
        path
            The directory.
        version
            ``"V1"`` or ``"V2"``; None infers it: V2 when the token dictionary has
            ``<cls>`` and ``<eos>``, else V1 when a dictionary is given or the model has
            2,048 positions. Other models need it stated.
        token_dictionary
            The checkpoint's token dictionary: a mapping, a ``gene_id<TAB>token`` TSV or
            Geneformer's ``.pkl`` (read with a restricted unpickler). Required for V2.
        n_threads
            Default rayon threads of the model's calls.

        Returns
        -------
        BertEncoder
            The model.

        Raises
        ------
        InputError
            A missing or malformed file, tensor or dictionary, or an undecidable version.
        """
        path = Path(path)
        if not path.is_dir():
            raise InputError("not a directory (expected a Hugging Face model directory)", path)
        config = BertConfig.read(path / "config.json")
        td = None if token_dictionary is None else load_token_dictionary(token_dictionary)
        if version is None:
            if td is not None:
                version = "V2" if CLS in td and EOS in td else "V1"
            elif config.max_position_embeddings == V1_INPUT_SIZE:
                version = "V1"
            elif config.max_position_embeddings == V2_INPUT_SIZE:
                raise InputError(
                    "looks like a Geneformer V2 model (4,096 positions): pass its token "
                    "dictionary (token_dictionary=) for the <cls> and <eos> ids",
                    path,
                )
            else:
                raise InputError(
                    f"cannot tell a Geneformer V1 from a V2 model with "
                    f"{config.max_position_embeddings} positions: pass version='V1' or 'V2'",
                    path,
                )
        model = cls(
            config,
            load_weights(path, config),
            version=version,
            token_dictionary=td,
            path=path,
        )
        model.n_threads = n_threads
        return model

    @property
    def n_layers(self) -> int:
        """Number of encoder layers."""
        return self.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        """Width of the hidden states and cell embeddings."""
        return self.config.hidden_size

    @property
    def max_len(self) -> int:
        """Longest input, special tokens included (``max_position_embeddings``)."""
        return self.config.max_position_embeddings

    def input_ids(
        self,
        tokens: np.ndarray,
        offsets: np.ndarray,
        vocabulary: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Model input ids of ranked token lists: mapped, truncated, special tokens added.

        Parameters
        ----------
        tokens, offsets
            Ragged ranked tokens (e.g. ``TokenizedCells.tokens`` and ``.offsets``).
        vocabulary
            Gene id of each token id (``TokenizedCells.vocabulary``). With a token
            dictionary, tokens are mapped to the checkpoint's ids by gene and genes it does
            not know are dropped; without one (V1), tokens are taken as the model's ids.

        Returns
        -------
        tuple[np.ndarray, np.ndarray]
            int32 ids and int64 offsets: at most ``max_len`` genes per cell for V1;
            ``<cls>``, at most ``max_len - 2`` genes and ``<eos>`` for V2.
        """
        remap = None
        if vocabulary is not None and self.token_dictionary is not None:
            remap = token_remap(np.asarray(vocabulary), self.token_dictionary)
        return model_input_ids(
            tokens,
            offsets,
            max_len=self.max_len,
            cls_id=self.cls_id,
            eos_id=self.eos_id,
            remap=remap,
        )

    def _inputs(self, ids: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Checked model inputs: lengths within ``max_len``, V2 cells framed by specials."""
        ids, offsets = check_ragged(ids, offsets)
        lengths = np.diff(offsets)
        if lengths.size and lengths.max() > self.max_len:
            c = int(np.argmax(lengths))
            raise InputError(
                f"cell {c} has {lengths[c]} input ids but the model takes at most "
                f"{self.max_len}; build inputs with input_ids(), which truncates"
            )
        if self.version == "V2" and lengths.size:
            starts, ends = offsets[:-1], offsets[1:]
            bad = (lengths < 2) | (ids[np.minimum(starts, ids.size - 1)] != self.cls_id)
            bad |= ids[np.maximum(ends - 1, 0)] != self.eos_id
            if ids.size == 0 or bad.any():
                c = int(np.argmax(bad)) if ids.size else 0
                raise InputError(
                    f"cell {c} is not framed by <cls> ({self.cls_id}) and <eos> "
                    f"({self.eos_id}) as V2 inputs must be; build inputs with input_ids()"
                )
        return ids, offsets

    def _layer(self, layer: int, top: int, what: str) -> int:
        """``layer`` in ``0 .. top - 1``, negative counting from the end."""
        if not -top <= layer < top:
            raise InputError(
                f"{what} {layer} is out of range for a model with {self.n_layers} layers"
            )
        return layer % top

    def forward(
        self,
        ids: np.ndarray,
        offsets: np.ndarray,
        *,
        hidden_layers: Sequence[int] = (),
        pool_layer: int | None = None,
        pool: str = "mean",
        attention_layers: Sequence[int] = (),
        per_head: bool = False,
        n_threads: int | None = None,
    ) -> dict[str, object]:
        """One kernel call: whatever combination of outputs, with non-negative indices.

        Parameters
        ----------
        ids, offsets
            Model input ids (see :meth:`input_ids`).
        hidden_layers
            ``hidden_states`` indices ``0 .. n_layers``, distinct.
        pool_layer
            ``hidden_states`` index of the pooled cell embedding, or None.
        pool
            ``"mean"`` over gene tokens or ``"cls"`` (V2: the ``<cls>`` vector).
        attention_layers
            Layers ``0 .. n_layers - 1``, distinct.
        per_head
            Attention per head instead of head-averaged.
        n_threads
            Rayon threads; None uses ``self.n_threads``.

        Returns
        -------
        dict[str, object]
            :func:`geneattn._kernels.bert_forward`'s dict: ``hidden``, ``pooled``,
            ``attention`` and ``attention_offsets``.
        """
        from geneattn import _kernels

        ids, offsets = self._inputs(ids, offsets)
        if pool not in ("mean", "cls"):
            raise InputError(f"pooling must be 'mean' or 'cls', got {pool!r}")
        if pool == "cls" and self.version != "V2":
            raise InputError("a V1 model has no <cls> token: use mean pooling")
        special = int(self.version == "V2")
        emb, layers = self.weights.kernel_args()
        return _kernels.bert_forward(
            ids,
            offsets,
            emb,
            layers,
            self.config.num_attention_heads,
            self.config.hidden_act,
            self.config.layer_norm_eps,
            hidden_layers=list(hidden_layers),
            pool_layer=pool_layer,
            pool="first" if pool == "cls" else "mean",
            skip_first=special,
            skip_last=special,
            attention_layers=list(attention_layers),
            per_head=per_head,
            n_threads=self.n_threads if n_threads is None else n_threads,
            genohoption=self.genohoption,
        )

    def encode_batch(
        self,
        ids: np.ndarray,
        offsets: np.ndarray,
        *,
        emb_layer: int = -1,
        pooling: str = "mean",
        n_threads: int | None = None,
    ) -> np.ndarray:
        """Cell embeddings, as Geneformer's ``EmbExtractor`` computes them.

        Parameters
        ----------
        ids, offsets
            Model input ids (see :meth:`input_ids`).
        emb_layer
            Geneformer's layer choice: 0 is the last layer's output, -1 (default) the one
            before; any value down to ``-n_layers`` (the embedding output). Layers after it
            are not run.
        pooling
            ``"mean"`` over the gene tokens (V2: ``<cls>`` and ``<eos>`` left out) or
            ``"cls"`` (V2 only).
        n_threads
            Rayon threads; None uses ``self.n_threads``.

        Returns
        -------
        np.ndarray
            float32 ``(n_cells, hidden_size)``; zero rows for cells without gene tokens.
        """
        if not -self.n_layers <= emb_layer <= 0:
            raise InputError(f"emb_layer must be between -{self.n_layers} and 0, got {emb_layer}")
        out = self.forward(
            ids, offsets, pool_layer=self.n_layers + emb_layer, pool=pooling, n_threads=n_threads
        )
        return out["pooled"]

    def encode_cells(
        self,
        cells: TokenizedCells,
        *,
        emb_layer: int = -1,
        pooling: str = "mean",
        n_threads: int | None = None,
    ) -> np.ndarray:
        """:meth:`encode_batch` of tokenized cells (mapped with :meth:`input_ids` first)."""
        ids, offsets = self.input_ids(cells.tokens, cells.offsets, cells.vocabulary)
        return self.encode_batch(
            ids, offsets, emb_layer=emb_layer, pooling=pooling, n_threads=n_threads
        )

    def hidden_states(
        self,
        ids: np.ndarray,
        offsets: np.ndarray,
        *,
        layers: Sequence[int] = (-1,),
        n_threads: int | None = None,
    ) -> dict[int, np.ndarray]:
        """Per-token hidden states (Hugging Face's ``hidden_states``).

        Parameters
        ----------
        ids, offsets
            Model input ids (see :meth:`input_ids`).
        layers
            ``hidden_states`` indices: 0 is the embedding output, ``n_layers`` (or -1) the
            last layer's output.
        n_threads
            Rayon threads; None uses ``self.n_threads``.

        Returns
        -------
        dict[int, np.ndarray]
            For each requested index (as given), float32 ``(n_tokens, hidden_size)``: cell
            ``c`` on rows ``offsets[c]:offsets[c + 1]``.
        """
        wanted = {k: self._layer(k, self.n_layers + 1, "hidden state") for k in layers}
        distinct = sorted(set(wanted.values()))
        out = self.forward(ids, offsets, hidden_layers=distinct, n_threads=n_threads)
        return {k: out["hidden"][distinct.index(v)] for k, v in wanted.items()}

    def attention(
        self,
        ids: np.ndarray,
        offsets: np.ndarray,
        *,
        layers: Sequence[int] = (-1,),
        heads: Sequence[int] | None = None,
        per_head: bool = False,
        n_threads: int | None = None,
    ) -> dict[int, list[np.ndarray]]:
        """Attention weights of every cell (rows are queries and sum to 1).

        Every cell's matrices are returned at once; for many cells use
        :meth:`iter_attention`, which holds a few cells at a time.

        Parameters
        ----------
        ids, offsets
            Model input ids (see :meth:`input_ids`).
        layers
            0-based layers; -1 is the last.
        heads
            Heads to keep (None: all).
        per_head
            One ``(n, n)`` matrix per kept head instead of their average.
        n_threads
            Rayon threads; None uses ``self.n_threads``.

        Returns
        -------
        dict[int, list[np.ndarray]]
            For each requested layer (as given), per cell: float32 ``(n, n)`` (the mean over
            the kept heads) or ``(n_kept_heads, n, n)``.
        """
        wanted = {k: self._layer(k, self.n_layers, "attention layer") for k in layers}
        distinct = sorted(set(wanted.values()))
        n_heads = self.config.num_attention_heads
        keep = None if heads is None else [self._head(h, n_heads) for h in heads]
        kernel_per_head = per_head or keep is not None
        out = self.forward(
            ids,
            offsets,
            attention_layers=distinct,
            per_head=kernel_per_head,
            n_threads=n_threads,
        )
        att_offsets = out["attention_offsets"]
        lengths = np.diff(check_ragged(ids, offsets)[1])
        result: dict[int, list[np.ndarray]] = {}
        for k, v in wanted.items():
            flat = out["attention"][distinct.index(v)]
            cells = []
            for c, n in enumerate(lengths):
                a = flat[att_offsets[c] : att_offsets[c + 1]]
                if not kernel_per_head:
                    cells.append(a.reshape(n, n))
                    continue
                a = a.reshape(n_heads, n, n)
                if keep is not None:
                    a = a[keep]
                cells.append(a if per_head else a.mean(axis=0, dtype=np.float32))
            result[k] = cells
        return result

    def iter_attention(
        self,
        ids: np.ndarray,
        offsets: np.ndarray,
        *,
        layer: int = -1,
        heads: Sequence[int] | None = None,
        per_head: bool = False,
        cells_per_call: int = CELLS_PER_CALL,
        n_threads: int | None = None,
    ) -> Iterator[tuple[int, np.ndarray]]:
        """``(cell index, attention)`` for every cell, computed a few cells at a time.

        Memory holds the matrices of at most ``cells_per_call`` cells; see
        :meth:`attention` for the arguments and the arrays.
        """
        ids, offsets = check_ragged(ids, offsets)
        if cells_per_call < 1:
            raise InputError(f"cells_per_call must be at least 1, got {cells_per_call}")
        n_cells = offsets.size - 1
        for c0 in range(0, n_cells, cells_per_call):
            c1 = min(c0 + cells_per_call, n_cells)
            lo, hi = offsets[c0], offsets[c1]
            part = self.attention(
                ids[lo:hi],
                offsets[c0 : c1 + 1] - lo,
                layers=(layer,),
                heads=heads,
                per_head=per_head,
                n_threads=n_threads,
            )[layer]
            for i, a in enumerate(part):
                yield c0 + i, a

    def attention_sums(
        self,
        ids: np.ndarray,
        offsets: np.ndarray,
        universe: np.ndarray,
        n_universe: int,
        *,
        layer: int = -1,
        heads: Sequence[int] | None = None,
        n_threads: int | None = None,
        sums: np.ndarray | None = None,
        incoming: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """One layer's attention of every cell, summed into gene x gene arrays in Rust.

        The sums :func:`geneattn._kernels.mha_aggregate_cells` takes over a study model,
        with this checkpoint's attention: per cell, ``A`` is the softmax attention of
        ``layer`` averaged over ``heads``, and ``sums[u_i, u_j] += A[i, j]`` for positions
        ``i``, ``j`` holding universe tokens, ``incoming[u_j] += sum_i A[i, j]`` over all
        query rows (V2's ``<cls>`` and ``<eos>`` included). No per-cell matrix reaches
        Python, and only the layers up to ``layer`` are run.

        Parameters
        ----------
        ids, offsets
            Model input ids (see :meth:`input_ids`).
        universe
            Integer array with one entry per model token id (``vocab_size``): its universe
            index in ``0 .. n_universe - 1``, or -1 for tokens outside the universe.
        n_universe
            Number of universe genes ``G``.
        layer
            0-based layer; -1 (default) is the last.
        heads
            Heads averaged, distinct (negative count from the end); None: all heads.
        n_threads
            Rayon threads; None uses ``self.n_threads``. The result is bit-identical for
            any value.
        sums, incoming
            Running float64 ``(G, G)`` and ``(G,)`` arrays (writeable, C-contiguous) to add
            into in place, both or neither: adding cells in several calls equals one call.

        Returns
        -------
        tuple[np.ndarray, np.ndarray]
            ``(sums, incoming)``, float64: the given arrays when passed, else new ones.

        Raises
        ------
        InputError
            A layer or head out of range, repeated heads, a universe of the wrong length
            or with entries outside ``-1 .. n_universe - 1``, or malformed inputs or sums.
        """
        from geneattn import _kernels

        args, layer, uni, keep = self._aggregate_args(ids, offsets, universe, layer, heads)
        return _kernel_call(
            _kernels.bert_aggregate_cells,
            *args,
            layer,
            uni,
            _count("n_universe", n_universe, 0),
            heads=keep,
            n_threads=self._threads(n_threads),
            genohoption=self.genohoption,
            sums=sums,
            incoming=incoming,
        )

    def module_sums(
        self,
        ids: np.ndarray,
        offsets: np.ndarray,
        universe: np.ndarray,
        modules: np.ndarray,
        n_modules: int,
        *,
        layer: int = -1,
        heads: Sequence[int] | None = None,
        n_threads: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per cell and gene module, one layer's attention among the module's genes, in Rust.

        :func:`geneattn._kernels.mha_module_cells` with this checkpoint's attention (``A``
        as in :meth:`attention_sums`).

        Parameters
        ----------
        ids, offsets
            Model input ids (see :meth:`input_ids`).
        universe
            Integer array with one entry per model token id: its universe index in
            ``0 .. len(modules) - 1``, or -1.
        modules
            Integer array with one entry per universe gene: its module in
            ``0 .. n_modules - 1``, or -1.
        n_modules
            Number of modules.
        layer
            0-based layer; -1 (default) is the last.
        heads
            Heads averaged, distinct (negative count from the end); None: all heads.
        n_threads
            Rayon threads; None uses ``self.n_threads``. The result is bit-identical for
            any value.

        Returns
        -------
        tuple[np.ndarray, np.ndarray]
            ``(sums, pairs)``, ``(n_cells, n_modules)`` float64 and int64: ``sums[c, k]``
            is ``A[i, j]`` summed over positions ``i``, ``j`` of cell ``c`` holding distinct
            genes of module ``k``, ``pairs[c, k]`` the number of ordered pairs of distinct
            module-``k`` genes in the cell.

        Raises
        ------
        InputError
            As :meth:`attention_sums`, and for modules of the wrong length or with entries
            outside ``-1 .. n_modules - 1``.
        """
        from geneattn import _kernels

        args, layer, uni, keep = self._aggregate_args(ids, offsets, universe, layer, heads)
        return _kernel_call(
            _kernels.bert_module_cells,
            *args,
            layer,
            uni,
            _int_array("modules", modules),
            _count("n_modules", n_modules, 0),
            heads=keep,
            n_threads=self._threads(n_threads),
            genohoption=self.genohoption,
        )

    def _aggregate_args(
        self,
        ids: np.ndarray,
        offsets: np.ndarray,
        universe: np.ndarray,
        layer: int,
        heads: Sequence[int] | None,
    ) -> tuple[tuple[object, ...], int, np.ndarray, list[int] | None]:
        """Checked arguments of the aggregation kernels.

        Returns ``(ids, offsets, embeddings, layers, n_heads, activation, eps)``, the
        non-negative layer, the universe as int64 and the non-negative distinct heads (or
        None).
        """
        ids, offsets = self._inputs(ids, offsets)
        layer = self._layer(_integer("layer", layer), self.n_layers, "attention layer")
        n_heads = self.config.num_attention_heads
        keep = None
        if heads is not None:
            keep = [self._head(_integer("a head", h), n_heads) for h in heads]
            if not keep or len(set(keep)) != len(keep):
                raise InputError(
                    f"heads must name distinct heads, got {list(heads)} (heads "
                    f"{sorted(keep)} of 0 .. {n_heads - 1})"
                )
        uni = _int_array("universe", universe)
        if uni.size != self.config.vocab_size:
            raise InputError(
                f"universe must have one entry per model token id ({self.config.vocab_size}), "
                f"got {uni.size}"
            )
        emb, layers = self.weights.kernel_args()
        c = self.config
        args = (ids, offsets, emb, layers, c.num_attention_heads, c.hidden_act, c.layer_norm_eps)
        return args, layer, uni, keep

    def _threads(self, n_threads: int | None) -> int:
        """``n_threads``, or the model's default for None."""
        return _count("n_threads", self.n_threads if n_threads is None else n_threads, 1)

    @staticmethod
    def _head(h: int, n_heads: int) -> int:
        if not -n_heads <= h < n_heads:
            raise InputError(f"head {h} is out of range for a model with {n_heads} heads")
        return h % n_heads


def _kernel_call(
    fn: Callable[..., tuple[np.ndarray, np.ndarray]], *args: object, **kwargs: object
) -> tuple[np.ndarray, np.ndarray]:
    """``fn(*args, **kwargs)`` with the kernel's argument errors as :class:`InputError`."""
    try:
        return fn(*args, **kwargs)
    except (TypeError, ValueError) as err:
        raise InputError(str(err)) from err


def _integer(name: str, value: int) -> int:
    """``value`` as an int, refusing floats, bools and the like."""
    try:
        if not isinstance(value, bool | np.bool_):
            return operator.index(value)
    except TypeError:
        pass
    raise InputError(f"{name} must be an integer, got {value!r}")


def _count(name: str, value: int, minimum: int) -> int:
    """``value`` as an int of at least ``minimum``."""
    v = _integer(name, value)
    if v < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return v


def _int_array(name: str, values: np.ndarray) -> np.ndarray:
    """``values`` as a C-contiguous 1-D int64 array, refusing non-integer input."""
    a = np.asarray(values)
    if a.ndim != 1 or not (a.size == 0 or np.issubdtype(a.dtype, np.integer)):
        raise InputError(f"{name} must be a 1-D integer array, got {a.dtype} {a.shape}")
    return np.ascontiguousarray(a, dtype=np.int64)
