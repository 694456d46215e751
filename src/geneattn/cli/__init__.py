"""The ``geneattn`` command line: one subcommand per workflow stage.

Each subcommand lives in a module of this package that defines ``NAME``, ``HELP``,
``configure(parser)`` and ``run(args)``. A subcommand only parses its arguments, reads and
writes files through library functions and calls the library functions of its stage (the
same ones :mod:`geneattn.pp` and :mod:`geneattn.tl` call); :mod:`~geneattn.cli.options` holds
the options several subcommands share. Modules import their heavy dependencies inside
``run`` so that ``geneattn --help`` stays fast. Bad input (:class:`~geneattn.errors.InputError`)
is printed as one line and the exit status is 2; so is a file that cannot be written or read
(an :class:`OSError` naming a path, such as a results directory without write permission or
a full disk).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
import time
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
    "geneattn.cli.module_analysis",
    "geneattn.cli.perturb_plan",
    "geneattn.cli.perturb",
    "geneattn.cli.perturb_stats",
    "geneattn.cli.gene_shifts",
    "geneattn.cli.gather_gene_embeddings",
    "geneattn.cli.report",
    "geneattn.cli.bench",
)


#: Errors of the file system that are the environment's, not the program's: reported in one
#: line (with the path when the error names one) instead of a traceback.
_ENVIRONMENT_ERRNOS = frozenset(
    {
        errno.EACCES,
        errno.EPERM,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENOENT,
        errno.EEXIST,
        errno.EMFILE,
        errno.EFBIG,
    }
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
    log = logging.getLogger("geneattn.cli")
    log.info("geneattn %s %s: started", args.command, __version__)
    started = time.monotonic()
    try:
        clear_stale_temporaries(args)
        status = args._run(args)
    except InputError as err:
        print(f"geneattn {args.command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        message = file_error_message(err)
        if message is None:
            raise
        print(f"geneattn {args.command}: error: {message}", file=sys.stderr)
        return 2
    log.info("geneattn %s: finished in %.1f s", args.command, time.monotonic() - started)
    return int(status or 0)


#: Options naming files a subcommand writes (besides ``--out`` and ``--out-*``).
OUTPUT_OPTIONS = ("summary", "plot")


def output_paths(args: argparse.Namespace) -> list[str]:
    """The files this subcommand writes: ``--out``, ``--out-*`` (not ``--out-dir``) and
    :data:`OUTPUT_OPTIONS`, where given."""
    paths = []
    for name, value in sorted(vars(args).items()):
        is_output = name == "out" or name in OUTPUT_OPTIONS or name.startswith("out_")
        if is_output and name != "out_dir" and isinstance(value, str) and value not in ("", "-"):
            paths.append(value)
    return paths


def clear_stale_temporaries(args: argparse.Namespace) -> None:
    """Remove what a killed earlier run of this job left beside its outputs.

    Only the hidden temporaries :func:`geneattn.io.atomic.atomic_path` names after each
    output (``.{name}.{random}.tmp*``) are removed, so a rerun job starts clean instead of
    leaving them until it writes (or forever, if it fails first).
    """
    from geneattn.io.atomic import remove_stale_temporaries

    for path in output_paths(args):
        remove_stale_temporaries(path)


def file_error_message(err: OSError) -> str | None:
    """One line for a file-system error that names a path, or None for any other ``OSError``.

    ``PermissionError: [Errno 13] Permission denied: 'results/x/qc.h5ad'`` becomes
    ``results/x/qc.h5ad: Permission denied``.
    """
    if err.filename is None or err.errno not in _ENVIRONMENT_ERRNOS:
        return None
    reason = err.strerror or os.strerror(err.errno)
    where = os.fsdecode(err.filename)
    if err.filename2 is not None:
        where += f" -> {os.fsdecode(err.filename2)}"
    return f"{where}: {reason}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
