"""benchmarks/readme_tables.py: the README's results tables come from benchmarks/results/*.json only."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _setup(tmp_path: Path) -> tuple[Path, Path]:
    readme = tmp_path / "README.md"
    readme.write_text("# proj\n\nintro\n")
    results = tmp_path / "results"
    results.mkdir()
    (results / "extract_demo.json").write_text(json.dumps(
        {"title": "Clip extraction", "columns": ["video", "fps", "ratio"], "rows": [["a.mp4", 1234.5678, 0.51234]],
         "notes": "2 cores"}))
    (results / "lls_step.json").write_text(json.dumps({"rows": [{"mode": "lls", "ms": 1.25}, {"mode": "bp", "ms": 3}]}))
    return readme, results


def test_regeneration_adds_a_results_section_with_every_table(tables, tmp_path):
    readme, results = _setup(tmp_path)
    assert tables.main(["--readme", str(readme), "--results", str(results)]) == 0
    text = readme.read_text()
    assert text.startswith("# proj\n\nintro\n") and "## Results" in text
    block = text.split(tables.BEGIN)[1].split(tables.END)[0]
    assert "| a.mp4 | 1,235 | 0.512 |" in block and "| lls | 1.25 |" in block and "| bp | 3 |" in block
    assert "`benchmarks/extract_demo.py`" in block and "2 cores" in block


def test_only_the_marked_block_changes_and_check_detects_staleness(tables, tmp_path):
    readme, results = _setup(tmp_path)
    tables.main(["--readme", str(readme), "--results", str(results)])
    readme.write_text(readme.read_text() + "\nafter the block\n")
    assert tables.main(["--readme", str(readme), "--results", str(results), "--check"]) == 0
    (results / "lls_step.json").write_text(json.dumps({"rows": [{"mode": "lls", "ms": 9.5}]}))
    assert tables.main(["--readme", str(readme), "--results", str(results), "--check"]) == 1
    tables.main(["--readme", str(readme), "--results", str(results)])
    text = readme.read_text()
    assert "| lls | 9.5 |" in text and "1.25" not in text and text.endswith("after the block\n")
    assert text.count("## Results") == 1


def test_bench_results_become_a_summary_row(tables):
    r = {"schema": "edgeml.bench", "model": "video_spiking", "backend": "ort", "target": "x86-cpu", "input": "data",
         "summary": {"videos_per_s": 12.5, "clip_latency_median_s": 0.004, "clip_latency_p99_s": 0.006,
                     "joules_per_video": 0.02, "energy_label": "estimated (no power sensor)", "accuracy": 0.75}}
    ((title, cols, rows, _),) = tables.tables_of("x86", r)
    assert rows[0][4:] == [12.5, 4.0, 6.0, 0.02, "estimated (no power sensor)", 75.0]


def test_a_dict_of_records_becomes_a_table_keyed_by_name(tables):
    r = {"benchmark": "lat", "backends": {"ort": {"median_ms": 0.4, "p95_ms": 0.5}, "tvm": {"median_ms": 0.43}}}
    (_, (title, cols, rows, _)) = tables.tables_of("lat", r)
    assert title == "lat: backends" and cols == ["backends", "median_ms", "p95_ms"]
    assert rows == [["ort", 0.4, 0.5], ["tvm", 0.43, None]]


def test_an_empty_nested_dict_adds_no_column(tables):
    r = {"rows": [{"model": "snn", "rates": {"a": 0.5}}, {"model": "cnn", "rates": {}}]}
    ((_, cols, rows, _),) = tables.tables_of("t", r)
    assert cols == ["model", "rates.a"] and rows == [["snn", 0.5], ["cnn", None]]


def test_records_come_with_the_files_other_fields(tables):
    r = {"rows": [{"model": "a", "acc": 0.9}], "ratios": {"faster_x": 9.6}, "goals": {"faster": True}}
    (rows_table, (_, cols, quantities, _)) = tables.tables_of("t", r)
    assert rows_table[1] == ["model", "acc"] and cols == ["quantity", "value"]
    assert quantities == [["ratios.faster_x", 9.6], ["goals.faster", True]]


def test_committed_results_render_as_claim_tables_of_at_most_ten_columns(tables):
    """Every committed results file has its claims table, and no README table is wider than ten columns."""
    results = ROOT / "benchmarks" / "results"
    assert {f.stem for f in results.glob("*.json")} <= set(tables.CLAIMS)
    block = tables.render(results)
    widths = [line.count("|") - 1 for line in block.splitlines() if line.startswith("|")]
    assert widths and max(widths) <= tables.MAX_COLUMNS
    assert block.count("| claim | goal | measured | verdict | same-run baseline |") == len(list(results.glob("*.json")))


def test_a_wide_generic_table_stays_in_the_json(tables, tmp_path):
    (tmp_path / "wide.json").write_text(json.dumps({"rows": [{f"c{i}": i for i in range(12)}], "n": 3}))
    block = tables.render(tmp_path)
    assert "| c0 |" not in block and "| n | 3 |" in block
