"""``geneattn differential``: case-vs-control module attention, permuting cell labels."""

from __future__ import annotations

import argparse
import logging

NAME = "differential"
HELP = (
    "case-vs-control differential attention of each module with a permutation test over "
    "cell labels (TSV), and the module GraphML carrying its results"
)

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the differential options."""
    parser.add_argument(
        "--case-cells",
        nargs="+",
        required=True,
        metavar="NPZ",
        help="module-attention shards of the case cells (`geneattn module-attention`)",
    )
    parser.add_argument(
        "--control-cells",
        nargs="+",
        required=True,
        metavar="NPZ",
        help="module-attention shards of the control cells",
    )
    parser.add_argument(
        "--permutations", type=int, default=1000, help="random relabellings of the cells"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the relabellings")
    parser.add_argument("--out", required=True, help="differential .tsv to write")
    graph = parser.add_argument_group(
        "GraphML", "the module graph of `geneattn modules`, with this test's results"
    )
    graph.add_argument("--out-graphml", help="GraphML to write")
    graph.add_argument("--modules", help="module table .tsv the cells were scored on")
    graph.add_argument("--case", help="network .npz of the case condition")
    graph.add_argument("--control", help="network .npz of the control condition")
    graph.add_argument(
        "--detect-on",
        choices=["case", "pooled"],
        default="case",
        help="the network the modules were found in (as given to `geneattn modules`)",
    )


def run(args: argparse.Namespace) -> int:
    """Test every module and write the table (and the GraphML), all or none."""
    import contextlib

    from geneattn.differential import cell_label_test, gather_module_attention
    from geneattn.errors import InputError
    from geneattn.io.atomic import atomic_path
    from geneattn.network import write_graphml, write_table

    if args.permutations < 1:
        raise InputError(f"--permutations must be at least 1, got {args.permutations}")
    graph_args = ("--modules", args.modules), ("--case", args.case), ("--control", args.control)
    if args.out_graphml is not None:
        missing = [flag for flag, value in graph_args if value is None]
        if missing:
            raise InputError(f"--out-graphml needs {', '.join(missing)}")
    case = gather_module_attention(args.case_cells)
    control = gather_module_attention(args.control_cells)
    if not (
        case.modules.tolist() == control.modules.tolist()
        and case.module_sizes.tolist() == control.module_sizes.tolist()
    ):
        raise InputError(
            f"modules differ from those of the case cells {args.case_cells[0]}",
            args.control_cells[0],
        )
    table = cell_label_test(case, control, n_permutations=args.permutations, seed=args.seed)
    graph = None if args.out_graphml is None else _module_graph(args, case, table)
    log.info(
        "%d modules, %d case and %d control cells: %d with p < 0.05, %d at FDR < 0.05",
        len(table),
        case.n_cells,
        control.n_cells,
        int((table["p_value"] < 0.05).sum()),
        int((table["fdr"] < 0.05).sum()),
    )
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(atomic_path(args.out))
        graphml = None if graph is None else stack.enter_context(atomic_path(args.out_graphml))
        write_table(out, table)
        if graph is not None:
            write_graphml(graphml, graph)
    return 0


def _module_graph(args: argparse.Namespace, scored, table):
    """:func:`geneattn.differential.differential_graph` of the files named by the options."""
    from geneattn.differential import differential_graph, read_hub_ranks, read_module_labels
    from geneattn.network import load_network

    case = load_network(args.case)
    control = load_network(args.control)
    gene_ids, labels = read_module_labels(args.modules)
    return differential_graph(
        case,
        control,
        gene_ids,
        labels,
        scored,
        table,
        detect_on=args.detect_on,
        hub_ranks=read_hub_ranks(args.modules),
        source=args.modules,
        case_source=args.case,
        control_source=args.control,
        scored_source=args.case_cells[0],
    )
