"""AMD (rocm-smi) and Apple silicon (system_profiler + sysctl) detection, replayed from
recorded outputs in tests/fixtures/devices/."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import types
from collections.abc import Sequence
from pathlib import Path

import pytest

from hives.agent import devices
from hives.agent.devices import detect_devices
from hives.agent.devices.apple import AppleDetector
from hives.agent.devices.common import normalise_gpu_type
from hives.agent.devices.cpu import CpuDetector
from hives.agent.devices.inventory import InventoryDetector
from hives.agent.devices.rocm import RocmDetector
from testkit.machines import load_machine

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "devices"
ROCM = RocmDetector.COMMAND
PROFILER = ("system_profiler", "SPDisplaysDataType", "-json")
MEMSIZE = ("sysctl", "-n", "hw.memsize")
BRAND = ("sysctl", "-n", "machdep.cpu.brand_string")
GiB = 2**30


def fixture(name: str) -> str:
    return (FIXTURES / name).read_text()


class Recorded:
    """A Runner answering from recorded outputs: a string, or an exception to raise."""

    def __init__(self, answers: dict[tuple[str, ...], str | BaseException]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str], timeout: float) -> str:
        key = tuple(argv)
        self.calls.append(key)
        answer = self.answers.get(key, FileNotFoundError(2, "No such file", argv[0]))
        if isinstance(answer, BaseException):
            raise answer
        return answer


def rocm(output: str | BaseException) -> tuple[RocmDetector, Recorded]:
    runner = Recorded({ROCM: output})
    return RocmDetector(runner, amdgpu_ids=None), runner


# --- gpu_type normalisation ------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("AMD Instinct MI300X", "MI300X"),
        ("AMD Instinct MI300X OAM", "MI300X"),
        ("AMD Instinct MI250X / MI250", "MI250X"),
        ("AMD Instinct MI300A", "MI300A"),
        ("AMD Instinct\u2122 MI355X", "MI355X"),
        ("Radeon RX 7900 XTX", "RX7900XTX"),
        ("AMD Radeon RX 7900 XTX", "RX7900XTX"),
        ("AMD Radeon RX 7900 XT", "RX7900XT"),
        ("AMD Radeon RX 7900 GRE", "RX7900GRE"),
        ("AMD Radeon RX 6800 XT", "RX6800XT"),
        ("Navi 31 [Radeon RX 7900 XT]", "RX7900XT"),
        ("Navi 31 [Radeon RX 7900 XT/7900 XTX/7900M]", "RX7900"),  # which one? family only
        ("AMD Radeon Pro W7900", "W7900"),
        ("Rembrandt [Radeon 680M]", "Radeon680M"),
        ("Apple M2 Ultra", "M2Ultra"),
        ("Apple M3 Max", "M3Max"),
        ("Apple M1", "M1"),
        # the NVIDIA names stay as they were
        ("NVIDIA GeForce RTX 4090", "RTX4090"),
        ("NVIDIA GeForce RTX 3090 Ti", "RTX3090Ti"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("NVIDIA L40S", "L40S"),
        ("NVIDIA RTX A6000", "RTXA6000"),
    ],
)
def test_gpu_types(name: str, expected: str) -> None:
    assert normalise_gpu_type(name) == expected


# --- AMD: rocm-smi ---------------------------------------------------------------------


def test_two_mi300x_from_their_rocm_smi_recording() -> None:
    det, runner = rocm(fixture("rocm-smi-2x-mi300x.json"))
    assert det.is_available()
    found = det.gather()
    assert runner.calls == [ROCM]  # is_available's answer serves the gather that follows
    assert [d["index"] for d in found] == [0, 1]
    assert {d["kind"] for d in found} == {"rocm"}
    assert {d["gpu_type"] for d in found} == {"MI300X"}
    assert found[1] == {
        "index": 1,
        "kind": "rocm",
        "name": "AMD Instinct MI300X",
        "gpu_type": "MI300X",
        "memory_total_mb": 196288,
        "memory_free_mb": (205822885888 - 154618822656) // 2**20,
        "memory_used_mb": 154618822656 // 2**20,
        "utilization": 87,
    }
    assert found[0]["memory_used_mb"] == 279
    assert found[0]["utilization"] == 0
    # the device strings other code builds from them
    assert [f"{d['kind']}:{d['index']}" for d in found] == ["rocm:0", "rocm:1"]


def test_rx7900xtx_is_told_from_its_siblings_by_device_id_and_revision() -> None:
    det, _ = rocm(fixture("rocm-smi-rx7900xtx.json"))
    [gpu] = detect_devices([det])
    assert gpu["name"] == "AMD Radeon RX 7900 XTX"
    assert gpu["gpu_type"] == "RX7900XTX"
    assert gpu["memory_total_mb"] == 24560
    assert gpu["memory_free_mb"] == (25753026560 - 1762021376) // 2**20
    assert gpu["utilization"] == 3


def test_the_systems_amdgpu_ids_is_read_when_present(tmp_path: Path) -> None:
    ids = tmp_path / "amdgpu.ids"
    ids.write_text("# List of AMDGPU IDs\n1.0.0\n744C,\tC8,\tAMD Radeon RX 7900 XTX Founders\n")
    det = RocmDetector(Recorded({ROCM: fixture("rocm-smi-rx7900xtx.json")}), amdgpu_ids=str(ids))
    assert det.gather()[0]["name"] == "AMD Radeon RX 7900 XTX Founders"


def test_an_unknown_revision_keeps_the_pci_name_and_the_family() -> None:
    card = json.loads(fixture("rocm-smi-rx7900xtx.json"))
    card["card0"]["Device Rev"] = "0x99"
    det, _ = rocm(json.dumps(card))
    [gpu] = det.gather()
    assert gpu["name"] == "Navi 31 [Radeon RX 7900 XT/7900 XTX/7900M]"
    assert gpu["gpu_type"] == "RX7900"


def test_rocm5_spelling_a_system_entry_and_a_warning_before_the_json() -> None:
    out = (
        "WARNING: AMD GPU device(s) is/are in a low-power state. Check power control/"
        "runtime_status\n\n"
        + json.dumps(
            {
                "card0": {
                    "GPU use (%)": "N/A",
                    "VRAM Total Memory (B)": "25753026560",
                    "VRAM Total Used Memory (B)": "25165824",
                    "Card series": "Radeon RX 7900 XTX",
                    "Card model": "0x5315",
                    "Card vendor": "Advanced Micro Devices, Inc. [AMD/ATI]",
                    "Card SKU": "APM7199",
                },
                "system": {"Driver version": "6.3.6"},
            }
        )
    )
    det, _ = rocm(out)
    [gpu] = det.gather()
    assert gpu["name"] == "Radeon RX 7900 XTX"
    assert gpu["gpu_type"] == "RX7900XTX"
    assert gpu["utilization"] is None  # 'N/A'
    assert gpu["memory_used_mb"] == 24


def test_a_card_without_vram_figures_is_left_out() -> None:
    data = json.loads(fixture("rocm-smi-2x-mi300x.json"))
    data["card1"]["VRAM Total Memory (B)"] = "None"
    det, _ = rocm(json.dumps(data))
    assert [d["index"] for d in det.gather()] == [0]


def test_no_rocm_smi_means_no_amd_devices_no_error_and_no_retry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    det, runner = rocm(FileNotFoundError(2, "No such file or directory", "rocm-smi"))
    with caplog.at_level(logging.DEBUG, logger="hives.devices"):
        assert det.is_available() is False
        assert det.gather() == []
        assert det.is_available() is False
    assert runner.calls == [ROCM]  # the binary does not appear while we run
    assert len([r for r in caplog.records if "rocm-smi" in r.getMessage()]) == 1


def test_a_hung_rocm_smi_is_not_available_logged_once_and_tried_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    det, runner = rocm(subprocess.TimeoutExpired(list(ROCM), 10.0))
    with caplog.at_level(logging.DEBUG, logger="hives.devices"):
        assert det.is_available() is False
        assert det.is_available() is False
    assert len(runner.calls) == 2
    assert len([r for r in caplog.records if "did not answer" in r.getMessage()]) == 1


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "ERROR:root:ROCm SMI returned 8 (the expected value is 0)\n",
        "{not json",
        "[1, 2, 3]",
        "{}",
        '{"card0": {"GPU use (%)": "0"}}',
        '{"card0": "Driver not initialized (amdgpu not found in modules)"}',
        "\x00\xff garbage { ] }",
    ],
)
def test_garbage_from_rocm_smi_means_not_available(
    garbage: str, caplog: pytest.LogCaptureFixture
) -> None:
    det, _ = rocm(garbage)
    with caplog.at_level(logging.DEBUG, logger="hives.devices"):
        assert det.is_available() is False
        assert det.gather() == []


def test_rocm_gpus_come_before_the_cpu() -> None:
    det, _ = rocm(fixture("rocm-smi-2x-mi300x.json"))
    assert [d["kind"] for d in detect_devices([det, CpuDetector()])] == ["rocm", "rocm", "cpu"]


def test_the_default_detectors_include_amd_and_apple(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "_DEFAULT", [])
    kinds = [type(d).__name__ for d in devices.default_detectors()]
    assert kinds == ["NvidiaDetector", "RocmDetector", "AppleDetector", "CpuDetector"]


# --- Apple silicon ---------------------------------------------------------------------


def mac(
    machine: str, *, free: int, system: str = "Darwin", arch: str = "arm64"
) -> tuple[AppleDetector, Recorded]:
    runner = Recorded(
        {
            PROFILER: fixture(f"{machine}.system_profiler.json"),
            MEMSIZE: fixture(f"{machine}.hw.memsize.txt"),
        }
    )
    return AppleDetector(runner, system=system, machine=arch, available=lambda: free), runner


def test_m2_ultra_192gb_is_one_unified_metal_device() -> None:
    det, _ = mac("mac-studio-m2-ultra", free=150 * GiB)
    assert det.is_available()
    assert det.gather() == [
        {
            "index": 0,
            "kind": "metal",
            "name": "Apple M2 Ultra",
            "gpu_type": "M2Ultra",
            "memory_total_mb": 196608,
            "memory_free_mb": 150 * 1024,
            "memory_used_mb": 196608 - 150 * 1024,
            "utilization": None,
            "unified": True,
            "gpu_cores": 76,
        }
    ]


def test_m3_max_64gb() -> None:
    det, _ = mac("macbook-pro-m3-max", free=20 * GiB)
    [gpu] = detect_devices([det])
    assert (gpu["name"], gpu["gpu_type"], gpu["gpu_cores"]) == ("Apple M3 Max", "M3Max", 40)
    assert gpu["memory_total_mb"] == 65536
    assert gpu["memory_free_mb"] == 20480
    assert f"{gpu['kind']}:{gpu['index']}" == "metal:0"


def test_the_chip_is_read_once_and_free_memory_every_time() -> None:
    free = [100 * GiB]
    runner = Recorded(
        {
            PROFILER: fixture("mac-studio-m2-ultra.system_profiler.json"),
            MEMSIZE: fixture("mac-studio-m2-ultra.hw.memsize.txt"),
        }
    )
    det = AppleDetector(runner, system="Darwin", machine="arm64", available=lambda: free[0])
    assert det.gather()[0]["memory_free_mb"] == 100 * 1024
    free[0] = 40 * GiB
    assert det.is_available()
    assert det.gather()[0]["memory_free_mb"] == 40 * 1024
    assert runner.calls == [PROFILER, MEMSIZE]


@pytest.mark.parametrize(
    ("system", "arch"), [("Linux", "x86_64"), ("Linux", "aarch64"), ("Darwin", "x86_64")]
)
def test_not_apple_silicon_runs_nothing(system: str, arch: str) -> None:
    det, runner = mac("mac-studio-m2-ultra", free=GiB, system=system, arch=arch)
    assert det.is_available() is False
    assert det.gather() == []
    assert runner.calls == []


def test_without_system_profiler_the_cpu_brand_names_the_chip() -> None:
    runner = Recorded(
        {
            PROFILER: "garbage, not JSON",
            BRAND: "Apple M2 Ultra\n",
            MEMSIZE: "206158430208\n",
        }
    )
    det = AppleDetector(runner, system="Darwin", machine="arm64", available=lambda: GiB)
    [gpu] = det.gather()
    assert gpu["gpu_type"] == "M2Ultra"
    assert "gpu_cores" not in gpu


@pytest.mark.parametrize(
    "answers",
    [
        {},  # no system_profiler, no sysctl
        {PROFILER: subprocess.TimeoutExpired(list(PROFILER), 15.0), MEMSIZE: "206158430208"},
        {PROFILER: '{"SPDisplaysDataType": []}', BRAND: "", MEMSIZE: "206158430208"},
        {PROFILER: fixture("mac-studio-m2-ultra.system_profiler.json"), MEMSIZE: "kern.memsize?"},
        {PROFILER: '{"SPDisplaysDataType": "nonsense"}', MEMSIZE: "1"},
    ],
)
def test_apple_failures_mean_not_available_never_an_exception(
    answers: dict[tuple[str, ...], str | BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    runner = Recorded(answers)
    det = AppleDetector(runner, system="Darwin", machine="arm64", available=lambda: GiB)
    with caplog.at_level(logging.DEBUG, logger="hives.devices"):
        assert det.is_available() is False
        assert det.gather() == []
        calls = len(runner.calls)
        assert det.is_available() is False
    assert len(runner.calls) == calls  # the chip is not looked up again


def test_an_imported_torch_without_mps_vetoes_metal(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.SimpleNamespace(
        backends=types.SimpleNamespace(mps=types.SimpleNamespace(is_available=lambda: False))
    )
    monkeypatch.setitem(sys.modules, "torch", fake)
    det, _ = mac("mac-studio-m2-ultra", free=GiB)
    assert det.is_available() is False


def test_torch_is_not_imported_just_to_detect_metal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    det, _ = mac("mac-studio-m2-ultra", free=GiB)
    assert det.is_available() is True
    assert "torch" not in sys.modules


def test_a_recorded_mac_inventory_is_unified_too() -> None:
    [gpu] = InventoryDetector(load_machine("mac-studio-m2-ultra")).gather()
    assert (gpu["kind"], gpu["gpu_type"], gpu["unified"]) == ("metal", "M2Ultra", True)
