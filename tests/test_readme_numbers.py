"""README's quoted numbers equal what this session's own demo run computes.

``scripts/readme_numbers.py`` fills every marked number of README.md from ``results/``; here
it reads the test session's demo run (the ``demo_run`` fixture), so a change of the code
that moves a quoted number fails until README is regenerated.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "readme_numbers", ROOT / "scripts/readme_numbers.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_markers_are_filled_and_tables_rendered(tmp_path):
    numbers = _script()
    table = tmp_path / "t.tsv"
    table.write_text("# seed: 0\nsplit\tcalled\nA\t3\n")
    text = (
        "x <!-- n:s.a -->1<!-- /n --> y <!-- n:s.b -->2<!-- /n -->\n"
        f"<!-- table:{table.name} -->\nold\n<!-- /table -->\n"
    )
    new, diffs, unchecked = numbers.update(text, {"s.a": "1", "s.b": "5"}, root=tmp_path)
    assert (
        "<!-- n:s.b -->5<!-- /n -->" in new and "| split | called |\n|---|---|\n| A | 3 |\n" in new
    )
    assert diffs == ["s.b: README '2', computed '5'", "table t.tsv differs"] and unchecked == []
    again, diffs, _ = numbers.update(new, {"s.a": "1", "s.b": "5"}, root=tmp_path)
    assert again == new and diffs == []


def test_readme_demo_numbers_match_the_demo_run(demo_run):
    numbers = _script()
    values = numbers.collect({"demo": demo_run.results})
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    _, diffs, unchecked = numbers.update(text, values)
    demo_keys = [
        m.group("key") for m in numbers.NUMBER.finditer(text) if m.group("key").startswith("demo.")
    ]
    assert demo_keys, "README quotes no demo number through a marker"
    assert not [k for k in unchecked if k.startswith("demo.")], unchecked
    assert not [d for d in diffs if d.startswith("demo.")], diffs
