"""Where a command's memory goes: resident set size by line of its ``run`` function.

``python -m geneattn.bench.rss_steps --out steps.json -- SUBCOMMAND ARGS...`` runs
``geneattn SUBCOMMAND ARGS...`` in this process while a thread samples the resident set size
(``/proc/self/statm``) every :data:`INTERVAL` seconds, together with the line of the
subcommand's ``run`` function (in :mod:`geneattn.cli`) that the main thread is executing;
calls made from that line count towards it. Each step gets the RSS when it was first seen,
the largest RSS seen during it and the seconds spent in it (time between samples counts to
the step of the earlier sample); the whole run gets the kernel's
high-water mark (``VmHWM``), which no sampling can miss.

Samples are taken only when the sampling thread gets the GIL, so a peak inside a long call
that holds the GIL can be missed by the steps (never by ``VmHWM``); steps that keep their
memory show it in the next samples anyway.
"""

from __future__ import annotations

import argparse
import json
import linecache
import os
import sys
import threading
import time
from collections.abc import Sequence

#: Seconds between samples.
INTERVAL = 0.02
_PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm", encoding="ascii") as fh:
        return int(fh.read().split()[1]) * _PAGE


def peak_rss_bytes() -> int:
    """High-water mark of the resident set size of this process image (``VmHWM``)."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class StepSampler:
    """Sample RSS and the executing line of the CLI ``run`` function on a thread.

    Parameters
    ----------
    interval
        Seconds between samples.
    """

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.main = threading.main_thread().ident
        self.steps: dict[str, dict] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._t0 = time.perf_counter()
        self._in_run = False
        self._previous: str | None = None
        self._last = 0.0

    def __enter__(self) -> StepSampler:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def _step(self) -> str:
        frame = sys._current_frames().get(self.main)
        while frame is not None:
            code = frame.f_code
            module = frame.f_globals.get("__name__", "")
            if code.co_name == "run" and module.startswith("geneattn.cli."):
                line = linecache.getline(code.co_filename, frame.f_lineno).strip()
                self._in_run = True
                return f"{module.rsplit('.', 1)[1]}.py:{frame.f_lineno} {line}"
            frame = frame.f_back
        return "(after run)" if self._in_run else "(before run: imports, arguments)"

    def sample(self) -> None:
        """Record one sample; the time since the previous one counts to the previous step."""
        now = time.perf_counter() - self._t0
        rss = rss_bytes()
        step = self._step()
        if self._previous is not None:
            self.steps[self._previous]["seconds"] += now - self._last
        s = self.steps.get(step)
        if s is None:
            self.steps[step] = {"first_s": now, "seconds": 0.0, "rss_first": rss, "rss_max": rss}
        else:
            s["rss_max"] = max(s["rss_max"], rss)
        self._previous, self._last = step, now

    def table(self) -> list[dict]:
        """The steps in order of first appearance, in MiB and seconds."""
        mib = 1024 * 1024
        return [
            {
                "step": name,
                "first_s": round(s["first_s"], 3),
                "seconds": round(s["seconds"], 3),
                "rss_first_mib": round(s["rss_first"] / mib, 1),
                "rss_max_mib": round(s["rss_max"] / mib, 1),
            }
            for name, s in sorted(self.steps.items(), key=lambda kv: kv[1]["first_s"])
        ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run a geneattn subcommand under the sampler and write its steps as JSON."""
    parser = argparse.ArgumentParser(prog="python -m geneattn.bench.rss_steps")
    parser.add_argument("--out", required=True, help="JSON file of the steps")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- SUBCOMMAND ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    from geneattn.cli import main as cli_main

    with StepSampler() as sampler:
        status = cli_main(command)
    result = {
        "command": command[:1],
        "status": status,
        "vmhwm_mib": round(peak_rss_bytes() / 1024 / 1024, 1),
        "steps": sampler.table(),
    }
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(result, fh, indent=1)
    return status


if __name__ == "__main__":
    sys.exit(main())
