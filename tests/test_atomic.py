"""Atomic writes: nothing under the final name until complete; a rerun clears what a kill left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from geneattn.io.atomic import (
    atomic_path,
    remove_stale_temporaries,
    temporary_name_pattern,
    write_text,
)


def _killed_writer(path, *, suffix=None):
    """Start a process that opens ``path`` with atomic_path, writes, and is SIGKILLed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from geneattn.io.atomic import atomic_path
        with atomic_path({str(path)!r}, suffix={suffix!r}) as tmp:
            tmp.write_bytes(b"x" * 100_000)
            print(tmp, flush=True)
            time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    tmp = proc.stdout.readline().strip()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    return tmp


def test_a_killed_writer_leaves_a_temporary_that_the_next_write_removes(tmp_path, caplog):
    out = tmp_path / "results" / "attention" / "case.shard0.npz"
    first = _killed_writer(out)
    assert os.path.getsize(first) == 100_000
    assert not out.exists()
    # a second killed run removes the first one's leftover when it starts writing
    second = _killed_writer(out)
    assert [p.name for p in out.parent.iterdir()] == [os.path.basename(second)]
    assert temporary_name_pattern(out).fullmatch(os.path.basename(second))

    caplog.set_level("INFO", logger="geneattn.io.atomic")
    write_text(out, "done")
    assert sorted(p.name for p in out.parent.iterdir()) == ["case.shard0.npz"]
    assert out.read_text() == "done"
    assert "removed 1 stale temporary file(s) of" in caplog.text


def test_only_the_temporaries_of_this_output_are_removed(tmp_path):
    out = tmp_path / "shard1.npz"
    ours = [
        ".shard1.npz.abcd1234.tmp.npz",
        ".shard1.npz.x_y_z_09.tmp",  # another suffix, as atomic_path(..., suffix="")
        ".shard1.npz.k2m4p6q8.tmp.npz",
    ]
    others = [
        ".shard11.npz.abcd1234.tmp.npz",  # another shard
        ".shard1.npz.gz.abcd1234.tmp.gz",  # another output whose name starts the same
        "shard1.npz.abcd1234.tmp.npz",  # not hidden
        ".shard1.npz.abc.tmp.npz",  # not an 8-character random part
        ".shard1.npz.abcd1234.npz",  # no .tmp
        ".shard1.npz.keep",
        "shard1.npz.tmp",
        "notes.txt",
    ]
    for name in ours + others:
        (tmp_path / name).write_text("x")
    (tmp_path / ".shard1.npz.dir45678.tmp.zarr").mkdir()  # a writer that makes a directory
    (tmp_path / ".shard1.npz.dir45678.tmp.zarr" / "chunk").write_text("x")
    removed = remove_stale_temporaries(out)
    assert sorted(p.name for p in removed) == sorted([*ours, ".shard1.npz.dir45678.tmp.zarr"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(others)


def test_the_pattern_matches_what_atomic_path_makes(tmp_path):
    for name, suffix in [("qc.h5ad", None), ("modules.tsv", None), ("report", None), ("a.b", "")]:
        out = tmp_path / name
        with atomic_path(out, suffix=suffix) as tmp:
            assert temporary_name_pattern(out).fullmatch(tmp.name), tmp.name
            assert not temporary_name_pattern(tmp_path / f"x{name}").fullmatch(tmp.name)
            tmp.write_text("x")


def test_a_running_writer_of_another_output_is_left_alone(tmp_path):
    with atomic_path(tmp_path / "case.npz") as tmp:
        tmp.write_text("being written")
        write_text(tmp_path / "control.npz", "other output")
        assert tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.npz", "control.npz"]


def test_a_failing_writer_leaves_nothing(tmp_path):
    out = tmp_path / "x.tsv"
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_no_directory_nothing_to_remove(tmp_path):
    assert remove_stale_temporaries(tmp_path / "absent" / "x.npz") == []
