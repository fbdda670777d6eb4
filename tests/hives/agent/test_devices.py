from __future__ import annotations

import pytest

from hives.agent.devices import detect_devices
from hives.agent.devices.common import normalise_gpu_type
from hives.agent.devices.cpu import CpuDetector
from hives.agent.devices.nvidia import NvidiaDetector
from testkit.machines import CountingNvml, NoDriverNvml, load_machine


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("NVIDIA GeForce RTX 4090", "RTX4090"),
        ("NVIDIA GeForce RTX 3090 Ti", "RTX3090Ti"),
        ("NVIDIA GeForce RTX 4080 SUPER", "RTX4080Super"),
        ("NVIDIA H100 80GB HBM3", "H100"),
        ("NVIDIA H200", "H200"),
        ("NVIDIA A100-SXM4-80GB", "A100"),
        ("Tesla V100-SXM2-16GB", "V100"),
        ("NVIDIA L40S", "L40S"),
        ("Apple M2 Ultra", "M2Ultra"),
        ("Apple M3 Max", "M3Max"),
        ("AMD Instinct MI300X", "MI300X"),
    ],
)
def test_gpu_names_are_normalised_for_scripts(name: str, expected: str) -> None:
    assert normalise_gpu_type(name) == expected


def test_rtx4090_box_is_detected_from_its_nvml_recording() -> None:
    nvml = CountingNvml(load_machine("gaming-pc-rtx4090"))
    devices = NvidiaDetector(nvml).gather()
    assert devices == [
        {
            "index": 0,
            "kind": "cuda",
            "name": "NVIDIA GeForce RTX 4090",
            "gpu_type": "RTX4090",
            "memory_total_mb": 24564,
            "memory_free_mb": 6132,
            "memory_used_mb": 18432,
            "utilization": 87,
        }
    ]


def test_two_gpu_server_and_bytes_names() -> None:
    two = NvidiaDetector(CountingNvml(load_machine("old-server-2x3090"))).gather()
    assert [d["index"] for d in two] == [0, 1]
    assert {d["gpu_type"] for d in two} == {"RTX3090"}
    h100 = NvidiaDetector(CountingNvml(load_machine("dgx-h100"))).gather()
    assert h100[0]["name"] == "NVIDIA H100 80GB HBM3"
    assert h100[0]["gpu_type"] == "H100"


def test_no_driver_means_no_nvidia_devices_and_no_error() -> None:
    det = NvidiaDetector(NoDriverNvml())
    assert det.is_available() is False
    assert det.gather() == []


def test_detect_devices_lists_gpus_then_the_cpu() -> None:
    nvml = CountingNvml(load_machine("old-server-2x3090"))
    devices = detect_devices([NvidiaDetector(nvml), CpuDetector()])
    assert [d["kind"] for d in devices] == ["cuda", "cuda", "cpu"]
    cpu = devices[-1]
    assert cpu["gpu_type"] == "CPU"
    assert cpu["memory_total_mb"] > cpu["memory_free_mb"] > 0
    assert nvml.inits == 1  # initialised once, not per call


def test_a_failing_detector_does_not_hide_the_others() -> None:
    class Broken:
        def is_available(self) -> bool:
            raise OSError("boom")

        def gather(self) -> list[dict[str, object]]:
            return []

    assert [d["kind"] for d in detect_devices([Broken(), CpuDetector()])] == ["cpu"]
