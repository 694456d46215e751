"""``geneattn tokenize``: Geneformer V1 rank-value tokens of the QC'd cells."""

from __future__ import annotations

import argparse
import json
import logging

NAME = "tokenize"
HELP = "rank-value encode QC'd counts into Geneformer V1 tokens (tokens.npz)"

log = logging.getLogger(__name__)


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
    from geneattn.cells import cells_by_label
    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.io.readers import read_stage_h5ad
    from geneattn.resources.load import (
        load_gene_mapping,
        load_gene_medians,
        load_gene_name_map,
        load_token_dictionary,
    )
    from geneattn.tokenize import condition_text, save_tokens, tokenize_anndata
    from geneattn.tokenize_stream import h5ad_blocks

    if args.chunk_cells < 1:
        raise InputError(f"--chunk-cells must be >= 1, got {args.chunk_cells}")
    try:
        blocks, _, _ = h5ad_blocks(args.h5ad, args.chunk_cells)
    except InputError as err:
        if "blocks of cells need" not in str(err):
            raise
        log.info("%s; reading it whole", err)
        blocks = None
    adata = read_stage_h5ad(args.h5ad, backed=blocks is not None)
    if blocks is not None:
        adata.file.close()  # obs and var stay in memory
    if args.medians in ("geneformer_v1", "dictionary") and not args.medians_file:
        raise InputError(f"--medians {args.medians} needs --medians-file")
    attributes = _attribute_names(args.attribute, adata.obs, args)
    if args.gene_id == "symbol" and not args.gene_names:
        raise InputError("--gene-id symbol needs --gene-names")
    options = dict(
        token_dictionary=load_token_dictionary(args.token_dictionary),
        gene_medians=load_gene_medians(args.medians_file) if args.medians_file else None,
        name_map=load_gene_name_map(args.gene_names) if args.gene_names else None,
        gene_mapping=load_gene_mapping(args.gene_mapping) if args.gene_mapping else None,
        gene_id=args.gene_id,
        medians=args.medians,
        max_len=args.max_len,
        n_threads=args.threads,
    )
    if blocks is not None:
        return _streamed(args, adata, blocks, options, attributes)
    cells, summary = tokenize_anndata(adata, **options, source=args.h5ad)
    summary["input"] = str(args.h5ad)
    if args.condition_column is not None:
        summary["cells_by_label"] = cells_by_label(
            adata.obs, args.condition_column, cells.cell_ids, source=args.h5ad
        )
    log.info(
        "%d of %d cells tokenized, %d genes with tokens, median length %.0f",
        summary["cells_out"],
        summary["cells_in"],
        summary["genes_tokenized"],
        summary["length_median"],
    )
    with atomic_path(args.summary) as tmp_summary:
        tmp_summary.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        names = adata.obs_names
        rows = names.get_indexer(cells.cell_ids.astype(str)) if names.is_unique else None
        obs = adata.obs.iloc[rows] if rows is not None else None
        save_tokens(
            args.out,
            cells,
            attributes={
                name: adata.obs[column].astype(str).reindex(cells.cell_ids.astype(str)).to_numpy()
                for column, name in attributes.items()
            },
            obs_rows=rows,
            conditions=(
                (args.condition_column, condition_text(obs, args.condition_column))
                if obs is not None and args.condition_column is not None
                else None
            ),
        )
    return 0


def _streamed(args: argparse.Namespace, adata, blocks, options: dict, attributes) -> int:
    """Tokenize a block of cells at a time, appending the tokens to ``--out``."""
    import numpy as np

    from geneattn.cells import cells_by_label
    from geneattn.io.atomic import atomic_path
    from geneattn.tokenize import condition_text, study_gene_names
    from geneattn.tokenize_stream import tokenize_blocks

    obs = adata.obs
    if "n_counts" in obs:
        n_counts = obs["n_counts"].to_numpy(dtype=np.float64)
    else:
        log.warning("%s has no obs['n_counts']; using row sums of X", args.h5ad)
        n_counts = np.concatenate([np.asarray(x.sum(axis=1)).ravel() for _, _, x in blocks()])
    if args.condition_column is not None:
        cells_by_label(obs, args.condition_column, np.zeros(0, dtype=str), source=args.h5ad)
    with atomic_path(args.summary) as tmp_summary, atomic_path(args.out) as tmp_tokens:
        cell_ids, summary = tokenize_blocks(
            blocks,
            study_gene_names(adata, gene_id=options["gene_id"]),
            tmp_tokens,
            cell_ids=adata.obs_names.to_numpy(),
            n_counts=n_counts,
            attributes={
                name: obs[column].astype(str).to_numpy() for column, name in attributes.items()
            },
            conditions=(
                (args.condition_column, condition_text(obs, args.condition_column))
                if args.condition_column is not None
                else None
            ),
            **options,
        )
        summary["input"] = str(args.h5ad)
        if args.condition_column is not None:
            summary["cells_by_label"] = cells_by_label(
                obs, args.condition_column, cell_ids, source=args.h5ad
            )
        log.info(
            "%d of %d cells tokenized, %d genes with tokens, median length %.0f",
            summary["cells_out"],
            summary["cells_in"],
            summary["genes_tokenized"],
            summary["length_median"],
        )
        tmp_summary.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 0


def _attribute_names(specs: list[str], obs, args: argparse.Namespace) -> dict[str, str]:
    """``{obs column: attribute name}`` from ``COLUMN[=NAME]`` specifications, checked."""
    from geneattn.errors import InputError

    out: dict[str, str] = {}
    for spec in specs:
        column, _, name = spec.partition("=")
        if column not in obs.columns:
            raise InputError(
                f"--attribute: no obs column {column!r} (columns: "
                f"{', '.join(map(str, obs.columns))})",
                args.h5ad,
            )
        out[column] = name or column
    if len(set(out.values())) != len(out):
        raise InputError("--attribute: two columns get the same name")
    return out
