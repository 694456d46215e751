"""``ga.tl.model`` and ``ga.tl.embed``: the attention model and the cell embeddings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from geneattn import defaults
from geneattn.store import MODEL_KEY, get_model, get_tokens, model_to_uns, record

if TYPE_CHECKING:
    import anndata as ad

    from geneattn.models.protocol import AttentionModel


def model(
    adata: ad.AnnData,
    *,
    checkpoint: str | Path | None = None,
    d_model: int = 64,
    n_heads: int = 4,
    temperature: float = 8.0,
    seed: int = 42,
    token_dictionary: str | Path | Mapping[str, int] | None = None,
    gene_names: str | Path | Mapping[str, str] | None = None,
    checkpoint_token_dictionary: str | Path | None = None,
    version: str | None = None,
    emb_layer: int = -1,
    pooling: str = "mean",
    attention_layer: int = -1,
    attention_heads: Sequence[int] | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """The attention model of the study (the ``model`` rule).

    Without ``checkpoint``, the study-derived model
    (:func:`geneattn.models.study.study_model_from_anndata`): gene embeddings from the PCA
    loadings of the QC'd counts in ``X``, identity projections (config ``model.kind:
    study_pca``). With ``checkpoint``, a pretrained Geneformer directory run in Rust, with
    the layer, pooling and head choices (config ``model.kind: checkpoint``).

    Parameters
    ----------
    adata
        QC'd counts (:func:`geneattn.pp.qc`); for the study model, tokenized with the same
        gene names (:func:`geneattn.pp.tokenize`'s ``gene_id``).
    checkpoint
        Hugging Face model directory (``config.json``, ``model.safetensors``); None for the
        study model.
    d_model, n_heads, temperature, seed
        The study model (config ``model``).
    token_dictionary, gene_names
        The study model's token dictionary and symbol -> Ensembl map (None: the pinned V1
        files).
    checkpoint_token_dictionary, version, emb_layer, pooling, attention_layer, attention_heads
        The checkpoint (config ``model.token_dictionary``, ``version``, ...).
    copy
        Return a copy instead of changing ``adata``.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``; otherwise ``uns["attention_model"]`` holds the model (a
        study model's weights, or the checkpoint's manifest: its paths and sha256) and its
        ``params``.
    """
    from geneattn.models.checkpoint import checkpoint_manifest
    from geneattn.models.study import study_model_from_anndata

    adata = adata.copy() if copy else adata
    if checkpoint is not None:
        chosen, manifest = checkpoint_manifest(
            checkpoint,
            token_dictionary=checkpoint_token_dictionary,
            version=version,
            emb_layer=emb_layer,
            pooling=pooling,
            attention_layer=attention_layer,
            attention_heads=attention_heads,
        )
        stored = model_to_uns(chosen, manifest=manifest)
    else:
        gene_id = str(adata.uns.get("tokenize", {}).get("params", {}).get("gene_id", "symbol"))
        chosen = study_model_from_anndata(
            adata,
            token_dictionary=defaults.token_dictionary(token_dictionary),
            name_map=(
                defaults.name_map(gene_names)
                if gene_id == "symbol" or gene_names is not None
                else None
            ),
            gene_id=gene_id,
            d_model=d_model,
            n_heads=n_heads,
            temperature=temperature,
            seed=seed,
        )
        stored = model_to_uns(chosen)
    options = {
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "d_model": d_model,
        "n_heads": n_heads,
        "temperature": temperature,
        "seed": seed,
    }
    if checkpoint is not None:
        options.update(
            checkpoint_token_dictionary=(
                None if checkpoint_token_dictionary is None else str(checkpoint_token_dictionary)
            ),
            version=version,
            emb_layer=emb_layer,
            pooling=pooling,
            attention_layer=attention_layer,
            attention_heads=None if attention_heads is None else [int(h) for h in attention_heads],
        )
    record(adata, MODEL_KEY, options, **stored)
    return adata if copy else None


def embed(
    adata: ad.AnnData,
    *,
    model: AttentionModel | str | Path | None = None,
    n_threads: int | None = None,
    copy: bool = False,
) -> ad.AnnData | None:
    """Cell embeddings (the ``embed`` rule, :func:`geneattn.embeddings.embedding_anndata`).

    Parameters
    ----------
    adata
        Tokenized cells (:func:`geneattn.pp.tokenize`).
    model
        An :class:`~geneattn.models.protocol.AttentionModel`, a model file (``model.npz``,
        ``model.json``), or None for the one :func:`model` stored.
    n_threads
        Rayon threads (None: every core).
    copy
        Return a copy instead of changing ``adata``.

    Returns
    -------
    anndata.AnnData or None
        The copy when ``copy``; otherwise ``obsm["X_geneattn"]`` (float32, cells x
        ``d_model``: the study model's mean-pooled attention output, or Geneformer's
        ``EmbExtractor`` embedding of a checkpoint) and ``uns["embed"]["params"]`` (the
        model's params).
    """
    from geneattn.embeddings import EMBEDDING_KEY, MODEL_KEY, embedding_anndata

    adata = adata.copy() if copy else adata
    out = embedding_anndata(
        get_tokens(adata), get_model(adata, model), adata.obs, n_threads=defaults.threads(n_threads)
    )
    adata.obsm[EMBEDDING_KEY] = out.obsm[EMBEDDING_KEY]
    record(adata, "embed", out.uns[MODEL_KEY])
    return adata if copy else None
