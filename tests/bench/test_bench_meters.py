"""Power meters against fake sysfs trees and a fake pynvml with known values."""

from __future__ import annotations

import time

import pytest
from bench_fakes import FakePynvml, make_ina3221, make_rapl, wavy_energy, wavy_power, write_atomic

from edgeml.bench.meters import (
    Ina3221Meter,
    NvmlMeter,
    available_sensors,
    counter_delta,
    integrate_power,
    open_meters,
)


def test_integrating_a_known_trace_gives_its_energy():
    times = [i * 0.001 for i in range(1001)]
    watts = [wavy_power(t) for t in times]
    assert integrate_power(times, watts) == pytest.approx(wavy_energy(1.0) - wavy_energy(0.0), rel=1e-4)


def test_counter_delta_handles_wrap_around():
    assert counter_delta(100.0, 250.0, wrap=1000.0) == 150.0
    assert counter_delta(900.0, 50.0, wrap=1000.0) == 150.0


def test_rapl_energy_is_the_counter_increase_in_joules(tmp_path):
    (zone,) = make_rapl(tmp_path, {"package-0": (5_000_000, 262_143_328_850)})
    meters = open_meters(tmp_path, nvml=False, kinds=("rapl",))
    assert [m.kind for m in meters.meters] == ["rapl"] and meters.problems == []
    with meters.measure() as out:
        write_atomic(zone / "energy_uj", "7500000\n")
    (r,) = out
    assert r.joules == pytest.approx(2.5) and r.error is None and r.label == "measured (RAPL)"
    assert r.scope == "package-0"  # the core sub-zone is inside the package: not added


def test_rapl_counter_wrap_is_handled(tmp_path):
    wrap = 262_143_328_850
    (zone,) = make_rapl(tmp_path, {"package-0": (wrap - 1_000_000, wrap)})
    meters = open_meters(tmp_path, kinds=("rapl",))
    with meters.measure() as out:
        write_atomic(zone / "energy_uj", "3000000\n")  # wrapped past the range, then 3 J more
    assert out[0].joules == pytest.approx(4.0)


def test_rapl_sums_packages_and_survives_several_wraps_across_ticks(tmp_path):
    wrap = 10_000_000  # a small range so it wraps several times during the run
    z0, z1 = make_rapl(tmp_path, {"package-0": (0, wrap), "package-1": (0, wrap)})
    meter = open_meters(tmp_path, interval=0.01, kinds=("rapl",))
    with meter.measure() as out:
        total = 0
        for _ in range(12):  # 12 × 3 J: wraps 3 times; each step is seen by at least one tick
            total += 3_000_000
            write_atomic(z0 / "energy_uj", f"{total % wrap}\n")
            write_atomic(z1 / "energy_uj", f"{(total // 3) % wrap}\n")
            time.sleep(0.04)
    assert out[0].joules == pytest.approx(36.0 + 12.0)
    assert out[0].channels == pytest.approx({"package-0": 36.0, "package-1": 12.0})


def test_psys_zone_is_used_alone_because_it_contains_the_packages(tmp_path):
    make_rapl(tmp_path, {"package-0": (0, 10**12), "psys": (0, 10**12)}, subzones=False)
    (meter,) = open_meters(tmp_path, kinds=("rapl",)).meters
    assert meter.scope == "psys"


def test_missing_rapl_counter_is_reported_not_crashed(tmp_path):
    (zone,) = make_rapl(tmp_path, {"package-0": (0, 10**12)}, subzones=False)
    (zone / "energy_uj").unlink()
    meters = open_meters(tmp_path, kinds=("rapl",))
    assert meters.meters == [] and not meters.measured
    assert meters.problems == [f"{zone / 'energy_uj'}: missing"]
    assert available_sensors(tmp_path, nvml=False) == []


def test_unreadable_rapl_counter_is_reported_not_crashed(tmp_path):
    (zone,) = make_rapl(tmp_path, {"package-0": (0, 10**12)})
    (zone / "energy_uj").unlink()
    (zone / "energy_uj").mkdir()  # reading it fails with an OSError, as a root-only file does for a user
    meters = open_meters(tmp_path, kinds=("rapl",))
    assert meters.meters == []
    assert len(meters.problems) == 1 and "energy_uj" in meters.problems[0] and "unreadable" in meters.problems[0]


def test_sensor_vanishing_during_a_run_gives_an_invalid_reading_with_the_reason(tmp_path):
    (zone,) = make_rapl(tmp_path, {"package-0": (0, 10**12)})
    meters = open_meters(tmp_path, kinds=("rapl",))
    with meters.measure() as out:
        (zone / "energy_uj").unlink()
    assert out[0].joules is None and "missing" in out[0].error


def test_garbled_counter_is_reported(tmp_path):
    (zone,) = make_rapl(tmp_path, {"package-0": (0, 10**12)})
    (zone / "energy_uj").write_text("n/a\n")
    assert "not a number" in open_meters(tmp_path, kinds=("rapl",)).problems[0]


def test_nvml_total_energy_counter_gives_the_known_energy():
    nvml = FakePynvml(wavy_power, energy_counter=True, antiderivative=wavy_energy)
    meter = NvmlMeter(nvml, 0, interval=0.01)
    assert meter.method == "counter"
    with meter.measure() as out:
        time.sleep(0.5)
    (r,) = out
    expected = wavy_energy(r.t_end - nvml.t0) - wavy_energy(r.t_start - nvml.t0)  # over the window it measured
    assert r.joules == pytest.approx(expected, rel=0.01) and r.seconds >= 0.5
    assert out[0].label == "measured (NVML)"


def test_nvml_power_sampling_integrates_a_known_trace_within_1_percent():
    nvml = FakePynvml(wavy_power, energy_counter=False)
    meter = NvmlMeter(nvml, 0, interval=0.005)
    assert meter.method == "power-sampling"
    with meter.measure() as out:
        time.sleep(0.6)
    (r,) = out
    expected = wavy_energy(r.t_end - nvml.t0) - wavy_energy(r.t_start - nvml.t0)
    assert r.joules == pytest.approx(expected, rel=0.01)
    assert r.samples > 20


def test_nvml_read_failure_is_reported_not_raised():
    nvml = FakePynvml(wavy_power, energy_counter=False)
    meter = NvmlMeter(nvml, 0, interval=0.01)
    with meter.measure() as out:
        nvml.fail_reads = True
        time.sleep(0.05)
    assert out[0].joules is None and "GPU is lost" in out[0].error


def test_open_meters_finds_every_fake_gpu():
    nvml = FakePynvml(wavy_power, energy_counter=False, gpus=2)
    meters = open_meters("/nonexistent", nvml=nvml)
    assert [m.scope for m in meters.meters] == ["GPU 0 (Fake H100)", "GPU 1 (Fake H100)"]


def test_ina3221_uses_the_module_input_rail_power_as_v_times_i(tmp_path):
    hw = make_ina3221(tmp_path, {"VDD_IN": (5000, 1200), "VDD_CPU_GPU_CV": (5000, 500), "VDD_SOC": (5000, 300)})
    (meter,) = open_meters(tmp_path, interval=0.01, kinds=("ina3221",)).meters
    assert isinstance(meter, Ina3221Meter) and meter.scope == "VDD_IN"
    with meter.measure() as out:
        time.sleep(0.2)
        write_atomic(hw / "curr1_input", "2400\n")  # 6 W -> 12 W for the second half
        time.sleep(0.2)
    r = out[0]
    assert r.joules / r.seconds == pytest.approx(9.0, rel=0.1)  # mean of 6 W and 12 W
    assert r.label == "measured (INA3221)"


def test_ina3221_sums_rails_when_there_is_no_input_rail(tmp_path):
    make_ina3221(tmp_path, {"GPU": (1000, 1000), "CPU": (1000, 2000), "SOC": (1000, 3000)}, power_files=True)
    (meter,) = open_meters(tmp_path, interval=0.01, kinds=("ina3221",)).meters
    assert meter.scope == "GPU+CPU+SOC"
    with meter.measure() as out:
        time.sleep(0.2)
    assert out[0].watts == pytest.approx(6.0, rel=1e-6)


def test_ina3221_missing_current_file_is_reported(tmp_path):
    hw = make_ina3221(tmp_path, {"VDD_IN": (5000, 1000)})
    (hw / "curr1_input").unlink()
    meters = open_meters(tmp_path, kinds=("ina3221",))
    assert meters.meters == [] and "curr1_input: missing" in meters.problems[0]


def test_discovery_lists_fake_sensors(tmp_path):
    make_rapl(tmp_path, {"package-0": (0, 10**12)})
    make_ina3221(tmp_path, {"VDD_IN": (5000, 1000)})
    nvml = FakePynvml(wavy_power, energy_counter=True, antiderivative=wavy_energy)
    kinds = [s.kind for s in available_sensors(tmp_path, nvml=nvml)]
    assert kinds == ["rapl", "rapl", "nvml", "ina3221"]  # RAPL lists the package and its core zone


def test_meters_keep_sampling_while_the_main_thread_is_busy(tmp_path):
    nvml = FakePynvml(lambda t: 50.0, energy_counter=False)
    meter = NvmlMeter(nvml, 0, interval=0.01)
    with meter.measure() as out:
        end = time.perf_counter() + 0.3
        while time.perf_counter() < end:  # pure-Python busy loop: the sampler still gets the GIL
            pass
    assert out[0].samples >= 3
    assert out[0].joules == pytest.approx(50.0 * out[0].seconds, rel=1e-6)


# ------------------------------------------------------------------ the sensors a target profile names


def _on_i2c_bus(root, hw, device: str):
    """Expose hwmon `hw` where the Jetson profiles name it: /sys/bus/i2c/drivers/ina3221/<device>/hwmon/<hw> (a
    symlink, as in sysfs)."""
    link = root / "sys/bus/i2c/drivers/ina3221" / device / "hwmon" / hw.name
    link.parent.mkdir(parents=True)
    link.symlink_to(hw)


def test_profile_sensors_measure_only_the_rapl_zone_the_profile_names(tmp_path):
    from edgeml.export.targets import load_profile

    z0, z1 = make_rapl(tmp_path, {"package-0": (0, 10**12), "package-1": (0, 10**12)})
    meters = open_meters(tmp_path, interval=0.01, sensors=load_profile("x86-cpu").power.sensors)
    (meter,) = meters.meters
    assert meter.kind == "rapl" and meter.scope == "package-0" and meters.problems == []
    with meters.measure() as out:
        write_atomic(z0 / "energy_uj", "2000000\n")
        write_atomic(z1 / "energy_uj", "9000000\n")  # not named by the profile: not counted
    assert out[0].joules == pytest.approx(2.0)


def test_profile_ina3221_globs_read_the_named_rail_through_the_i2c_path(tmp_path):
    from edgeml.export.targets import load_profile

    hw = make_ina3221(tmp_path, {"VDD_IN": (5000, 1000), "VDD_CPU_GPU_CV": (5000, 400), "VDD_SOC": (5000, 200)})
    _on_i2c_bus(tmp_path, hw, "1-0040")
    meters = open_meters(tmp_path, interval=0.01, sensors=load_profile("jetson-orin-nano").power.sensors)
    (meter,) = meters.meters  # the profile names channel 1's voltage and current: VDD_IN only
    assert isinstance(meter, Ina3221Meter) and meter.scope == "VDD_IN" and meters.problems == []
    with meter.measure() as out:
        time.sleep(0.1)
    assert out[0].watts == pytest.approx(5.0, rel=1e-6)


def test_profile_ina3221_glob_over_all_channels_skips_shunt_voltages_and_keeps_the_input_rail(tmp_path):
    from edgeml.export.targets import load_profile

    hw = make_ina3221(tmp_path, {"GPU": (1000, 1000), "VDD_IN": (5000, 2000), "CPU": (1000, 500)})
    for n in (4, 5, 6):  # the driver's shunt-voltage channels: in4..6_input without a current
        (hw / f"in{n}_input").write_text("12\n")
    _on_i2c_bus(tmp_path, hw, "1-0040")
    meters = open_meters(tmp_path, interval=0.01, sensors=load_profile("jetson-agx-orin").power.sensors)
    (meter,) = meters.meters
    assert meter.scope == "VDD_IN"
    assert meters.problems == ["/sys/bus/i2c/drivers/ina3221/1-0041/hwmon/hwmon*/in*_input: not present on this "
                               "machine"]  # the profile's second monitor is not in this fake tree


def test_profile_nvml_sensor_measures_that_gpu_only():
    from edgeml.export.targets import load_profile

    nvml = FakePynvml(wavy_power, energy_counter=False, gpus=2)
    meters = open_meters("/nonexistent", nvml=nvml, sensors=load_profile("cuda-gpu").power.sensors)
    assert [m.scope for m in meters.meters] == ["GPU 0 (Fake H100)"]


def test_profile_without_sensors_measures_nothing_and_says_so(tmp_path):
    from edgeml.export.targets import load_profile

    make_rapl(tmp_path, {"package-0": (0, 10**12)})  # present, but the rpi4 profile names no sensor
    meters = open_meters(tmp_path, sensors=load_profile("rpi4").power.sensors)
    assert not meters.measured and "names no power sensor" in meters.problems[0]


def test_profile_sensor_absent_here_is_a_problem_not_an_error(tmp_path):
    meters = open_meters(tmp_path, nvml=False, sensors=["/sys/class/powercap/intel-rapl:0/energy_uj", "nvml:x",
                                                        "/sys/class/thermal/thermal_zone0/temp"])
    assert meters.meters == []
    assert meters.problems[0] == "/sys/class/powercap/intel-rapl:0/energy_uj: not present on this machine"
    assert "nvml:N" in meters.problems[1]


def test_profile_sensor_of_an_unknown_kind_is_named(tmp_path):
    temp = tmp_path / "sys/class/thermal/thermal_zone0/temp"
    temp.parent.mkdir(parents=True)
    temp.write_text("45000\n")
    meters = open_meters(tmp_path, sensors=["/sys/class/thermal/thermal_zone0/temp"])
    assert meters.meters == [] and "not a sensor edgeml reads" in meters.problems[0]
