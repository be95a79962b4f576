"""`edgeml report`: Markdown + self-contained HTML, checked in a real headless Chromium."""

from __future__ import annotations

import copy
import json

import pytest
from bench_browser import chromium as _chromium
from bench_tiny import install_fake_video_module, make_artefact, make_videos

from edgeml import cli
from edgeml.bench.meters import MeterSet
from edgeml.bench.report import write_report
from edgeml.bench.run import bench
from edgeml.errors import InputError


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """Two real runs of the tiny model (end-to-end with a fake extractor, and random-input) as JSON files."""
    tmp = tmp_path_factory.mktemp("report")
    mp = pytest.MonkeyPatch()
    try:
        install_fake_video_module(mp)
        art = make_artefact(tmp / "artefact")
        videos = make_videos(tmp / "videos")
        paths = []
        for name, kw in (("e2e", {"input": "data", "data": videos, "videos": 4}), ("rand", {"input": "random"})):
            paths.append(tmp / f"{name}.json")
            bench(artefact=art, backend="ort", batch_sizes=(1, 2, 4), repeats=5, warmup=1, out=paths[-1],
                  meters=MeterSet([], []), progress=False, **kw)
    finally:
        mp.undo()
    return paths


def test_report_writes_markdown_with_every_run_side_by_side(results, tmp_path):
    out = write_report(results, tmp_path / "rep")
    md = out["markdown"].read_text()
    assert md.count("bench_test_tiny · ort · x86-cpu #") >= 2
    for section in ("## Summary", "## Pipeline split", "## Model-only latency by batch size", "## Energy"):
        assert section in md
    assert "estimated (no power sensor)" in md
    assert (tmp_path / "rep/plots/latency.svg").is_file() and "(plots/throughput.svg)" in md


def test_report_puts_decode_and_extraction_against_the_model_and_labels_the_front_ends_cpu_seconds(results, tmp_path):
    from edgeml.bench.run import FRONT_END_LABEL

    md = write_report(results, tmp_path / "rep")["markdown"].read_text()
    split = md[md.index("## Pipeline split"):md.index("## Model-only")]
    assert "decode + extraction / video" in split and "model / video" in split
    energy = md[md.index("## Energy"):]
    assert "estimated (no power sensor)" in energy and "front end (decode + extraction)" in energy
    assert FRONT_END_LABEL in energy and "CPU-s per video" in energy
    summary = md[md.index("## Summary"):md.index("## Pipeline split")]
    assert "front end / video" in summary and f"CPU-s — {FRONT_END_LABEL}" in summary


def test_report_html_is_self_contained(results, tmp_path):
    page = write_report(results, tmp_path / "rep")["html"].read_text()
    assert page.count("<svg") >= 4
    assert "src=\"http" not in page and "href=\"http" not in page and "<script" not in page
    assert "<?xml" not in page


def test_report_refuses_results_of_another_schema_version(results, tmp_path, capsys):
    data = json.loads(results[0].read_text())
    bad = copy.deepcopy(data)
    bad["schema_version"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="schema version 99"):
        write_report([results[0], tmp_path / "bad.json"], tmp_path / "rep")
    assert cli.main(["report", str(tmp_path / "bad.json"), "--out", str(tmp_path / "rep2")]) == 2
    assert "schema version 99" in capsys.readouterr().err
    assert not (tmp_path / "rep2").exists()


def test_report_renders_plots_and_tables_in_headless_chromium(results, tmp_path):
    html = write_report(results, tmp_path / "rep")["html"]
    browser = _chromium()
    try:
        from selenium.webdriver.common.by import By

        browser.get(html.as_uri())
        assert browser.title == "edgeml benchmark report"
        for key in ("latency", "throughput", "energy", "accuracy", "split"):
            svg = browser.find_element(By.CSS_SELECTOR, f"figure#plot-{key} svg")
            size = svg.size
            assert size["width"] > 200 and size["height"] > 100, f"plot {key} rendered at {size}"
            # the plot has drawn content, not an empty frame
            assert len(svg.find_elements(By.CSS_SELECTOR, "path")) > 5
        rows = browser.find_elements(By.CSS_SELECTOR, "table#summary tbody tr")
        assert len(rows) == 2
        cells = [c.text for c in rows[0].find_elements(By.TAG_NAME, "td")]
        assert "estimated (no power sensor)" in cells
        assert browser.find_elements(By.CSS_SELECTOR, "table#batches tbody tr")
        split = browser.find_elements(By.CSS_SELECTOR, "table#split tbody tr")
        assert len(split) == 1 and "decode" in browser.find_element(By.ID, "split").text
    finally:
        browser.quit()


def test_cli_report_prints_where_the_report_is(results, tmp_path, capsys):
    assert cli.main(["report", *map(str, results), "--out", str(tmp_path / "rep")]) == 0
    assert str(tmp_path / "rep" / "index.html") in capsys.readouterr().out
