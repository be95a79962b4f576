"""`edgeml bench`: results schema, end-to-end split, energy labels, clear errors."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from bench_fakes import FakePynvml
from bench_tiny import NAME, install_fake_video_module, make_artefact, make_videos

from edgeml import cli
from edgeml.bench import run as bench_run
from edgeml.bench.meters import MeterSet, NvmlMeter
from edgeml.bench.run import ESTIMATED_LABEL, SCHEMA_VERSION, bench, load_results
from edgeml.errors import InputError, MissingDependencyError

NO_METERS = MeterSet([], [])


@pytest.fixture
def ort_artefact(tmp_path):
    return make_artefact(tmp_path / "artefact")


def test_model_only_random_input_reports_percentiles_per_batch(ort_artefact, tmp_path):
    r = bench(artefact=ort_artefact, backend="ort", input="random", batch_sizes=(1, 4), repeats=5, warmup=1,
              out=tmp_path / "r.json", meters=NO_METERS, progress=False)
    assert r["schema_version"] == SCHEMA_VERSION and r["model"] == NAME and r["end_to_end"] is None
    b1, b4 = r["model_only"]["batches"]
    assert (b1["batch"], b4["batch"]) == (1, 4) and b1["repeats"] == 5 and len(b4["samples_s"]) == 5
    assert 0 < b1["median_s"] <= b1["p90_s"] <= b1["p99_s"] <= b1["max_s"]
    assert b4["items_per_s"] == pytest.approx(4 / b4["median_s"])
    assert r["environment"]["cpu_count"] >= 1 and "affinity" in r["environment"]
    assert load_results(tmp_path / "r.json")["summary"] == json.loads(json.dumps(r["summary"]))


def test_fixed_batch_artefact_records_why_other_batches_were_not_run(tmp_path, monkeypatch):
    art = make_artefact(tmp_path / "fixed", batch=1)
    r = bench(artefact=art, backend="ort", batch_sizes=(1, 2), repeats=3, warmup=1, meters=NO_METERS,
              progress=False)
    ok, bad = r["model_only"]["batches"]
    assert "median_s" in ok and "error" in bad and bad["batch"] == 2


def test_end_to_end_reports_videos_per_s_split_and_accuracy(ort_artefact, tmp_path, monkeypatch):
    install_fake_video_module(monkeypatch)
    videos = make_videos(tmp_path / "videos", per_class=3)
    r = bench(artefact=ort_artefact, backend="ort", input="data", data=videos, videos=4, batch_sizes=(1,),
              repeats=3, warmup=1, meters=NO_METERS, progress=False)
    e = r["end_to_end"]
    assert e["videos"] == 4 and e["clips"] == 8
    assert e["split_s"]["decode"] == pytest.approx(4 * 0.002) and e["split_s"]["kernels"] == pytest.approx(0.004)
    assert e["split_s"]["model"] > 0 and e["videos_per_s"] == pytest.approx(4 / e["wall_s"])
    assert sum(e["split_s"].values()) <= e["wall_s"] * 1.01
    assert r["accuracy"] == {"top1": 1.0, "correct": 4, "videos": 4}  # round-robin: 2 left + 2 right


def test_energy_is_labelled_estimated_without_a_power_sensor(ort_artefact):
    r = bench(artefact=ort_artefact, backend="ort", batch_sizes=(1,), repeats=3, warmup=1, meters=NO_METERS,
              progress=False)
    assert r["energy"]["method"] == "estimated" and r["energy"]["label"] == ESTIMATED_LABEL
    assert r["summary"]["energy_label"] == "estimated (no power sensor)"


def test_energy_is_measured_with_a_sensor(ort_artefact, tmp_path, monkeypatch):
    install_fake_video_module(monkeypatch)
    videos = make_videos(tmp_path / "videos")
    nvml = FakePynvml(lambda t: 100.0, energy_counter=False)
    meters = MeterSet([NvmlMeter(nvml, 0, interval=0.002)], [])
    real = bench_run._run_video

    def slow_video(*a, **k):  # long enough for the sampler to see each video
        time.sleep(0.02)
        return real(*a, **k)

    monkeypatch.setattr(bench_run, "_run_video", slow_video)
    r = bench(artefact=ort_artefact, backend="ort", input="data", data=videos, videos=4, batch_sizes=(1,),
              repeats=3, warmup=1, meters=meters, progress=False)
    e = r["energy"]
    assert e["method"] == "measured" and e["label"] == "measured (NVML)"
    (reading,) = e["readings"]
    assert reading["seconds"] >= r["end_to_end"]["wall_s"]  # the meter window covers the timed videos
    assert e["joules_per_video"] == pytest.approx(100.0 * reading["seconds"] / 4, rel=0.01)


def test_results_of_another_schema_version_are_refused(ort_artefact, tmp_path):
    bench(artefact=ort_artefact, backend="ort", batch_sizes=(1,), repeats=2, warmup=0, out=tmp_path / "r.json",
          meters=NO_METERS, progress=False)
    data = json.loads((tmp_path / "r.json").read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / "r2.json").write_text(json.dumps(data))
    with pytest.raises(InputError, match=f"schema version {SCHEMA_VERSION + 1}.*reads version {SCHEMA_VERSION}"):
        load_results(tmp_path / "r2.json")
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(InputError, match="not an edgeml bench results file"):
        load_results(tmp_path / "other.json")


def test_missing_artefact_is_a_clear_error(tmp_path):
    with pytest.raises(InputError, match="model artefact folder not found.*edgeml export"):
        bench(artefact=tmp_path / "nope", backend="ort", meters=NO_METERS, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no manifest.json"):
        bench(artefact=tmp_path / "empty", backend="ort", meters=NO_METERS, progress=False)


def test_backend_not_installed_names_the_extra(monkeypatch, tmp_path):
    real = bench_run.importlib.util.find_spec
    monkeypatch.setattr(bench_run.importlib.util, "find_spec", lambda m: None if m == "tvm" else real(m))
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgeml\[tvm\]'"):
        bench(artefact=tmp_path, backend="tvm", meters=NO_METERS)


def test_tensorrt_missing_here_names_its_extra(tmp_path):
    # TensorRT is not installable on this machine (see NOTES.md)
    if bench_run.importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgeml\[tensorrt\]'"):
        bench(artefact=tmp_path, backend="trt", meters=NO_METERS)


def test_cli_bench_prints_throughput_and_energy_label(ort_artefact, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_run, "open_meters", lambda **kw: NO_METERS)
    out = tmp_path / "r.json"
    assert cli.main(["bench", "--artefact", str(ort_artefact), "--backend", "ort", "--batch-sizes", "1,2",
                     "--repeats", "3", "--warmup", "1", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "clips/s" in text and "estimated (no power sensor)" in text and out.is_file()


def test_cli_bench_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert cli.main(["bench", "--artefact", str(tmp_path / "missing"), "--backend", "ort"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model artefact folder not found" in err[0]


def test_torch_backend_runs_a_registry_model_and_needs_weights():
    kw = {"batch_sizes": (1, 2), "repeats": 3, "warmup": 1, "meters": NO_METERS, "progress": False}
    r = bench(model=NAME, backend="torch", random_init=True, **kw)
    assert r["backend"] == "torch" and r["weights"] == "random init"
    assert [b["batch"] for b in r["model_only"]["batches"]] == [1, 2] and r["summary"]["clip_latency_median_s"] > 0
    with pytest.raises(InputError, match="no weights"):
        bench(model=NAME, backend="torch", **kw)


class _FakeRaplPower:
    """A thread that advances a fake RAPL counter as a 50 W package would (with the file's own wrap range)."""

    def __init__(self, zone, watts=50.0, wrap=10**12):
        import threading

        self.zone, self.watts, self.wrap = zone, watts, wrap
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        from bench_fakes import write_atomic

        t0, uj0 = time.perf_counter(), 0
        while not self.stop.wait(0.002):
            uj = int(uj0 + self.watts * (time.perf_counter() - t0) * 1e6) % self.wrap
            write_atomic(self.zone / "energy_uj", f"{uj}\n")

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


@pytest.mark.parametrize("kind", ["rapl", "ina3221"])
def test_energy_line_says_measured_with_a_fake_sysfs_sensor(kind, ort_artefact, tmp_path, monkeypatch, capsys):
    from bench_fakes import make_ina3221, make_rapl

    from edgeml.bench.meters import open_meters
    from edgeml.bench.report import print_summary

    install_fake_video_module(monkeypatch)
    videos = make_videos(tmp_path / "videos")
    if kind == "rapl":
        (zone,) = make_rapl(tmp_path / "sys", {"package-0": (0, 10**12)})
        power = _FakeRaplPower(zone)
    else:
        make_ina3221(tmp_path / "sys", {"VDD_IN": (5000, 1000)})  # 5 W
        power = _FakeRaplPower(tmp_path, watts=0)  # nothing to advance: INA rails are instantaneous power
    meters = open_meters(tmp_path / "sys", nvml=False, interval=0.005)
    real = bench_run._run_video

    def slow_video(*a, **k):  # 4 x 60 ms: long against the fake counter's update lag
        time.sleep(0.06)
        return real(*a, **k)

    monkeypatch.setattr(bench_run, "_run_video", slow_video)
    with power:
        r = bench(artefact=ort_artefact, backend="ort", input="data", data=videos, videos=4, batch_sizes=(1,),
                  repeats=3, warmup=1, meters=meters, progress=False)
    label = {"rapl": "measured (RAPL)", "ina3221": "measured (INA3221)"}[kind]
    assert r["energy"]["label"] == label and r["summary"]["energy_label"] == label
    (reading,) = r["energy"]["readings"]
    watts = 50.0 if kind == "rapl" else 5.0
    assert r["energy"]["joules_per_video"] == pytest.approx(watts * reading["seconds"] / 4, rel=0.15)
    print_summary(r)
    assert label in capsys.readouterr().out


def test_without_a_sensor_the_model_estimate_stands_beside_the_front_ends_measured_cpu_seconds(ort_artefact, tmp_path,
                                                                                               monkeypatch):
    from edgeml.bench.run import FRONT_END_LABEL

    install_fake_video_module(monkeypatch)
    videos = make_videos(tmp_path / "videos")
    r = bench(artefact=ort_artefact, backend="ort", input="data", data=videos, videos=4, batch_sizes=(1,),
              repeats=3, warmup=1, meters=NO_METERS, progress=False)
    e = r["energy"]
    assert e["label"] == ESTIMATED_LABEL and e["scope"].startswith("model only")
    assert e["front_end"]["label"] == FRONT_END_LABEL and "CPU" in FRONT_END_LABEL
    assert e["front_end"]["cpu_s_per_video"] == pytest.approx(0.0015 + 0.0005)  # the fake's decode + kernels CPU
    assert r["end_to_end"]["front_end_cpu_s"] == pytest.approx({"decode": 4 * 0.0015, "kernels": 4 * 0.0005})
    assert r["summary"]["front_end_cpu_s_per_video"] == pytest.approx(0.002)


def test_with_a_sensor_the_joules_span_the_whole_pipeline_not_the_model_alone(ort_artefact, tmp_path, monkeypatch):
    install_fake_video_module(monkeypatch)
    meters = MeterSet([NvmlMeter(FakePynvml(lambda t: 10.0, energy_counter=False), 0, interval=0.002)], [])
    r = bench(artefact=ort_artefact, backend="ort", input="data", data=make_videos(tmp_path / "videos"), videos=4,
              batch_sizes=(1,), repeats=3, warmup=1, meters=meters, progress=False)
    assert r["energy"]["method"] == "measured" and r["energy"]["scope"].startswith("end-to-end (decode + extraction")
    assert "front_end" not in r["energy"]  # the front end is inside the measured joules


def test_p_frames_become_rgb_only_for_models_that_read_frames(tmp_path):
    asked = []

    def extract_clips(path, *, clip_len, grid, size, frames=True, timings=None, resize="crop"):
        asked.append(frames)
        return [{"iframe": np.zeros((3, 8, 8), np.float32), "frames": np.zeros((2, 3, 8, 8), np.float32)}]

    class Runtime:
        def run(self, feeds):
            return [np.zeros((1, 2), np.float32)]

    settings = {"clip_len": 1, "grid": 4, "size": (8, 8)}
    bench_run._run_video(Runtime(), ["iframe"], extract_clips, tmp_path / "v.mp4", settings)
    bench_run._run_video(Runtime(), ["iframe", "frames"], extract_clips, tmp_path / "v.mp4", settings)
    assert asked == [False, True]


def test_engine_ray_without_ray_installed_names_the_extra(ort_artefact, tmp_path, monkeypatch):
    import sys

    install_fake_video_module(monkeypatch)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(MissingDependencyError, match=r"ray is not installed.*pip install 'edgeml\[ray\]'"):
        bench(artefact=ort_artefact, backend="ort", input="data", data=make_videos(tmp_path / "v"), videos=2,
              batch_sizes=(1,), repeats=2, warmup=0, meters=NO_METERS, progress=False, engine="ray")


def test_engine_ray_needs_video_input_and_address_needs_ray(ort_artefact):
    with pytest.raises(InputError, match="--engine ray fans videos out.*--input data"):
        bench(artefact=ort_artefact, backend="ort", engine="ray", meters=NO_METERS, progress=False)
    with pytest.raises(InputError, match="--address.*needs --engine ray"):
        bench(artefact=ort_artefact, backend="ort", address="auto", meters=NO_METERS, progress=False)


def test_bench_reads_the_sensors_its_artefacts_profile_names(tmp_path):
    """The profile's [power] sensors (recorded in the manifest) choose the meters; none named, the host is scanned."""
    art = tmp_path / "art"
    art.mkdir()
    (art / "manifest.json").write_text(json.dumps({"power_sensors": ["/sys/class/powercap/intel-rapl:0"]}))
    assert bench_run._profile_sensors(art) == ["/sys/class/powercap/intel-rapl:0"]
    (art / "manifest.json").write_text(json.dumps({"power_sensors": []}))
    assert bench_run._profile_sensors(art) is None and bench_run._profile_sensors(None) is None
