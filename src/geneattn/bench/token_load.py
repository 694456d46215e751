"""Probe of the stage benchmark: the memory of reading a tokens file, whole or one shard.

``python -m geneattn.bench.token_load tokens.npz [--cells START:STOP]`` reads every cell
(``load_tokens(path)``), or only cells ``START:STOP`` (``load_tokens(path, cells=slice)``),
and prints how many cells and tokens it got. The stage benchmark runs it as a job, so its
peak RSS shows what a shard job pays for its tokens with either call.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Read the tokens and print their size."""
    parser = argparse.ArgumentParser(prog="python -m geneattn.bench.token_load")
    parser.add_argument("tokens", help="tokens.npz")
    parser.add_argument("--cells", help="START:STOP, only these cells (default: all)")
    args = parser.parse_args(argv)
    from geneattn.tokenize import load_tokens

    if args.cells is None:
        cells = load_tokens(args.tokens)
    else:
        start, stop = (int(x) for x in args.cells.split(":"))
        cells = load_tokens(args.tokens, cells=slice(start, stop))
    print(f"{cells.n_cells} cells, {len(cells.tokens)} tokens")
    return 0


if __name__ == "__main__":
    sys.exit(main())
