"""Attention models behind one protocol.

- :mod:`~geneattn.models.protocol`: :class:`AttentionModel`, what every stage asks of a model;
- :mod:`~geneattn.models.study`: the study-derived default model;
- :mod:`~geneattn.models.checkpoint`: a pretrained Geneformer checkpoint as a model, with the
  workflow's choices of layers, heads and pooling, and its manifest;
- :mod:`~geneattn.models.bert`, :mod:`~geneattn.models.bert_weights`,
  :mod:`~geneattn.models.inputs`: the Rust BERT encoder, its weights and its input ids;
- :mod:`~geneattn.models.geneformer`, :mod:`~geneattn.models.sckgbert`,
  :mod:`~geneattn.models.knowledge`: the seed interfaces (exported as ``geneattn.*``).
"""

from __future__ import annotations

from pathlib import Path

from geneattn.models.protocol import AttentionModel

__all__ = ["AttentionModel", "load_model"]


def load_model(path: str | Path) -> AttentionModel:
    """The model a stage's ``--model`` file holds.

    Parameters
    ----------
    path
        ``model.npz`` (study-derived weights,
        :func:`~geneattn.models.study.save_study_model`) or ``model.json`` (a checkpoint
        manifest, :func:`~geneattn.models.checkpoint.write_manifest`).

    Returns
    -------
    AttentionModel
        The loaded model.

    Raises
    ------
    InputError
        The file is missing or malformed, or the checkpoint changed since its manifest.
    """
    if Path(path).suffix == ".json":
        from geneattn.models.checkpoint import load_manifest

        return load_manifest(path)
    from geneattn.models.study import load_study_model

    return load_study_model(path)
