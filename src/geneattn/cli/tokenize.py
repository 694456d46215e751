"""``geneattn tokenize``: Geneformer V1 rank-value tokens of the QC'd cells."""

from __future__ import annotations

import argparse

NAME = "tokenize"
HELP = "rank-value encode QC'd counts into Geneformer V1 tokens (tokens.npz)"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the tokenize options."""
    parser.add_argument("h5ad", help="QC'd counts (qc.h5ad; raw counts in X, obs n_counts)")
    parser.add_argument(
        "--token-dictionary", required=True, help="token dictionary (.tsv, or Geneformer's .pkl)"
    )
    parser.add_argument(
        "--medians-file", help="gene median dictionary (.tsv, or Geneformer's .pkl; V1 or V2)"
    )
    parser.add_argument("--gene-names", help="gene_name_id.tsv (symbol -> Ensembl ID)")
    parser.add_argument(
        "--gene-mapping",
        help="Geneformer's gene_mapping_file (.pkl, or .tsv gene_id<TAB>mapped_id): Ensembl "
        "IDs are mapped through it and IDs it lacks are dropped",
    )
    parser.add_argument("--gene-id", choices=["symbol", "ensembl"], default="symbol")
    parser.add_argument(
        "--medians",
        choices=["geneformer_v1", "dictionary", "corpus", "none"],
        default="geneformer_v1",
        help="geneformer_v1 and dictionary both use --medians-file",
    )
    parser.add_argument(
        "--attribute",
        action="append",
        default=[],
        metavar="COLUMN[=NAME]",
        help="carry obs COLUMN into tokens.npz as attribute NAME (repeatable; "
        "Geneformer's custom_attr_name_dict)",
    )
    parser.add_argument("--max-len", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1, help="rayon threads")
    parser.add_argument(
        "--chunk-cells",
        type=int,
        default=10_000,
        help="cells ranked at a time; their tokens are appended to --out as they come",
    )
    parser.add_argument("--out", required=True, help="tokens.npz to write")
    parser.add_argument("--summary", required=True, help="JSON summary to write")
    parser.add_argument(
        "--condition-column",
        help="obs column whose labels are counted among the tokenized cells (cells_by_label)",
    )


def run(args: argparse.Namespace) -> int:
    """Tokenize and write ``tokens.npz`` and the summary, both or neither."""
    from geneattn.errors import InputError
    from geneattn.resources.load import (
        load_gene_mapping,
        load_gene_medians,
        load_gene_name_map,
        load_token_dictionary,
    )
    from geneattn.tokenize_stream import tokenize_h5ad

    if args.chunk_cells < 1:
        raise InputError(f"--chunk-cells must be >= 1, got {args.chunk_cells}")
    if args.medians in ("geneformer_v1", "dictionary") and not args.medians_file:
        raise InputError(f"--medians {args.medians} needs --medians-file")
    if args.gene_id == "symbol" and not args.gene_names:
        raise InputError("--gene-id symbol needs --gene-names")
    tokenize_h5ad(
        args.h5ad,
        args.out,
        args.summary,
        token_dictionary=load_token_dictionary(args.token_dictionary),
        gene_medians=load_gene_medians(args.medians_file) if args.medians_file else None,
        name_map=load_gene_name_map(args.gene_names) if args.gene_names else None,
        gene_mapping=load_gene_mapping(args.gene_mapping) if args.gene_mapping else None,
        gene_id=args.gene_id,
        medians=args.medians,
        max_len=args.max_len,
        n_threads=args.threads,
        chunk_cells=args.chunk_cells,
        attributes=_attribute_names(args.attribute),
        condition_column=args.condition_column,
    )
    return 0


def _attribute_names(specs: list[str]) -> dict[str, str]:
    """``{obs column: attribute name}`` from ``COLUMN[=NAME]`` specifications."""
    out: dict[str, str] = {}
    for spec in specs:
        column, _, name = spec.partition("=")
        out[column] = name or column
    return out
