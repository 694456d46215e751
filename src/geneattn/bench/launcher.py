"""A small process that starts commands and reports their wall time and peak RSS.

Run as a script (``python launcher.py``), not imported as part of the package: it imports
only the standard library, so its memory stays at a few MiB. That matters because on Linux
a child's ``ru_maxrss`` starts from the peak RSS of the memory image it was forked from (at
``exec`` the kernel keeps the larger of the two; ``vfork`` shares the parent's image), so a
benchmark driver that has loaded data would inflate every child's peak. Children started
from this process carry at most its own peak (``VmHWM``, reported with every result).

Protocol: one JSON object per line on stdin, ``{"argv": [...], "log": path or null,
"cwd": path or null, "env": {...} or null}``; one JSON object per line on stdout,
``{"returncode", "wall_s", "user_s", "sys_s", "maxrss_kib", "launcher_maxrss_kib"}``.
End of input ends the process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def run_one(request: dict) -> dict:
    """Run ``request["argv"]`` to completion; its wall time and ``wait4`` rusage.

    Parameters
    ----------
    request
        ``argv`` (list of str), ``log`` (stdout and stderr go there, appended; None: to
        this process's stderr), ``cwd`` and ``env`` (None: this process's).

    Returns
    -------
    dict
        Return code, wall seconds, user and system CPU seconds, the child's peak RSS
        (KiB), and this launcher's own peak RSS (KiB), the floor below which a child's
        peak cannot be told apart.
    """
    log = open(request["log"], "ab") if request.get("log") else None
    try:
        t0 = time.perf_counter()
        try:
            proc = subprocess.Popen(
                request["argv"],
                stdin=subprocess.DEVNULL,
                stdout=log or sys.stderr,
                stderr=subprocess.STDOUT if log else sys.stderr,
                cwd=request.get("cwd"),
                env=request.get("env"),
            )
        except OSError as err:
            return {
                "returncode": 127,
                "error": str(err),
                "wall_s": 0.0,
                "user_s": 0.0,
                "sys_s": 0.0,
                "maxrss_kib": 0,
                "launcher_maxrss_kib": _own_peak(),
            }
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log:
            log.close()
    return {
        "returncode": proc.returncode,
        "wall_s": wall,
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "maxrss_kib": usage.ru_maxrss,
        "launcher_maxrss_kib": _own_peak(),
    }


def _own_peak() -> int:
    """This process image's peak RSS (KiB): ``VmHWM``, the most a child can inherit.

    Not ``ru_maxrss``: that still holds the peak of whatever process started this one.
    """
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def main() -> int:
    """Serve requests from stdin until it closes."""
    for line in sys.stdin:
        if line.strip():
            print(json.dumps(run_one(json.loads(line))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
