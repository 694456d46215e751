"""Loaders of the converted resources: token dictionary, gene medians, symbol map, PPI
prior and gene sets.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from geneattn.errors import InputError

if TYPE_CHECKING:
    import pandas as pd


# --------------------------------------------------------------------------------------------
# Loaders for the other stages
# --------------------------------------------------------------------------------------------


def _read_pairs(path: str | Path, header: tuple[str, str]) -> list[tuple[int, str, str]]:
    """Rows (line number, key, value) of a two-column TSV with a fixed header; unique keys."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read: {err}", path) from None
    if not lines or tuple(lines[0].split("\t")) != header:
        raise InputError(f"expected the header {'<TAB>'.join(header)}", path)
    rows, seen = [], set()
    for line_no, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise InputError(f"line {line_no}: expected 2 non-empty fields", path)
        if fields[0] in seen:
            raise InputError(f"line {line_no}: {fields[0]} is listed twice", path)
        seen.add(fields[0])
        rows.append((line_no, fields[0], fields[1]))
    return rows


def load_token_dictionary(source: str | Path | Mapping[str, int]) -> dict[str, int]:
    """A Geneformer token dictionary: gene ID (and specials such as ``<pad>``) -> token.

    Parameters
    ----------
    source
        ``token_dictionary.tsv`` (header ``gene_id<TAB>token``, as ``geneattn
        fetch-resources`` writes it), Geneformer's pickled dictionary (``.pkl``, read with a
        restricted unpickler that rebuilds nothing but a dict of strings and numbers), or a
        mapping.

    Returns
    -------
    dict[str, int]
        Token of every entry; tokens are distinct non-negative integers.

    Raises
    ------
    InputError
        Unreadable file, bad header or token, an entry listed twice, or two entries that
        share a token (naming the file).
    """
    from geneattn.resources.convert import _unpickle_dict

    origin: str | Path | None = None
    if isinstance(source, Mapping):
        tokens = dict(source)
    elif _is_pickle(source):
        origin = Path(source)
        try:
            with origin.open("rb") as fh:
                tokens = _unpickle_dict(fh, str(origin))
        except OSError as err:
            raise InputError(f"cannot read: {err}", origin) from None
    else:
        origin = source
        tokens = {}
        for line_no, gene, text in _read_pairs(source, ("gene_id", "token")):
            if not text.isdigit():
                raise InputError(
                    f"line {line_no}: token {text!r} is not a non-negative integer", source
                )
            tokens[gene] = int(text)
    bad = [
        k
        for k, v in tokens.items()
        if not isinstance(k, str) or isinstance(v, bool) or not isinstance(v, int) or v < 0
    ]
    if bad:
        raise InputError(
            f"token dictionary entry {bad[0]!r} is not a gene id with a non-negative token",
            origin,
        )
    if len(set(tokens.values())) != len(tokens):
        raise InputError("two entries of the token dictionary share a token", origin)
    return tokens


def _load_pickled_dict(path: str | Path) -> dict:
    """A Geneformer dictionary pickle, read with the restricted unpickler only."""
    from geneattn.resources.convert import _unpickle_dict

    try:
        with Path(path).open("rb") as fh:
            return _unpickle_dict(fh, str(path))
    except OSError as err:
        raise InputError(f"cannot read: {err}", path) from None


def _is_pickle(path: str | Path) -> bool:
    return Path(path).suffix in (".pkl", ".pickle")


def load_gene_medians(path: str | Path) -> dict[str, float]:
    """Read a gene median dictionary: Ensembl gene ID -> nonzero median expression.

    Parameters
    ----------
    path
        ``gene_median_dictionary.tsv`` (header ``gene_id<TAB>median``), or Geneformer's
        pickle (``.pkl``, e.g. V2's ``gene_median_dictionary_gc104M.pkl``, read with the
        restricted unpickler).

    Returns
    -------
    dict[str, float]
        Positive finite median of every gene.
    """
    if _is_pickle(path):
        from geneattn.resources.convert import _check_items

        raw = _check_items(_load_pickled_dict(path), (float, int), str(path))
        for gene, value in raw.items():
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"gene {gene}: median {value!r} is not a positive number", path)
        return {gene: float(value) for gene, value in raw.items()}
    medians: dict[str, float] = {}
    for line_no, gene, text in _read_pairs(path, ("gene_id", "median")):
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"line {line_no}: median {text!r} is not a positive number", path)
        medians[gene] = value
    return medians


def load_gene_name_map(path: str | Path) -> dict[str, str]:
    """Read ``gene_name_id.tsv``: gene symbol -> Ensembl gene ID.

    Parameters
    ----------
    path
        TSV with header ``symbol<TAB>gene_id``.

    Returns
    -------
    dict[str, str]
        Ensembl ID of every symbol (several symbols may share an ID).
    """
    return {symbol: gene for _, symbol, gene in _read_pairs(path, ("symbol", "gene_id"))}


def load_gene_mapping(path: str | Path) -> dict[str, str]:
    """Read a gene ID mapping (Geneformer's ``gene_mapping_file``): gene ID -> dictionary ID.

    Geneformer's tokenizer maps each input Ensembl ID (upper-cased) through this dictionary
    (e.g. ``ensembl_mapping_dict_gc104M.pkl``) to the ID its token dictionary knows, summing
    the counts of IDs that map to one; IDs the mapping lacks are dropped.

    Parameters
    ----------
    path
        TSV with header ``gene_id<TAB>mapped_id``, or Geneformer's pickle (``.pkl``,
        restricted unpickler).

    Returns
    -------
    dict[str, str]
        The mapped ID of every listed gene ID.
    """
    if _is_pickle(path):
        from geneattn.resources.convert import _check_items

        raw = _check_items(_load_pickled_dict(path), (str,), str(path))
        for gene, mapped in raw.items():
            if not mapped or "\t" in mapped or "\n" in mapped:
                raise InputError(f"gene {gene}: bad mapped ID {mapped!r}", path)
        return raw
    return {gene: mapped for _, gene, mapped in _read_pairs(path, ("gene_id", "mapped_id"))}


def load_ppi(path: str | Path) -> pd.DataFrame:
    """Read a PPI edge list (``ppi/h_sapiens.tsv``).

    Parameters
    ----------
    path
        TSV with header ``gene_a<TAB>gene_b<TAB>confidence``.

    Returns
    -------
    pandas.DataFrame
        Columns ``gene_a``, ``gene_b`` (str) and ``confidence`` (float64, finite), one row per
        edge as listed (duplicates are kept).
    """
    import pandas as pd

    columns = ["gene_a", "gene_b", "confidence"]
    try:
        edges = pd.read_csv(
            path, sep="\t", dtype={"gene_a": str, "gene_b": str}, keep_default_na=False
        )
    except (OSError, ValueError, pd.errors.ParserError) as err:
        raise InputError(f"cannot read the edge list: {err}", path) from None
    if list(edges.columns) != columns:
        raise InputError(f"expected columns {columns}, found {list(edges.columns)}", path)
    confidence = pd.to_numeric(edges["confidence"], errors="coerce").astype(np.float64)
    bad = ~np.isfinite(confidence.to_numpy()) | (edges["gene_a"] == "") | (edges["gene_b"] == "")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"line {row + 2}: bad edge {edges.iloc[row].tolist()}", path)
    return edges.assign(confidence=confidence)


def read_gmt(path: str | Path) -> dict[str, list[str]]:
    """Read a GMT gene set file.

    Parameters
    ----------
    path
        One set per line: name, description, then genes, tab separated. Empty gene fields
        are ignored and repeated genes kept once.

    Returns
    -------
    dict[str, list[str]]
        Genes of every set, in file order.
    """
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read: {err}", path) from None
    sets: dict[str, list[str]] = {}
    for line_no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        genes = list(dict.fromkeys(g for g in fields[2:] if g))
        if len(fields) < 3 or not fields[0] or not genes:
            raise InputError(f"line {line_no}: expected name, description and genes", path)
        if fields[0] in sets:
            raise InputError(f"line {line_no}: gene set {fields[0]} is listed twice", path)
        sets[fields[0]] = genes
    if not sets:
        raise InputError("no gene sets", path)
    return sets
