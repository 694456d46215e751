"""``geneattn evaluate``: enrichment fraction and known-program cohesion of the modules."""

from __future__ import annotations

import argparse

NAME = "evaluate"
HELP = "measure whether modules are meaningful: enriched fraction, known programs together"


def _program(text: str) -> tuple[str, list[str]]:
    name, _, genes = text.partition("=")
    if not name or not genes:
        raise argparse.ArgumentTypeError(f"expected NAME=GENE1,GENE2,..., got {text!r}")
    return name, [g for g in genes.split(",") if g]


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the evaluate options."""
    parser.add_argument("--modules", required=True, help="modules.tsv")
    parser.add_argument("--enrichment", required=True, help="enrichment.tsv")
    parser.add_argument(
        "--program",
        type=_program,
        action="append",
        metavar="NAME=G1,G2,...",
        help="a known program (repeat); default: T-cell cytotoxicity, Treg, proliferation, IFN",
    )
    parser.add_argument("--fdr", type=float, default=0.05)
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    base = parser.add_argument_group(
        "baselines on the same cells and genes (co-expression modules, PCA, random vectors)"
    )
    base.add_argument("--counts", help="QC'd counts (qc.h5ad): compare with co-expression modules")
    base.add_argument("--markers", help="human_immune_cell_markers.json: more known programs")
    base.add_argument("--embeddings", help="embeddings.h5ad (obsm X_geneattn)")
    base.add_argument("--label-column", help="obs column of cell labels for label transfer")
    base.add_argument("--resolution", type=float, default=1.0, help="Leiden, as the modules")
    base.add_argument("--objective", default="rb_configuration")
    base.add_argument("--min-size", type=int, default=5)
    base.add_argument("--top-k", type=int, default=10, help="co-expression edges per gene")
    base.add_argument("--coexpression-out", help="co-expression module table (TSV) to write")
    parser.add_argument("--out", required=True, help="evaluation.tsv to write")


def run(args: argparse.Namespace) -> int:
    """Write one table: a summary line (as comments) and one row per program."""
    import logging

    from geneattn.errors import InputError
    from geneattn.evaluation import (
        DEFAULT_PROGRAMS,
        enriched_fraction,
        evaluation_text,
        program_cohesion,
        read_table,
    )
    from geneattn.io.atomic import write_text

    modules = read_table(args.modules, {"gene", "module"})
    enrichment = read_table(args.enrichment, {"module", "fdr"})
    programs = dict(args.program) if args.program else DEFAULT_PROGRAMS
    frac = enriched_fraction(modules, enrichment, fdr=args.fdr)
    cohesion = program_cohesion(modules, programs, n_permutations=args.permutations, seed=args.seed)
    logging.getLogger(__name__).info(
        "%d of %d modules enriched at FDR < %g", frac["n_enriched"], frac["n_modules"], args.fdr
    )
    if args.counts is None:
        if args.embeddings or args.label_column or args.markers:
            raise InputError("--embeddings, --label-column and --markers need --counts")
        write_text(args.out, evaluation_text(frac, cohesion, fdr=args.fdr))
        return 0
    head = (
        f"# modules: {frac['n_modules']}\n# enriched at FDR < {args.fdr:g}: {frac['n_enriched']}"
        f" ({frac['fraction']:.3f})\n"
    )
    head, table = _with_baselines(args, modules, programs, head)
    write_text(args.out, head + table.to_csv(sep="\t", index=False, float_format="%.6g"))
    return 0


def _with_baselines(args: argparse.Namespace, modules, programs: dict, head: str):
    """Co-expression modules of the universe, program recovery side by side, label transfer."""
    import logging

    import numpy as np
    import pandas as pd

    from geneattn.baselines import (
        coexpression_modules,
        compare_programs,
        embedding_comparison,
        universe_columns,
    )
    from geneattn.diffusion import log_normalise
    from geneattn.errors import InputError
    from geneattn.evaluation import immune_marker_programs
    from geneattn.io.atomic import atomic_path
    from geneattn.io.readers import read_stage_h5ad

    log = logging.getLogger(__name__)
    if "gene_id" not in modules.columns:
        raise InputError("missing column gene_id (needed with --counts)", args.modules)
    adata = read_stage_h5ad(args.counts)
    var_names = adata.var_names.astype(str).to_numpy()
    var_ids = adata.var["gene_ids"].astype(str).to_numpy() if "gene_ids" in adata.var else var_names
    columns = universe_columns(var_ids, var_names, modules["gene_id"], modules["gene"])
    if not (columns >= 0).any():
        raise InputError("none of the module genes is in the counts", args.counts)
    if (columns < 0).any():
        log.warning("%d module genes not in %s: no co-expression", (columns < 0).sum(), args.counts)
    n_counts = adata.obs["n_counts"].to_numpy(dtype=np.float64) if "n_counts" in adata.obs else None
    full = log_normalise(adata.X, n_counts=n_counts)
    expression = full[:, np.maximum(columns, 0)].toarray()
    expression[:, columns < 0] = 0.0
    coexpr = coexpression_modules(
        expression,
        top_k=args.top_k,
        resolution=args.resolution,
        objective=args.objective,
        seed=args.seed,
        min_size=args.min_size,
    )
    if args.coexpression_out:
        with atomic_path(args.coexpression_out) as tmp:
            pd.DataFrame(
                {"gene": modules["gene"], "gene_id": modules["gene_id"], "module": coexpr}
            ).to_csv(tmp, sep="\t", index=False)
    if args.markers:
        programs = dict(programs) | immune_marker_programs(args.markers)
    table = compare_programs(
        modules["module"].to_numpy(dtype=np.int64),
        coexpr,
        modules["gene"].astype(str).to_numpy(),
        programs,
        n_permutations=args.permutations,
        seed=args.seed,
    )
    ties = int((table["attention_fraction"] >= table["coexpression_fraction"] - 1e-12).sum())
    head += (
        f"# co-expression modules (correlation kNN, top {args.top_k}, Leiden as the modules):"
        f" {len(set(coexpr.tolist()) - {0})}\n"
        f"# programs with >= 2 genes in the universe: {len(table)}; attention modules keep at"
        f" least as large a fraction of their pairs together in {ties}\n"
    )
    if args.label_column:
        if not args.embeddings:
            raise InputError("--label-column needs --embeddings")
        emb = read_stage_h5ad(args.embeddings)
        if "X_geneattn" not in emb.obsm:
            raise InputError("no obsm['X_geneattn']", args.embeddings)
        if args.label_column not in adata.obs:
            raise InputError(f"no obs column {args.label_column!r}", args.counts)
        index = pd.Index(adata.obs_names.astype(str)).get_indexer(emb.obs_names.astype(str))
        if (index < 0).any():
            raise InputError("embedded cells missing from the counts", args.embeddings)
        labels = adata.obs[args.label_column].astype(object).to_numpy()[index]
        transfer = embedding_comparison(
            np.asarray(emb.obsm["X_geneattn"]), expression[index], labels, seed=args.seed
        )
        head += (
            f"# label transfer of {args.label_column!r} (kNN k=10, 5-fold stratified, balanced"
            f" accuracy, {int(transfer['n_labels'].iloc[0])} labels):"
            + ",".join(f" {r.embedding} {r.balanced_accuracy:.3f}" for r in transfer.itertuples())
            + "\n"
        )
    return head, table
