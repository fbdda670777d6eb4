"""One grammar for devices and model arguments (hives/spec.py), and the protocol's words
(hives/protocol.py), shared by the queen and the hive agent."""

from __future__ import annotations

import json
import pickle

import pytest

from hives.protocol import (
    PROTOCOL_VERSION,
    TASK_CAPABILITY,
    Capability,
    EventKind,
    Task,
    WorkerState,
    error_event,
    version_refusal,
)
from hives.spec import CPU, Device, DeviceKind, ModelArg, ModelSpec, SpecError, parse_options


@pytest.mark.parametrize(
    ("text", "canonical", "kind", "number"),
    [
        ("cpu", "cpu", DeviceKind.CPU, 0),
        ("cpu:0", "cpu", DeviceKind.CPU, 0),
        ("CPU", "cpu", DeviceKind.CPU, 0),
        ("cuda", "cuda:0", DeviceKind.CUDA, 0),
        ("cuda:0", "cuda:0", DeviceKind.CUDA, 0),
        ("cuda:7", "cuda:7", DeviceKind.CUDA, 7),
        ("CUDA:1", "cuda:1", DeviceKind.CUDA, 1),
        (" rocm:1 ", "rocm:1", DeviceKind.ROCM, 1),
        ("rocm", "rocm:0", DeviceKind.ROCM, 0),
        ("metal", "metal:0", DeviceKind.METAL, 0),
        ("metal:0", "metal:0", DeviceKind.METAL, 0),
        ("cuda:007", "cuda:7", DeviceKind.CUDA, 7),
    ],
)
def test_device_forms(text: str, canonical: str, kind: DeviceKind, number: int) -> None:
    d = Device.parse(text)
    assert d == canonical and str(d) == canonical
    assert (d.kind, d.number) == (kind, number)
    assert d.is_gpu == (kind is not DeviceKind.CPU)
    assert Device(d) == d  # parsing a canonical name gives it back


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("cuda:0\n", "control characters"),
        ("cuda:0\r\n", "control characters"),
        ("\rcpu", "control characters"),
        ("cu\x00da", "control characters"),
        ("cuda:\t1", "control characters"),
        ("cpu\x1b[31m", "control characters"),
        ("metal:0\u2028", "control characters"),
        ("gpu:0", "use cpu, cuda:N, rocm:N or metal:N"),
        ("tpu:9", "use cpu, cuda:N, rocm:N or metal:N"),
        ("mps", "use cpu, cuda:N, rocm:N or metal:N"),
        ("cuda:", "use cpu"),
        ("cuda:-1", "use cpu"),
        ("cuda:x", "use cpu"),
        ("cuda:1:2", "use cpu"),
        ("cuda:\u0663", "use cpu"),  # an Arabic-Indic digit is not an index
        ("cuda:12345", "use cpu"),
        ("", "use cpu"),
        ("cpu:1", "one cpu device"),
    ],
)
def test_bad_devices_are_refused_clearly(text: str, why: str) -> None:
    with pytest.raises(ValueError, match="bad device") as exc:
        Device.parse(text)
    assert why in str(exc.value)
    assert repr(text) in str(exc.value)  # the input, escaped: a newline shows as \n
    assert isinstance(exc.value, SpecError)


def test_a_device_is_its_string_on_the_wire_and_in_keys() -> None:
    d = Device("cuda")
    assert json.dumps({"device": d}) == '{"device": "cuda:0"}'
    assert {("m", "cuda:0"): 1}[("m", d)] == 1
    assert pickle.loads(pickle.dumps(d)) == d and isinstance(pickle.loads(pickle.dumps(d)), Device)
    assert d.describes({"kind": "cuda", "index": 0})
    assert not d.describes({"kind": "cuda", "index": 1})
    assert not d.describes({"kind": "tpu", "index": 0})
    assert CPU.describes({"kind": "cpu", "index": 0})
    assert Device.of({"kind": "rocm", "index": 2}) == "rocm:2"


def test_model_arguments() -> None:
    a = ModelArg.parse("mine=llama.cpp:/models/x.gguf?slots=2&flash=true@cuda:1")
    assert (a.name, a.engine, a.source, a.device) == (
        "mine",
        "llama.cpp",
        "/models/x.gguf",
        "cuda:1",
    )
    assert a.options == {"slots": 2, "flash": True}
    assert a.text == "mine=llama.cpp:/models/x.gguf?slots=2&flash=true"
    spec = a.to_spec(CPU)
    assert (spec.device, spec.capability) == ("cuda:1", Capability.TEXT_GEN)

    named = ModelArg.parse("smollm2-135m-instruct@cuda")
    assert (named.name, named.engine, named.device) == ("smollm2-135m-instruct", "", "cuda:0")
    with pytest.raises(SpecError, match="names no engine"):
        named.to_spec(CPU)

    # An '@' that does not start a device belongs to the source (a revision, say).
    rev = ModelArg.parse("x=transformers:org/repo@main")
    assert (rev.source, rev.device) == ("org/repo@main", None)

    emb = ModelArg.parse("e=sentence-transformers:/m")
    assert emb.to_spec(CPU).capability is Capability.EMBEDDING
    assert ModelArg.parse("w=echo:#audio-gen").to_spec(CPU).capability is Capability.AUDIO_GEN


@pytest.mark.parametrize(
    ("arg", "match"),
    [
        ("x@cuda:x", "bad device 'cuda:x'"),
        ("x@cuda:0\n", "control characters"),
        ("x=echo:\r\n", "control characters"),
        ("x=echo:?slots", "bad model option 'slots'"),
        ("=echo:", "expected NAME=ENGINE:SOURCE"),
        ("x=:src", "expected NAME=ENGINE:SOURCE"),
        ("x=echo:#telepathy", "unknown capability 'telepathy'"),
        ("", "name a model"),
        ("@cpu", "name a model"),
    ],
)
def test_bad_model_arguments(arg: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        ModelArg.parse(arg)


def test_options() -> None:
    assert parse_options("a=1&b=2.5&c=TRUE&d=x") == {"a": 1, "b": 2.5, "c": True, "d": "x"}
    with pytest.raises(SpecError):
        parse_options("=1")


def test_a_spec_round_trips_and_parses_plain_strings() -> None:
    spec = ModelSpec(name="m", engine="echo", source="", device="rocm", capability="embedding")
    assert spec.device == "rocm:0" and isinstance(spec.device, Device)
    assert spec.capability is Capability.EMBEDDING
    assert ModelSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    with pytest.raises(ValueError, match="bad device"):
        ModelSpec(name="m", engine="echo", source="", device="cuda\n")


def test_every_task_has_a_capability_and_words_are_their_strings() -> None:
    assert set(TASK_CAPABILITY) == set(Task)
    assert set(TASK_CAPABILITY.values()) == set(Capability)
    assert TASK_CAPABILITY[Task.IMAGE_VARIATION] is Capability.IMAGE_GEN
    assert error_event("no")["kind"] == "error" == EventKind.ERROR
    assert json.dumps([Task.CHAT, WorkerState.READY]) == '["chat", "ready"]'
    assert f"{WorkerState.UNLOADED}" == "unloaded"


def test_the_database_uses_the_protocols_words() -> None:
    from hives.models import CatalogModel, ModelDownload, Worker, WorkerCommand

    assert Worker.State is WorkerState
    assert [v for v, _ in Worker._meta.get_field("state").choices] == [s.value for s in WorkerState]
    assert CatalogModel.Capability is Capability
    assert [v for v, _ in WorkerCommand._meta.get_field("action").choices] == [
        "start",
        "stop",
        "restart",
    ]
    assert ModelDownload.Status.DONE == "done"


def test_version_refusal() -> None:
    assert version_refusal({"protocol": PROTOCOL_VERSION}, queen_version="1.0") == ""
    for bad in (PROTOCOL_VERSION + 1, 0, -1, True, "1", None, 1.0):
        reason = version_refusal({"protocol": bad, "version": "0.0.1"}, queen_version="1.0")
        assert f"protocol version {PROTOCOL_VERSION}" in reason, bad
        assert "rbee 0.0.1" in reason and "rbee 1.0" in reason
