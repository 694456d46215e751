"""``geneattn fetch-resources``: the pinned real inputs (demo data, dictionaries, priors)."""

from __future__ import annotations

import argparse
import logging

NAME = "fetch-resources"
HELP = "download the pinned resource wheels, check their sha256 and extract the files"

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the fetch-resources options."""
    parser.add_argument(
        "--dest", default="resources", help="destination directory (default: resources)"
    )
    parser.add_argument(
        "--wheels",
        metavar="DIR",
        help="use wheels downloaded by hand into DIR instead of downloading them",
    )
    parser.add_argument(
        "--write-manifest",
        action="store_true",
        help="fetch every file afresh and (re)write DEST/MANIFEST from the result",
    )


def run(args: argparse.Namespace) -> int:
    """Fetch the resources (or rewrite the manifest) and log one line per file."""
    from pathlib import Path

    from geneattn.resources.fetch import fetch_resources, write_resources_manifest

    dest = Path(args.dest)
    if args.write_manifest:
        paths = fetch_resources(dest, wheels_dir=args.wheels, manifest={})
        log.info("wrote %s", write_resources_manifest(dest))
    else:
        paths = fetch_resources(dest, wheels_dir=args.wheels)
    log.info("%d resource files ready under %s", len(paths), dest)
    return 0
