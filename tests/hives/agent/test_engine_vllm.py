"""The parts of the vLLM engine that run without vLLM (it needs CUDA).

The request -> SamplingParams mapping is checked with stand-in classes that take
the same keyword arguments as vLLM's; the engine itself is run for real on a GPU.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

import pytest

from hives.agent.engines import get_engine
from hives.agent.engines.base import EngineError
from hives.agent.engines.vllm_engine import (
    DEFAULT_MAX_NUM_SEQS,
    VLLMEngine,
    make_sampling_params,
    sampling_kwargs,
    structured_kwargs,
    visible_device_env,
)
from hives.spec import ModelSpec


@dataclass
class FakeSamplingParams:
    """Accepts exactly the fields this engine sets (a typo would be a TypeError)."""

    n: int = 1
    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    seed: int | None = None
    structured_outputs: Any = None
    output_kind: Any = None


@dataclass
class FakeStructuredOutputsParams:
    json: Any = None
    json_object: bool | None = None


@dataclass
class FakeOldSamplingParams:
    """vLLM < 0.11 called the field guided_decoding."""

    n: int = 1
    max_tokens: int | None = 16
    temperature: float = 1.0
    top_p: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    seed: int | None = None
    guided_decoding: Any = None


REQUEST: dict[str, Any] = {
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 50,
    "temperature": 0.2,
    "top_p": 0.9,
    "stop": ["\n\n", "", "END"],
    "seed": 42,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "response_format": None,
}


def test_request_maps_onto_sampling_params() -> None:
    sp = make_sampling_params(
        REQUEST, max_tokens=30, sampling_cls=FakeSamplingParams, output_kind="DELTA"
    )
    assert sp == FakeSamplingParams(
        n=1,
        max_tokens=30,  # the budget already fitted to the context, not the request's
        temperature=0.2,
        top_p=0.9,
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        stop=["\n\n", "END"],  # empty stop strings dropped
        include_stop_str_in_output=False,
        seed=42,
        output_kind="DELTA",
    )


def test_defaults_when_the_request_says_nothing() -> None:
    kw = sampling_kwargs({"messages": []}, max_tokens=7)
    assert kw["max_tokens"] == 7
    assert kw["stop"] == [] and "seed" not in kw
    assert kw["presence_penalty"] == kw["frequency_penalty"] == 0.0
    assert 0 < kw["temperature"] <= 1 and 0 < kw["top_p"] <= 1
    assert sampling_kwargs({"temperature": 0, "top_p": 1}, max_tokens=1)["temperature"] == 0.0


def test_json_schema_and_json_object_become_structured_outputs() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string"}}}
    sp = make_sampling_params(
        {**REQUEST, "response_format": {"type": "json_schema", "schema": schema}},
        max_tokens=10,
        sampling_cls=FakeSamplingParams,
        structured_cls=FakeStructuredOutputsParams,
    )
    assert sp.structured_outputs == FakeStructuredOutputsParams(json=schema)
    sp = make_sampling_params(
        {**REQUEST, "response_format": {"type": "json_object"}},
        max_tokens=10,
        sampling_cls=FakeOldSamplingParams,
        structured_cls=FakeStructuredOutputsParams,
        structured_field="guided_decoding",
    )
    assert sp.guided_decoding == FakeStructuredOutputsParams(json_object=True)
    assert structured_kwargs(None) is None
    assert structured_kwargs({"type": "text"}) is None


def test_json_without_structured_output_support_is_a_400() -> None:
    with pytest.raises(EngineError) as err:
        make_sampling_params(
            {**REQUEST, "response_format": {"type": "json_object"}},
            max_tokens=10,
            sampling_cls=FakeSamplingParams,
            structured_cls=None,
        )
    assert (err.value.status, err.value.code, err.value.param) == (
        400,
        "unsupported_parameter",
        "response_format",
    )


def test_only_the_specs_gpu_is_shown_to_vllm() -> None:
    assert visible_device_env("cuda:1") == {"CUDA_VISIBLE_DEVICES": "1"}
    assert visible_device_env("rocm:2") == {"HIP_VISIBLE_DEVICES": "2", "CUDA_VISIBLE_DEVICES": "2"}
    assert visible_device_env("cpu") == {}


def test_registered_and_batches() -> None:
    eng = get_engine("vllm")
    assert isinstance(eng, VLLMEngine)
    assert eng.capabilities == ("text-gen",)
    assert eng.slots == DEFAULT_MAX_NUM_SEQS > 1


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_load_without_vllm_says_how_to_get_it() -> None:
    eng = VLLMEngine()
    spec = ModelSpec(
        name="qwen", engine="vllm", source="Qwen/Qwen2.5-0.5B-Instruct", device="cuda:0"
    )
    with pytest.raises(EngineError) as err:
        eng.load(spec)
    assert (err.value.status, err.value.code) == (503, "engine_missing")
    assert "pip install 'rbee[cuda]'" in err.value.message
    assert eng.loop is None and eng.thread is None  # nothing left running


def test_memory_estimate_does_not_load(tmp_path: Any) -> None:
    eng = VLLMEngine()
    spec = ModelSpec(name="m", engine="vllm", source=str(tmp_path), device="cpu")
    assert eng.memory_estimate_bytes(spec) > 0
    assert eng.llm is None
