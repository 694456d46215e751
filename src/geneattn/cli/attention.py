"""``geneattn attention``: attention of one condition's cells summed over the gene universe."""

from __future__ import annotations

import argparse
import logging

NAME = "attention"
HELP = "sum per-cell attention of one condition (or one shard of it) into gene x gene arrays"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the attention options."""
    from geneattn.shards import add_shard_arguments

    parser.add_argument("tokens", help="tokens.npz of all QC'd cells")
    parser.add_argument(
        "--model", required=True, help="model.npz, or model.json naming a checkpoint"
    )
    parser.add_argument("--obs", required=True, help="qc.h5ad whose obs hold the conditions")
    parser.add_argument("--condition-column", required=True, help="obs column of conditions")
    parser.add_argument("--condition", required=True, help="the condition label to sum over")
    parser.add_argument(
        "--universe-table", help="universe.tsv of `geneattn universe` (else chosen here)"
    )
    add_universe_arguments(parser)
    add_shard_arguments(parser)
    parser.add_argument("--threads", type=int, default=1, help="rayon threads")
    parser.add_argument("--out", required=True, help="attention-sums .npz to write")


def add_universe_arguments(parser: argparse.ArgumentParser) -> None:
    """The options that choose the gene universe (shared with ``geneattn universe``)."""
    parser.add_argument("--gene-names", help="gene_name_id.tsv (symbols of the universe genes)")
    parser.add_argument("--min-cells", type=int, default=10, help="universe: min cells per gene")
    parser.add_argument("--max-genes", type=int, default=2000, help="universe: most genes kept")
    parser.add_argument(
        "--universe",
        choices=["frequent", "variable"],
        default="frequent",
        help="universe: the most frequent genes, or the most variable (scanpy HVG on --obs)",
    )


def run(args: argparse.Namespace) -> int:
    """Take the universe (a table, or chosen from all cells), sum the condition's shard."""
    from geneattn.attention import aggregate_attention
    from geneattn.attention_sums import save_attention_sums
    from geneattn.errors import InputError
    from geneattn.models import load_model
    from geneattn.shards import check_shard_arguments, describe
    from geneattn.tokenize import load_tokens

    if args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    check_shard_arguments(args)
    model = load_model(args.model)
    labels, var_names = _read_obs(args.obs, args.condition_column)
    shard, n_chosen = condition_shard(labels, args)
    # a universe chosen here needs every cell; a universe table only the vocabulary
    cells = shard if args.universe_table is not None else load_tokens(args.tokens)
    universe, symbols = gene_universe(args, cells, var_names)
    log.info(
        "%s: %s, %d of %d cells, universe of %d genes",
        args.condition,
        describe(args),
        shard.n_cells,
        n_chosen,
        len(universe),
    )

    def progress(done: int, total: int) -> None:
        log.info("%s: %d/%d cells (%.0f%%)", args.condition, done, total, 100 * done / total)

    sums = aggregate_attention(
        shard,
        model,
        universe,
        n_threads=args.threads,
        condition=args.condition,
        gene_symbols=symbols,
        progress=progress,
    )
    save_attention_sums(args.out, sums)
    log.info("wrote %s", args.out)
    return 0


def gene_universe(args: argparse.Namespace, cells, var_names):
    """Tokens and symbols of the universe: ``--universe-table``, or chosen from all cells.

    Without a table the universe is the most frequent tokens (``--universe frequent``) or
    the most variable genes of the counts in ``--obs`` (``variable``); symbols come from
    ``--gene-names``, preferring the study's own gene names.
    """
    import numpy as np

    from geneattn.attention import choose_universe, load_universe, symbols_for
    from geneattn.errors import InputError
    from geneattn.resources.load import load_gene_name_map

    if getattr(args, "universe_table", None) is not None:
        return load_universe(args.universe_table, cells.vocabulary)
    if args.gene_names is None:
        raise InputError("choosing the universe needs --gene-names (or give --universe-table)")
    name_map = load_gene_name_map(args.gene_names)
    if args.universe == "variable":
        universe = _variable_universe(args, cells, name_map)
    else:
        universe = choose_universe(cells, min_cells=args.min_cells, max_genes=args.max_genes)
    gene_ids = np.asarray(cells.vocabulary)[universe].astype(str)
    return universe, symbols_for(gene_ids, name_map, preferred=set(var_names))


def condition_shard(labels, args: argparse.Namespace):
    """Shard ``args.shard`` (see :mod:`geneattn.shards`) of the tokenized cells labelled
    ``args.condition``, read from ``args.tokens``, and how many cells carry that label.

    Only the shard's cells' tokens are read (:func:`geneattn.tokenize.load_tokens` with
    ``cells=``), so the job's memory follows the shard, not the study. ``labels`` is the
    obs condition column indexed by cell id (from :func:`_read_obs`); tokenized cells
    without a label are left out with a warning. An unknown condition is an
    :class:`~geneattn.errors.InputError` naming ``args.obs`` and the labels present.
    """
    import numpy as np

    from geneattn.errors import InputError
    from geneattn.shards import shard_of
    from geneattn.tokenize import load_cell_ids, load_tokens

    joined = labels.reindex(load_cell_ids(args.tokens).astype(str))
    cell_labels = joined.to_numpy()
    unlabelled = int(joined.isna().sum())
    if unlabelled:
        log.warning(
            "%d tokenized cells have no label in %s; they are left out", unlabelled, args.obs
        )
    present = sorted({str(x) for x in labels.dropna().unique()})
    if args.condition not in present:
        raise InputError(
            f"condition {args.condition!r} not in column {args.condition_column!r}"
            f" (labels: {', '.join(present)})",
            args.obs,
        )
    chosen = np.flatnonzero(cell_labels.astype(object) == args.condition)
    start, stop = shard_of(len(chosen), args)
    return load_tokens(args.tokens, cells=chosen[start:stop]), len(chosen)


def labelled_cells(cell_ids, path: str, column: str, label: str):
    """Positions among ``cell_ids`` (of the tokenized cells) of the cells whose ``column``
    in the obs of ``path`` is ``label``.

    Raises
    ------
    InputError
        No tokenized cell carries the label (naming ``path``).
    """
    import numpy as np

    from geneattn.errors import InputError

    labels, _ = _read_obs(path, column)
    cell_labels = labels.reindex(np.asarray(cell_ids).astype(str)).to_numpy().astype(object)
    index = np.flatnonzero(cell_labels == label)
    if len(index) == 0:
        raise InputError(f"no cell labelled {label!r} in {column!r}", path)
    return index


def _variable_universe(args: argparse.Namespace, cells, name_map):
    """:func:`geneattn.attention.highly_variable_universe` of the counts in ``--obs``."""
    from geneattn.attention import highly_variable_universe
    from geneattn.io.readers import read_stage_h5ad

    adata = read_stage_h5ad(args.obs)
    gene_ids = _column_gene_ids(adata, name_map)
    return highly_variable_universe(
        cells, adata.X, gene_ids, min_cells=args.min_cells, max_genes=args.max_genes
    )


def _column_gene_ids(adata, name_map):
    """Ensembl ID of each column ("" when unknown), as the tokenizer maps them.

    A symbol goes through the symbol -> Ensembl map; a name that is an Ensembl ID, or a
    ``var['gene_ids']`` entry that is one, is used as it is (version suffix removed).
    """
    import numpy as np

    names = adata.var_names.astype(str).tolist()
    if "gene_ids" in adata.var.columns:
        ids = adata.var["gene_ids"].astype(str).tolist()
    else:
        ids = [""] * len(names)

    def ensembl(name: str, gene_id: str) -> str:
        for candidate in (name, gene_id):
            if candidate.startswith("ENS"):
                return candidate.split(".")[0]
        return name_map.get(name, "")

    return np.array([ensembl(n, g) for n, g in zip(names, ids, strict=True)], dtype=object)


def _read_obs(path: str, column: str):
    """The condition column of an h5ad's obs (indexed by cell id) and its var names."""
    import anndata as ad

    from geneattn.errors import InputError

    try:
        adata = ad.read_h5ad(path, backed="r")
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except OSError as err:
        raise InputError(f"cannot read as h5ad ({err})", path) from None
    try:
        obs, var_names = adata.obs, adata.var_names.astype(str).tolist()
    finally:
        adata.file.close()
    if column not in obs.columns:
        raise InputError(
            f"no obs column {column!r} (columns: {', '.join(map(str, obs.columns))})", path
        )
    if obs.index.has_duplicates:
        raise InputError("duplicated cell ids in obs", path)
    labels = obs[column].astype(object)
    labels.index = obs.index.astype(str)
    return labels, var_names
