"""A throw-away single-node SLURM cluster on this machine, for tests/test_slurm.py.

Debian's ``munge``, ``slurmctld``, ``slurmd`` and ``slurm-client`` packages are installed
when missing (their package scripts do not start the daemons). :func:`start_cluster` then
starts ``munged``, ``slurmctld`` and ``slurmd`` in the foreground as children of the test
process, with every file they use (config, munge key and socket, state, spool, logs) in one
temporary directory and free TCP ports, and waits until the node is idle.
:meth:`LocalSlurm.stop` cancels the cluster's jobs and stops the three daemons by their pid.

The cluster is what the executor's documentation calls the minimum: no accounting
(``accounting_storage/none``, so job states come from ``squeue`` and ``MinJobAge`` is
long), process tracking by ``/proc`` and no task plugin (no cgroups in a container), and
``SlurmUser=root``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

#: Debian packages providing the daemons and the client commands.
PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client")

#: Programs the cluster and the executor need.
PROGRAMS = (
    "munged",
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "squeue",
    "sinfo",
    "scancel",
    "scontrol",
)

_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin", "/sbin"])


class ClusterUnavailable(RuntimeError):
    """The cluster cannot be set up here (the message says why); tests skip on it."""


def which(program: str) -> str | None:
    """Full path of ``program`` on ``PATH`` or in the system ``sbin`` directories."""
    return shutil.which(program, path=_SEARCH_PATH)


def _missing_programs() -> list[str]:
    return [p for p in PROGRAMS if which(p) is None]


def _tail(text: str | bytes | None, lines: int = 15) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return "\n".join((text or "").strip().splitlines()[-lines:])


def ensure_installed(*, timeout: float = 600.0) -> None:
    """Install :data:`PACKAGES` with apt when any of :data:`PROGRAMS` is missing.

    Parameters
    ----------
    timeout
        Seconds allowed for each ``apt-get`` call.

    Raises
    ------
    ClusterUnavailable
        Not root, no ``apt-get``, or the installation failed or timed out.
    """
    if not _missing_programs():
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable(
            f"SLURM is not installed ({', '.join(_missing_programs())} missing) and installing "
            "it needs root"
        )
    apt = which("apt-get")
    if apt is None:
        raise ClusterUnavailable("SLURM is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # Wait for the dpkg lock rather than fail: fresh machines often run apt at boot.
    lock = ["-o", f"DPkg::Lock::Timeout={int(timeout // 2)}"]
    install = [apt, *lock, "install", "-y", "--no-install-recommends", *PACKAGES]

    def run(command: Sequence[str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired:
            raise ClusterUnavailable(
                f"`{' '.join(command)}` did not finish in {timeout:.0f} s"
            ) from None

    result = run(install)
    if result.returncode != 0:
        # A fresh machine may have no package lists yet: refresh them once and retry.
        update = run([apt, *lock, "update"])
        if update.returncode == 0:
            result = run(install)
    if result.returncode != 0 or _missing_programs():
        raise ClusterUnavailable(
            f"could not install {' '.join(PACKAGES)} with apt-get (exit {result.returncode}):\n"
            + _tail(result.stderr or result.stdout)
        )


def short_hostname() -> str:
    """``hostname -s``: the name slurmd registers under."""
    try:
        name = subprocess.run(
            ["hostname", "-s"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        name = ""
    return name or socket.gethostname().split(".")[0]


def _free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that are free right now."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _memory_mb() -> int:
    with open("/proc/meminfo", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    raise ClusterUnavailable("cannot read MemTotal from /proc/meminfo")


@dataclass
class LocalSlurm:
    """A running single-node cluster.

    Attributes
    ----------
    root
        Temporary directory holding everything the daemons use.
    conf
        Its ``slurm.conf``.
    host
        Node name (``hostname -s``).
    partition
        The one partition (the default).
    cpus
        CPUs the node offers.
    env
        Environment for clients and Snakemake: ``SLURM_CONF`` set, and ``PATH`` starting
        with a directory whose ``srun`` restores ``SLURM_CONF`` (see :func:`start_cluster`).
    daemons
        ``(name, process)`` of munged, slurmctld and slurmd, in start order.
    """

    root: Path
    conf: Path
    host: str
    partition: str
    cpus: int
    env: dict[str, str]
    daemons: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    def client(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client command (``squeue``, ``sinfo``, ...) against this cluster."""
        program = which(args[0]) or args[0]
        return subprocess.run(
            [program, *args[1:]],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def job_states(self) -> dict[str, str]:
        """``{job id: state}`` of every job the controller remembers (``MinJobAge`` is long)."""
        out = self.client("squeue", "--states=all", "--noheader", "--format=%i|%T").stdout
        return dict(line.split("|", 1) for line in out.split() if "|" in line)

    def logs(self, lines: int = 15) -> str:
        """The last lines of each daemon's log, for error messages."""
        parts = []
        for log in sorted((self.root / "log").glob("*")):
            parts.append(f"--- {log.name}\n{_tail(log.read_text(errors='replace'), lines)}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Cancel the cluster's jobs, then stop slurmd, slurmctld and munged by their pid."""
        if any(proc.poll() is None for name, proc in self.daemons if name == "slurmctld"):
            try:
                self.client("scancel", "--full", "--user", str(os.geteuid()), timeout=15)
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    states = self.job_states().values()
                    if not any(s in ("RUNNING", "COMPLETING", "PENDING") for s in states):
                        break
                    time.sleep(0.5)
            except (OSError, subprocess.SubprocessError):
                pass
        for _name, proc in reversed(self.daemons):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self.daemons.clear()


def _write_config(
    root: Path, *, host: str, partition: str, cpus: int, memory_mb: int, ports: list[int]
) -> Path:
    conf = root / "slurm.conf"
    lines = [
        "# Single-node test cluster written by tests/local_slurm.py",
        "ClusterName=geneattn-test",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={ports[0]}",
        f"SlurmdPort={ports[1]}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={root / 'munge' / 'munge.socket'}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}",
        f"SlurmctldPidFile={root / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",
        # Finished jobs stay visible to squeue for an hour: the executor's only status source.
        "MinJobAge=3600",
        "ReturnToService=2",
        # The node may announce more CPUs than the machine has (see start_cluster).
        "SlurmdParameters=config_overrides",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
    ]
    conf.write_text("\n".join(lines) + "\n", encoding="ascii")
    return conf


def start_cluster(*, partition: str, cpus: int, timeout: float = 60.0) -> LocalSlurm:
    """Start munged, slurmctld and slurmd and wait until the node is idle.

    Parameters
    ----------
    partition
        Name of the cluster's one partition.
    cpus
        CPUs the node announces. It may exceed the machine's cores: jobs then share them,
        which lets the short jobs of a test overlap their start-up.
    timeout
        Seconds to wait for the node to become idle.

    Returns
    -------
    LocalSlurm
        The running cluster; call :meth:`LocalSlurm.stop` and remove ``root`` when done
        (both happen here when starting fails).

    Raises
    ------
    ClusterUnavailable
        Not root, a program is missing, or the node did not become idle in time.

    Notes
    -----
    Snakemake's SLURM job-step executor removes every ``SLURM_*`` variable, ``SLURM_CONF``
    included, before it calls ``srun`` inside a job. A real cluster keeps its config where
    ``srun`` looks by default (or serves it configless); this one keeps it in a temporary
    directory, so ``env["PATH"]`` starts with a directory whose ``srun`` puts ``SLURM_CONF``
    back and runs the real ``srun``.
    """
    if os.geteuid() != 0:
        raise ClusterUnavailable("running slurmd with SlurmUser=root needs root")
    missing = _missing_programs()
    if missing:
        raise ClusterUnavailable(f"missing programs: {', '.join(missing)}")
    root = Path(tempfile.mkdtemp(prefix="geneattn-slurm-"))
    for sub in ("munge", "state", "spool", "log", "bin"):
        (root / sub).mkdir()
    os.chmod(root, 0o711)
    os.chmod(root / "munge", 0o711)
    key = root / "munge" / "munge.key"
    key.write_bytes(secrets.token_bytes(1024))
    key.chmod(0o400)
    host = short_hostname()
    conf = _write_config(
        root,
        host=host,
        partition=partition,
        cpus=cpus,
        memory_mb=_memory_mb(),
        ports=_free_ports(2),
    )
    srun = root / "bin" / "srun"
    srun.write_text(f'#!/bin/sh\nSLURM_CONF="{conf}" exec "{which("srun")}" "$@"\n')
    srun.chmod(0o755)
    env = {
        **os.environ,
        "SLURM_CONF": str(conf),
        "PATH": os.pathsep.join([str(root / "bin"), os.environ.get("PATH", "")]),
    }
    cluster = LocalSlurm(root=root, conf=conf, host=host, partition=partition, cpus=cpus, env=env)

    def spawn(name: str, *args: str) -> None:
        out = (root / "log" / f"{name}.out").open("wb")
        try:
            proc = subprocess.Popen(
                [which(name) or name, *args],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            out.close()
        cluster.daemons.append((name, proc))

    try:
        socket_path = root / "munge" / "munge.socket"
        spawn(
            "munged",
            "--foreground",
            "--force",
            f"--key-file={key}",
            f"--socket={socket_path}",
            f"--pid-file={root / 'munge' / 'munged.pid'}",
            f"--seed-file={root / 'munge' / 'munged.seed'}",
            f"--log-file={root / 'log' / 'munged.log'}",
        )
        _wait(lambda: socket_path.exists(), 15, cluster, "munged did not create its socket")
        spawn("slurmctld", "-D", "-f", str(conf))
        spawn("slurmd", "-D", "-f", str(conf), "-N", host)

        def idle() -> bool:
            out = cluster.client("sinfo", "--noheader", "--Node", "--format=%t", timeout=10)
            return out.returncode == 0 and out.stdout.split() == ["idle"]

        _wait(idle, timeout, cluster, f"node {host} did not become idle in {timeout:.0f} s")
    except BaseException:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return cluster


def _wait(condition, timeout: float, cluster: LocalSlurm, message: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in cluster.daemons:
            if proc.poll() is not None:
                raise ClusterUnavailable(
                    f"{name} exited with {proc.returncode} while starting:\n{cluster.logs()}"
                )
        try:
            if condition():
                return
        except (OSError, subprocess.SubprocessError):
            pass
        time.sleep(0.25)
    raise ClusterUnavailable(f"{message}:\n{cluster.logs()}")
