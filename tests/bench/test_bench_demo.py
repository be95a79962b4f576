"""`edgeml demo`: cached steps, clear failure for missing pieces; the full run is a slow test."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bench_browser import chromium

from edgeml import demo as demo_mod
from edgeml.demo import Demo, Step, StepUnavailable


def _counting_steps(d: Demo, calls: list[str], params: dict | None = None) -> list[Step]:
    """Three steps that write a file each and log their runs; `b` feeds `c`, `c` feeds nothing."""

    def make(name: str) -> Step:
        out = d.out / f"{name}.txt"

        def run() -> None:
            calls.append(name)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(name)

        return Step(name, out, run, out.is_file, dict(params or {}), feeds_later=name != "c")

    return [make("a"), make("b"), make("c")]


def test_second_run_reuses_every_cached_step(tmp_path):
    d, calls = Demo(tmp_path), []
    d.run_steps(_counting_steps(d, calls), say=lambda s: None)
    d.run_steps(_counting_steps(d, calls), say=lambda s: None)
    assert calls == ["a", "b", "c"]
    assert d.times == {"a": ("cached", 0.0), "b": ("cached", 0.0), "c": ("cached", 0.0)}


def test_a_step_whose_output_is_gone_reruns_with_everything_after_it(tmp_path):
    d, calls = Demo(tmp_path), []
    d.run_steps(_counting_steps(d, calls), say=lambda s: None)
    (tmp_path / "b.txt").unlink()
    d.run_steps(_counting_steps(d, calls), say=lambda s: None)
    assert calls == ["a", "b", "c", "b", "c"]


def test_changed_settings_rerun_the_step(tmp_path):
    d, calls = Demo(tmp_path), []
    d.run_steps(_counting_steps(d, calls, {"epochs": 1}), say=lambda s: None)
    d.run_steps(_counting_steps(d, calls, {"epochs": 2}), say=lambda s: None)
    assert calls == ["a", "b", "c"] * 2


def test_force_reruns_everything(tmp_path):
    calls = []
    d = Demo(tmp_path)
    d.run_steps(_counting_steps(d, calls), say=lambda s: None)
    d = Demo(tmp_path, force=True)
    d.run_steps(_counting_steps(d, calls), say=lambda s: None)
    assert calls == ["a", "b", "c"] * 2


def test_a_failed_step_leaves_no_stamp_and_runs_again(tmp_path):
    d = Demo(tmp_path)
    boom = Step("x", tmp_path / "x.txt", lambda: 1 / 0, lambda: True)
    with pytest.raises(ZeroDivisionError):
        d.run_steps([boom], say=lambda s: None)
    assert not (tmp_path / ".stamps" / "x.json").exists() and not d.is_cached(boom)


def test_missing_piece_fails_clearly_naming_the_step(monkeypatch):
    real = demo_mod.importlib.util.find_spec
    monkeypatch.setattr(demo_mod.importlib.util, "find_spec",
                        lambda m: None if m == "edgeml.export" else real(m))
    with pytest.raises(StepUnavailable, match="demo step 'export-jetson' needs the export layer"):
        demo_mod._need("edgeml.export", "the export layer", "export-jetson")


def test_demo_steps_cover_the_whole_job(tmp_path):
    names = [s.name for s in Demo(tmp_path).steps()]
    assert names[:5] == ["synth", "clips", "train", "export-x86-cpu", "export-jetson"]
    assert {"bench-ort", "bench-tvm"} <= set(names)


def test_unknown_demo_setting_is_refused(tmp_path):
    from edgeml.errors import InputError

    with pytest.raises(InputError, match="unknown demo settings"):
        Demo(tmp_path, epoch=3)


@pytest.mark.slow
def test_full_demo_finishes_within_15_minutes_and_reuses_its_cache(tmp_path):
    """`edgeml demo` from scratch, then again: the second run reuses every step."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "edgeml", "demo", "--out", str(tmp_path / "demo"), "--report",
           str(tmp_path / "report")]
    t0 = time.perf_counter()
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=20 * 60)
    took = time.perf_counter() - t0
    assert first.returncode == 0, first.stderr[-3000:] + first.stdout[-3000:]
    assert took <= 15 * 60, f"demo took {took:.0f} s"
    html, md = Path(tmp_path / "report/index.html"), Path(tmp_path / "report/report.md")
    assert html.is_file() and md.is_file() and "J/video" in md.read_text()
    text = md.read_text()
    for backend in ("torch", "ort", "ort-int8", "tvm"):
        assert f"video_spiking · {backend} ·" in text
    _check_in_browser(html)
    t0 = time.perf_counter()
    second = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=10 * 60)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "running" not in second.stdout.replace("[demo] report", "")
    assert time.perf_counter() - t0 < took / 2


def _check_in_browser(html: Path) -> None:
    from selenium.webdriver.common.by import By

    browser = chromium()
    try:
        browser.get(html.as_uri())
        for key in ("latency", "throughput", "energy", "accuracy", "split"):
            svg = browser.find_element(By.CSS_SELECTOR, f"figure#plot-{key} svg")
            assert svg.size["width"] > 200 and len(svg.find_elements(By.CSS_SELECTOR, "path")) > 5
        rows = browser.find_elements(By.CSS_SELECTOR, "table#summary tbody tr")
        assert len(rows) == 4 and all("estimated (no power sensor)" in r.text or "measured" in r.text for r in rows)
    finally:
        browser.quit()


def test_demo_training_is_reproducible(tmp_path):
    """The demo's seed fixes the initial weights too: training the same clips twice gives the same checkpoint."""
    import torch

    d = Demo(tmp_path, progress=False, per_class=3, size=(32, 32), clip_len=4, model_size="tiny", epochs=1)
    steps = {s.name: s for s in d.steps()}
    steps["synth"].run()
    steps["clips"].run()
    weights = []
    for state in (1, 2):
        torch.manual_seed(state)  # whatever the process's global RNG holds before the step
        steps["train"].run()
        weights.append(d.checkpoint.read_bytes())
    assert weights[0] == weights[1]
