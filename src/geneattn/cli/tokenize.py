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
    parser.add_argument("--token-dictionary", required=True, help="token_dictionary.tsv")
    parser.add_argument("--medians-file", help="gene_median_dictionary.tsv (Geneformer V1)")
    parser.add_argument("--gene-names", help="gene_name_id.tsv (symbol -> Ensembl ID)")
    parser.add_argument("--gene-id", choices=["symbol", "ensembl"], default="symbol")
    parser.add_argument(
        "--medians", choices=["geneformer_v1", "corpus", "none"], default="geneformer_v1"
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
    import numpy as np

    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.io.readers import read_stage_h5ad
    from geneattn.resources.load import load_gene_medians, load_gene_name_map, load_token_dictionary
    from geneattn.tokenize import save_tokens, tokenize_counts
    from geneattn.tokenize_stream import h5ad_blocks, tokenize_blocks

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
        adata.file.close()
    if "n_counts" in adata.obs:
        n_counts = adata.obs["n_counts"].to_numpy(dtype=np.float64)
    else:
        log.warning("%s has no obs['n_counts']; using row sums of X", args.h5ad)
        n_counts = None
    if args.medians == "geneformer_v1" and not args.medians_file:
        raise InputError("--medians geneformer_v1 needs --medians-file")
    if args.gene_id == "symbol" and not args.gene_names:
        raise InputError("--gene-id symbol needs --gene-names")

    var_names = adata.var_names.to_numpy()
    if args.gene_id == "ensembl" and "gene_ids" in adata.var and not _looks_ensembl(var_names):
        # 10x files name genes by symbol and keep the Ensembl IDs in var["gene_ids"]
        log.info("var_names are not Ensembl IDs; using var['gene_ids']")
        var_names = adata.var["gene_ids"].astype(str).to_numpy()
    options = dict(
        token_dictionary=load_token_dictionary(args.token_dictionary),
        gene_medians=load_gene_medians(args.medians_file) if args.medians_file else None,
        name_map=load_gene_name_map(args.gene_names) if args.gene_names else None,
        gene_id=args.gene_id,
        medians=args.medians,
        max_len=args.max_len,
        n_threads=args.threads,
    )
    if blocks is not None:
        if args.condition_column is not None and args.condition_column not in adata.obs.columns:
            _cells_by_label(adata.obs, args.condition_column, None, args)
        if n_counts is None:
            n_counts = _row_sums(blocks)
        # tokens of each block are appended to the output as they come
        with atomic_path(args.summary) as tmp_summary, atomic_path(args.out) as tmp_tokens:
            cell_ids, summary = tokenize_blocks(
                blocks,
                var_names,
                tmp_tokens,
                cell_ids=adata.obs_names.to_numpy(),
                n_counts=n_counts,
                **options,
            )
            summary["input"] = str(args.h5ad)
            if args.condition_column is not None:
                summary["cells_by_label"] = _cells_by_label(
                    adata.obs, args.condition_column, cell_ids, args
                )
            _log_summary(summary)
            tmp_summary.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return 0
    cells, summary = tokenize_counts(
        adata.X, var_names, cell_ids=adata.obs_names.to_numpy(), n_counts=n_counts, **options
    )
    summary["input"] = str(args.h5ad)
    if args.condition_column is not None:
        summary["cells_by_label"] = _cells_by_label(
            adata.obs, args.condition_column, cells.cell_ids, args
        )
    _log_summary(summary)
    with atomic_path(args.summary) as tmp_summary:
        tmp_summary.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        save_tokens(args.out, cells)
    return 0


def _log_summary(summary: dict) -> None:
    log.info(
        "%d of %d cells tokenized, %d genes with tokens, median length %.0f",
        summary["cells_out"],
        summary["cells_in"],
        summary["genes_tokenized"],
        summary["length_median"],
    )


def _row_sums(blocks):
    """Total counts of every cell, from blocks of its counts."""
    import numpy as np

    parts = [np.asarray(x.sum(axis=1)).ravel() for _, _, x in blocks()]
    return np.concatenate(parts).astype(np.float64)


def _cells_by_label(obs, column: str, cell_ids, args: argparse.Namespace) -> dict[str, int]:
    """Tokenized cells per label of ``obs[column]`` (what the workflow shards by)."""
    from geneattn.errors import InputError

    if column not in obs.columns:
        raise InputError(
            f"no obs column {column!r} (columns: {', '.join(map(str, obs.columns))})", args.h5ad
        )
    if cell_ids is None:
        return {}
    labels = obs[column].astype(str).reindex(cell_ids.astype(str))
    return {str(k): int(v) for k, v in sorted(labels.value_counts().items())}


def _looks_ensembl(names) -> bool:
    """True when most names are Ensembl gene IDs."""
    head = [str(n) for n in names[:200]]
    return sum(n.startswith("ENS") for n in head) > len(head) // 2
