"""The ``geneattn`` command line: one subcommand per workflow stage.

Each subcommand lives in a module of this package that defines ``NAME``, ``HELP``,
``configure(parser)`` and ``run(args)``. Modules import their heavy dependencies inside
``run`` so that ``geneattn --help`` stays fast. Bad input (:class:`~geneattn.errors.InputError`)
is printed as one line and the exit status is 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from geneattn import __version__
from geneattn.errors import InputError

#: Subcommand modules, in workflow order.
COMMAND_MODULES = (
    "geneattn.cli.fetch_resources",
    "geneattn.cli.qc",
    "geneattn.cli.tokenize",
    "geneattn.cli.attention_graph",
    "geneattn.cli.model",
    "geneattn.cli.embed",
    "geneattn.cli.gather_embeddings",
    "geneattn.cli.universe",
    "geneattn.cli.attention",
    "geneattn.cli.gather_attention",
    "geneattn.cli.network",
    "geneattn.cli.modules",
    "geneattn.cli.module_attention",
    "geneattn.cli.differential",
    "geneattn.cli.evaluate",
    "geneattn.cli.perturb_plan",
    "geneattn.cli.perturb",
    "geneattn.cli.perturb_stats",
    "geneattn.cli.report",
    "geneattn.cli.bench",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available subcommand."""
    parser = argparse.ArgumentParser(
        prog="geneattn",
        description="Gene modules and perturbation targets from single-cell attention.",
    )
    parser.add_argument("--version", action="version", version=f"geneattn {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(name)
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.configure(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        status = args._run(args)
    except InputError as err:
        print(f"geneattn {args.command}: error: {err}", file=sys.stderr)
        return 2
    return int(status or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
