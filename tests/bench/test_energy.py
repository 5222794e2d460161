"""Energy counters: RAPL read from a powercap directory (a temporary one here: this VM has none), wrap-around undone,
and a counter that is missing or does not move reported with its reason, never as 0 joules."""

from pathlib import Path

import pytest

from slimformer.bench.energy import EnergyMeter, RaplCounter, Unreadable, energy_text

MAX = 262_143_328_850  # a real package's max_energy_range_uj


def zone(root: Path, name: str, kind: str, energy: int, span: int = MAX) -> Path:
    path = root / name
    path.mkdir(parents=True)
    (path / "name").write_text(kind + "\n")
    (path / "energy_uj").write_text(f"{energy}\n")
    (path / "max_energy_range_uj").write_text(f"{span}\n")
    return path


@pytest.fixture
def powercap(tmp_path):
    """Two packages, plus a core sub-zone and psys, which overlap the packages and must be left out."""
    zones = {"p0": zone(tmp_path, "intel-rapl:0", "package-0", 5_000_000),
             "p1": zone(tmp_path, "intel-rapl:1", "package-1", MAX - 1_000_000)}
    zone(tmp_path, "intel-rapl:0:0", "core", 1)
    zone(tmp_path, "intel-rapl:2", "psys", 7)
    return tmp_path, zones


def advance(zones: dict, **joules: float) -> None:
    for key, j in joules.items():
        path = zones[key] / "energy_uj"
        value = (int(path.read_text()) + int(j * 1e6)) % MAX
        path.write_text(f"{value}\n")


def test_rapl_sums_the_packages_and_undoes_a_wrap(powercap):
    root, zones = powercap
    rapl = RaplCounter(root)
    assert [z.name for z in rapl.zones] == ["intel-rapl:0", "intel-rapl:1"]
    before = rapl.read()
    advance(zones, p0=3.0, p1=2.5)  # package 1 wraps past its range
    after = rapl.read()
    assert after[1] < before[1]
    assert rapl.joules(before, after) == pytest.approx(5.5)


def test_meter_gives_joules_per_thousand_texts_and_power(powercap):
    root, zones = powercap
    meter = EnergyMeter(root)
    assert meter.not_readable == {}
    started = meter.start()
    advance(zones, p0=10.0, p1=10.0)
    energy = meter.stop(started, texts=400)
    assert energy["texts"] == 400 and energy["sources"]["rapl"]["joules"] == pytest.approx(20.0)
    assert energy["joules_per_1k_texts"] == pytest.approx(50.0) and energy["sources"]["rapl"]["watts"] > 0
    assert energy_text(energy) == "50 J (rapl)"


def test_what_cannot_be_read_says_why_and_is_never_zero(powercap, tmp_path):
    root, zones = powercap
    with pytest.raises(Unreadable, match="no RAPL package counters here"):
        RaplCounter(tmp_path / "none")
    missing = EnergyMeter(tmp_path / "none")
    energy = missing.stop(missing.start(), texts=100)
    assert energy["joules_per_1k_texts"] is None and energy["sources"] == {}
    assert "no RAPL package counters here" in energy["not_readable"]["rapl"]
    assert energy_text(energy) == "not readable here"
    still = EnergyMeter(root)  # files there, but nothing moves them (what some VMs expose)
    energy = still.stop(still.start(), texts=100)
    assert energy["joules_per_1k_texts"] is None and "did not advance" in energy["not_readable"]["rapl"]
    (zones["p0"] / "energy_uj").write_text("garbage\n")
    with pytest.raises(Unreadable, match="RAPL energy_uj unreadable"):
        RaplCounter(root)


def test_a_partial_sum_says_so():
    energy = {"joules_per_1k_texts": 12.5, "sources": {"rapl": {}}, "not_readable": {"nvml": "no counter"}}
    assert energy_text(energy) == "12.5 J (rapl only)" and energy_text(None) == "-"
