"""Model specs and devices: one grammar, parsed here, by the queen and by the hive agent.

No Django here: the hive agent imports this module on machines with no database, and
the queen imports it to check what operators ask for before a hive ever sees it.

Devices::

    cpu            the machine's CPU (cpu:0 is the same device)
    cuda:N         NVIDIA GPU number N (as NVML counts them); `cuda` is cuda:0
    rocm:N         AMD GPU number N (rocm-smi's card N); `rocm` is rocm:0
    metal:N        Apple silicon's GPU (there is one: metal:0); `metal` is metal:0

Model arguments (`rbee hive start --model ARG`, `rbee model add ARG`)::

    ARG     := MODEL [ "?" OPTIONS ] [ "@" DEVICE ]
    MODEL   := NAME                                   a bundled or well-known model
             | NAME "=" ENGINE ":" SOURCE [ "#" CAPABILITY ]
    OPTIONS := KEY "=" VALUE { "&" KEY "=" VALUE }    ints, floats, true/false, strings

Which NAMEs are bundled or well known is the hive's business (hives/agent/catalog.py:
it depends on what is installed there); everything else is checked here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Final

from hives.protocol import Capability


class SpecError(ValueError):
    """A model argument, its options or a device name that does not parse."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class DeviceKind(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"
    ROCM = "rocm"
    METAL = "metal"


_KINDS: Final = frozenset(k.value for k in DeviceKind)
_DEVICE_RE = re.compile(r"([a-z]+)(?::([0-9]{1,4}))?")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
DEVICE_FORMS: Final = "cpu, cuda:N, rocm:N or metal:N"


class Device(str):
    """A device name, parsed and in its one spelling: 'cpu', 'cuda:0', 'rocm:1', 'metal:0'.

    A `str` subclass on purpose: it goes over the wire, into the database and into dict
    keys as the plain string, and compares equal to it (`Device("cuda") == "cuda:0"`),
    while code that needs the parts asks for `.kind` and `.number` instead of splitting
    strings. Only canonical values exist: constructing one parses (and may raise
    SpecError, a ValueError).
    """

    __slots__ = ()

    def __new__(cls, text: str) -> Device:
        # Values are immutable and few: parse each spelling once (the queen builds one
        # per worker of each request).
        known = _PARSED.get(text) if isinstance(text, str) else None
        if known is not None and type(known) is cls:
            return known
        kind, index = _parse_device(text)
        device = super().__new__(cls, kind.value if kind is DeviceKind.CPU else f"{kind}:{index}")
        if len(_PARSED) < 1024:
            _PARSED[text] = device
        return device

    @classmethod
    def parse(cls, text: str) -> Device:
        """'cuda' -> cuda:0, 'CPU' -> cpu, 'rocm:1' -> rocm:1; SpecError on anything else."""
        return cls(text)

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> Device:
        """The device a telemetry entry describes ({"kind": "cuda", "index": 1, ...})."""
        kind = str(entry.get("kind") or DeviceKind.CPU)
        return cls(kind if kind == DeviceKind.CPU else f"{kind}:{entry.get('index', 0)}")

    @property
    def kind(self) -> DeviceKind:
        return DeviceKind(self.partition(":")[0])

    @property
    def number(self) -> int:
        """N of 'cuda:N' (0 for the cpu). Not `index`: that is str's own method."""
        return int(self.partition(":")[2] or 0)

    @property
    def is_gpu(self) -> bool:
        return self.kind is not DeviceKind.CPU

    def describes(self, entry: Mapping[str, Any]) -> bool:
        """Whether a telemetry entry ({"kind", "index", ...}) is this device. Cheap (the
        queen asks it per worker and request): this device is canonical, so comparing
        with the entry's spelling needs no parse, and an entry of an unknown kind is
        simply not this device."""
        kind = str(entry.get("kind") or DeviceKind.CPU)
        return self == (kind if kind == DeviceKind.CPU else f"{kind}:{entry.get('index', 0)}")


_PARSED: dict[str, Device] = {}


def _parse_device(text: str) -> tuple[DeviceKind, int]:
    if not isinstance(text, str):
        raise SpecError(f"bad device {text!r}: expected a string ({DEVICE_FORMS})")
    if _CONTROL.search(text):
        raise SpecError(f"bad device {text!r}: control characters are not allowed")
    m = _DEVICE_RE.fullmatch(text.strip(" ").lower())
    if m is None or m.group(1) not in _KINDS:
        raise SpecError(f"bad device {text!r}: use {DEVICE_FORMS}")
    kind = DeviceKind(m.group(1))
    index = int(m.group(2) or 0)
    if kind is DeviceKind.CPU and index != 0:
        raise SpecError(f"bad device {text!r}: a machine has one cpu device, 'cpu'")
    return kind, index


CPU: Final = Device("cpu")


# The capability an engine serves when a spec names none (`NAME=ENGINE:SOURCE`).
ENGINE_CAPABILITY: Final[Mapping[str, Capability]] = MappingProxyType(
    {
        "llama.cpp": Capability.TEXT_GEN,
        "transformers": Capability.TEXT_GEN,
        "vllm": Capability.TEXT_GEN,
        "echo": Capability.TEXT_GEN,
        "sentence-transformers": Capability.EMBEDDING,
        "diffusers": Capability.IMAGE_GEN,
        "faster-whisper": Capability.AUDIO_TRANSCRIPTION,
        "piper": Capability.AUDIO_GEN,
        "espeak-ng": Capability.AUDIO_GEN,
        "openai": Capability.TEXT_GEN,
        "diffusers-video": Capability.VIDEO_GEN,
    }
)

# Engines whose model runs elsewhere (an upstream server): they hold no memory on the
# hive's devices, so placing one never unloads a local model, nor is one unloaded to
# make room.
REMOTE_ENGINES: Final = frozenset({"openai"})


def parse_capability(text: str) -> Capability:
    try:
        return Capability(text)
    except ValueError:
        known = ", ".join(c.value for c in Capability)
        raise SpecError(f"unknown capability {text!r}: use one of {known}") from None


@dataclass(frozen=True)
class ModelSpec:
    """What a worker loads: the public id, the engine, where the weights are, on which
    device. `device` and `capability` given as plain strings are parsed."""

    name: str
    engine: str
    source: str
    capability: Capability = Capability.TEXT_GEN
    device: Device = CPU
    pinned: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.device, Device):
            object.__setattr__(self, "device", Device(self.device))
        if not isinstance(self.capability, Capability):
            object.__setattr__(self, "capability", parse_capability(self.capability))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "engine": self.engine,
            "source": self.source,
            "capability": str(self.capability),
            "device": str(self.device),
            "pinned": self.pinned,
            "options": dict(self.options),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelSpec:
        return cls(
            name=str(d["name"]),
            engine=str(d["engine"]),
            source=str(d.get("source", "")),
            capability=parse_capability(str(d.get("capability", Capability.TEXT_GEN))),
            device=Device(str(d.get("device", CPU))),
            pinned=bool(d.get("pinned", False)),
            options=dict(d.get("options") or {}),
        )


def parse_options(query: str) -> dict[str, Any]:
    """`slots=4&n_ctx=2048&dtype=bfloat16` -> {"slots": 4, "n_ctx": 2048, "dtype": "bfloat16"}."""
    out: dict[str, Any] = {}
    for pair in query.split("&"):
        key, sep, raw = pair.partition("=")
        if not key or not sep:
            raise SpecError(f"bad model option {pair!r}: expected KEY=VALUE")
        value: Any = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            for cast in (int, float):
                try:
                    value = cast(raw)
                    break
                except ValueError:
                    pass
        out[key] = value
    return out


@dataclass(frozen=True)
class ModelArg:
    """A model argument as written, parsed: see the grammar at the top of this module.

    `engine` is '' for a bundled or well-known NAME (the hive resolves those); `text` is
    the argument without its `@DEVICE`, as the queen stores and sends it."""

    text: str
    name: str
    engine: str = ""
    source: str = ""
    capability: Capability | None = None
    options: dict[str, Any] = field(default_factory=dict)
    device: Device | None = None

    @classmethod
    def parse(cls, arg: str) -> ModelArg:
        if _CONTROL.search(arg):
            raise SpecError(f"bad model {arg!r}: control characters are not allowed")
        text, device = _split_device(arg)
        model, _, query = text.partition("?")
        options = parse_options(query) if query else {}
        if "=" not in model:
            if not model.strip():
                raise SpecError(f"bad model {arg!r}: name a model, or NAME=ENGINE:SOURCE")
            return cls(text=text, name=model, options=options, device=device)
        name, _, rest = model.partition("=")
        engine, _, source = rest.partition(":")
        source, _, capability = source.partition("#")
        if not name or not engine:
            raise SpecError(f"bad --model {arg!r}: expected NAME=ENGINE:SOURCE")
        return cls(
            text=text,
            name=name,
            engine=engine,
            source=source,
            capability=parse_capability(capability) if capability else None,
            options=options,
            device=device,
        )

    def to_spec(self, device: Device) -> ModelSpec:
        """The spec of a NAME=ENGINE:SOURCE argument, on its own device or else `device`."""
        if not self.engine:
            raise SpecError(f"{self.name!r} names no engine: the hive's catalog resolves it")
        return ModelSpec(
            name=self.name,
            engine=self.engine,
            source=self.source,
            capability=self.capability or ENGINE_CAPABILITY.get(self.engine, Capability.TEXT_GEN),
            device=self.device or device,
            options=dict(self.options),
        )


def _split_device(arg: str) -> tuple[str, Device | None]:
    """'NAME@cuda:1' -> ('NAME', cuda:1). An '@' followed by something that is not a
    device kind belongs to the model (a revision in a source, say); one followed by a
    device kind must be a valid device."""
    head, at, tail = arg.rpartition("@")
    if not at:
        return arg, None
    kind = tail.strip(" ").partition(":")[0].lower()
    if kind not in _KINDS:
        return arg, None
    return head, Device(tail)
