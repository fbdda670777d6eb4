"""Every modality through rbee versus the same engine called in-process, on the same model.

    python bench/modalities.py [--requests N] [--rounds R] [--only chat,embed,...]

Modalities (names for --only): chat, completion, embed, image, transcribe, speech
(one request at a time), chat-stream (tokens/s of a 256-token stream) and
speech-stream (time to the first audio byte).

Direct: each bundled model is loaded with its engine, from the spec a hive would use
(catalog.bundled_spec + materialize), with the hive's thread settings
(RBEE_LLAMA_THREADS=1 as in the tests, RBEE_WHISPER_THREADS=1; torch and onnxruntime
use their defaults in both paths), and its `engine.run` iterator is drained in the
same process. Like a hive's worker, each model gets a fresh process of its own (this
script run with --direct-model): libraries that share a process slow each other down
(whisper after sentence-transformers in one process is ~25% slower here), which would
flatter rbee. The request dicts are built the way the queen builds them
(inference/schemas.py and the resource modules: inference/images.py, audio.py, ...).

Through rbee: then, with every direct process gone (two paths never share the CPU),
a real queen (embedded default: SQLite, in-memory channel layer) and one hive
serving the same bundled models (testkit/live.py), called with the official `openai`
client, one client, one request at a time. Each path is warmed with 2 requests first.

--rounds R does all of that R times and pools the rounds in each row (other work on a
shared machine comes in bursts of seconds, which one round may put on one side only);
the `bg` column is the CPU other processes used while the row ran.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

# Same thread settings as the tests' hives (testkit/live.py passes RBEE_LLAMA_THREADS on).
os.environ.setdefault("RBEE_LLAMA_THREADS", "1")
os.environ.setdefault("RBEE_WHISPER_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.overhead import pct  # noqa: E402
from testkit.live import Deployment, Hive, Queen  # noqa: E402

CHAT = "smollm2-135m-instruct"
EMBED = "all-minilm-l6-v2"
IMAGE = "tiny-sd"
WHISPER = "whisper-base"
VOICE = "piper-joe"
WARMUP = 2

CHAT_BODY: dict[str, Any] = {
    "model": CHAT,
    "messages": [{"role": "user", "content": "Write a short paragraph about honey bees."}],
    "max_tokens": 64,
    "temperature": 0,
    "seed": 1,
}
COMPLETION_BODY: dict[str, Any] = {
    "model": CHAT,
    "prompt": "Honey bees live in colonies that",
    "max_tokens": 64,
    "temperature": 0,
    "seed": 1,
}
STREAM_BODY: dict[str, Any] = {
    "model": CHAT,
    "messages": [{"role": "user", "content": "Tell me a long story about a bee named Bea."}],
    "max_tokens": 256,
    "temperature": 0.8,
    "seed": 7,
    "stream": True,
    "stream_options": {"include_usage": True},
}
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The stock market fell sharply on Tuesday.",
    "Bees collect nectar from flowers.",
    "The queen bee lays all the eggs of the hive.",
    "It rained all day in the city.",
    "Honey keeps for a very long time.",
    "A woman is playing the violin.",
]
EMBED_BODY: dict[str, Any] = {"model": EMBED, "input": SENTENCES}
IMAGE_BODY: dict[str, Any] = {
    "model": IMAGE,
    "prompt": "a bee on a flower",
    "size": "64x64",
    "n": 1,
    "response_format": "b64_json",
    "seed": 3,
    "steps": 2,
}
HEARD = "The quick brown fox jumps over the lazy dog. Bees make honey all summer long."
SPOKEN = "Hello from the hive. The bees are busy making honey today."
SPOKEN_LONG = " ".join(f"This is sentence number {i} of the story." for i in range(1, 7))


# --- the workloads ---------------------------------------------------------------------------


@dataclass
class Workload:
    key: str
    model: str
    task: str
    request: Callable[[], dict[str, Any]]  # the job request the worker would receive
    call: Callable[[Any], None]  # the same request through the openai client


def _chat_job(body: dict[str, Any]) -> dict[str, Any]:
    from inference import schemas

    return schemas.chat_job_request(schemas.validate_chat(dict(body)))


def _completion_job() -> dict[str, Any]:
    from inference import schemas

    return schemas.completion_job_request(schemas.validate_completion(dict(COMPLETION_BODY)))


def _embed_job() -> dict[str, Any]:
    from inference import schemas

    req = schemas.validate_embedding(dict(EMBED_BODY))
    return {"input": schemas.embedding_inputs(req), "dimensions": req.dimensions}


def _image_job() -> dict[str, Any]:  # as inference/images.py generation_work builds it
    b = IMAGE_BODY
    return {
        "prompt": b["prompt"],
        "n": b["n"],
        "size": b["size"],
        "seed": b["seed"],
        "steps": b["steps"],
        "guidance_scale": None,
        "negative_prompt": None,
    }


class Audio:
    """The few-second WAV that transcription hears, made once by piper in-process."""

    wav: bytes = b""


def _transcribe_job() -> dict[str, Any]:  # as endpoints._audio_text builds it
    return {
        "audio_b64": base64.b64encode(Audio.wav).decode("ascii"),
        "filename": "bench.wav",
        "language": "en",
        "prompt": None,
        "temperature": None,
        "word_timestamps": False,
    }


def _speech_job(text: str, fmt: str) -> dict[str, Any]:  # as endpoints.speech builds it
    return {"input": text, "voice": "alloy", "response_format": fmt, "speed": 1.0}


def _rbee_chat(client: Any) -> None:
    client.chat.completions.create(**CHAT_BODY)


def _rbee_completion(client: Any) -> None:
    client.completions.create(**COMPLETION_BODY)


def _rbee_embed(client: Any) -> None:
    res = client.embeddings.create(**EMBED_BODY)
    assert len(res.data) == len(SENTENCES)


def _rbee_image(client: Any) -> None:
    b = IMAGE_BODY
    res = client.images.generate(
        model=IMAGE,
        prompt=b["prompt"],
        size=b["size"],
        n=b["n"],
        response_format=b["response_format"],
        extra_body={"seed": b["seed"], "steps": b["steps"]},
    )
    assert res.data[0].b64_json


def _rbee_transcribe(client: Any) -> None:
    res = client.audio.transcriptions.create(
        model=WHISPER, file=("bench.wav", Audio.wav, "audio/wav"), language="en"
    )
    assert "fox" in res.text.lower(), res.text


def _rbee_speech(client: Any) -> None:
    audio = client.audio.speech.create(
        model=VOICE, voice="alloy", input=SPOKEN, response_format="wav"
    ).read()
    assert audio[:4] == b"RIFF"


WORKLOADS = [
    Workload("chat", CHAT, "chat", lambda: _chat_job(CHAT_BODY), _rbee_chat),
    Workload("completion", CHAT, "completion", _completion_job, _rbee_completion),
    Workload("embed", EMBED, "embedding", _embed_job, _rbee_embed),
    Workload("image", IMAGE, "image", _image_job, _rbee_image),
    Workload("transcribe", WHISPER, "transcription", _transcribe_job, _rbee_transcribe),
    Workload("speech", VOICE, "speech", lambda: _speech_job(SPOKEN, "wav"), _rbee_speech),
]
LABELS = {
    "chat": "chat (64 tokens, greedy)",
    "completion": "completion (64 tokens)",
    "embed": "embeddings (8 sentences)",
    "image": "image 64x64, 2 steps",
    "transcribe": "transcription (wav)",
    "speech": "speech (2 sentences, wav)",
}
STREAMS = ("chat-stream", "speech-stream")
STREAM_MODEL = {"chat-stream": CHAT, "speech-stream": VOICE}


class CpuWatch:
    """CPU the rest of the machine used while a row ran, in % of one core: everything
    busy minus this benchmark's own processes (this one, and the queen, the hive and
    its workers, which are its children). The machine is shared, so this says how
    noisy a row is."""

    def __init__(self) -> None:
        self.wall = time.perf_counter()
        self.busy = self._busy()
        self.mine = self._mine()

    @staticmethod
    def _busy() -> float:
        t = psutil.cpu_times()
        idle = t.idle + getattr(t, "iowait", 0.0)
        guest = getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)  # inside user
        return sum(t) - idle - guest

    @staticmethod
    def _mine() -> dict[int, float]:
        me = psutil.Process()
        out = {}
        for p in [me, *me.children(recursive=True)]:
            try:
                c = p.cpu_times()
                out[p.pid] = c.user + c.system
            except psutil.Error:
                pass
        return out

    def others(self) -> float:
        wall = time.perf_counter() - self.wall
        busy = self._busy() - self.busy
        now = self._mine()
        mine = sum(v - self.mine.get(pid, 0.0) for pid, v in now.items())
        return max(0.0, busy - mine) / wall * 100 if wall > 0 else 0.0


@dataclass
class Timing:
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    others: float = 0.0  # CpuWatch.others() over the timed requests

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


@dataclass
class StreamRun:
    first: float  # seconds to the first token / audio byte
    total: float  # seconds to the end of the stream
    amount: int = 0  # completion tokens (chat) or audio bytes (speech)


@dataclass
class Streams:
    runs: list[StreamRun]
    others: float


def timed(fn: Callable[[], None], n: int) -> Timing:
    for _ in range(WARMUP):
        fn()
    out = Timing()
    watch = CpuWatch()
    started = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.latencies.append(time.perf_counter() - t)
    out.elapsed = time.perf_counter() - started
    out.others = watch.others()
    return out


def streamed(fn: Callable[[], StreamRun], n: int) -> Streams:
    for _ in range(WARMUP):
        fn()
    watch = CpuWatch()
    runs = [fn() for _ in range(n)]
    return Streams(runs, watch.others())


# --- direct: the engines in this process -----------------------------------------------------


def drain(events: Iterator[dict[str, Any]]) -> dict[str, Any]:
    last: dict[str, Any] = {}
    for last in events:
        if last.get("kind") == "error":
            raise RuntimeError(f"engine error: {last}")
    if last.get("kind") != "done":
        raise RuntimeError(f"no done event: {last}")
    return last


def load_engine(name: str) -> Any:
    from hives.agent.catalog import bundled_spec, materialize
    from hives.agent.engines import get_engine

    spec = bundled_spec(name)
    if spec is None:
        raise SystemExit(f"bundled model {name} is not installed: pip install -e '.[hive]'")
    engine = get_engine(spec.engine)
    engine.load(materialize(spec))  # what hives/agent/worker.py does
    return engine


def direct_chat_stream(engine: Any) -> StreamRun:
    request = _chat_job(STREAM_BODY)
    t = time.perf_counter()
    first = None
    tokens = 0
    for event in engine.run("chat", request, lambda: False):
        if event.get("kind") == "delta" and first is None:
            first = time.perf_counter() - t
        elif event.get("kind") == "done":
            tokens = int(event["usage"]["completion_tokens"])
    return StreamRun(first or 0.0, time.perf_counter() - t, tokens)


def direct_speech_stream(engine: Any) -> StreamRun:
    request = _speech_job(SPOKEN_LONG, "pcm")
    t = time.perf_counter()
    first = None
    size = 0
    for event in engine.run("speech", request, lambda: False):
        if event.get("kind") == "audio":
            if first is None:
                first = time.perf_counter() - t
            size += len(base64.b64decode(event["b64"]))
    return StreamRun(first or 0.0, time.perf_counter() - t, size)


def bench_model(model: str, selected: list[str], n: int, wav: Path) -> dict[str, Any]:
    """Every selected workload of one model, loaded in this process (--direct-model)."""
    print(f"direct: loading {model}", file=sys.stderr, flush=True)
    engine = load_engine(model)
    plain: dict[str, Timing] = {}
    streams: dict[str, Streams] = {}

    def one(w: Workload) -> None:
        drain(engine.run(w.task, w.request(), lambda: False))

    if model == VOICE and "transcribe" in selected:
        wav.write_bytes(make_wav(engine))
    Audio.wav = wav.read_bytes() if wav.is_file() else b""
    for w in WORKLOADS:
        if w.model == model and w.key in selected:
            print(f"direct: {w.key}", file=sys.stderr, flush=True)
            plain[w.key] = timed(lambda w=w: one(w), n)  # type: ignore[misc]
    if model == CHAT and "chat-stream" in selected:
        print("direct: chat-stream", file=sys.stderr, flush=True)
        streams["chat-stream"] = streamed(lambda: direct_chat_stream(engine), n)
    if model == VOICE and "speech-stream" in selected:
        print("direct: speech-stream", file=sys.stderr, flush=True)
        streams["speech-stream"] = streamed(lambda: direct_speech_stream(engine), n)
    engine.unload()
    return {
        "plain": {k: asdict(v) for k, v in plain.items()},
        "streams": {k: asdict(v) for k, v in streams.items()},
    }


def models_for(selected: list[str]) -> list[str]:
    named = [w.model for w in WORKLOADS if w.key in selected]
    named += [STREAM_MODEL[s] for s in STREAMS if s in selected]
    return list(dict.fromkeys(named))


def run_direct(
    selected: list[str], n: int, wav: Path
) -> tuple[dict[str, Timing], dict[str, Streams]]:
    """Each model in a fresh process of its own, one after the other."""
    plain: dict[str, Timing] = {}
    streams: dict[str, Streams] = {}
    models = models_for(selected)
    if "transcribe" in selected and VOICE not in models:
        models.append(VOICE)
    models.sort(key=lambda m: m != VOICE)  # piper first: it makes the WAV whisper hears
    for model in models:
        out = wav.with_name(f"{model}.json")
        cmd = [sys.executable, __file__, "--direct-model", model, "--requests", str(n)]
        cmd += ["--only", ",".join(selected), "--wav", str(wav), "--out", str(out)]
        subprocess.run(cmd, check=True, cwd=ROOT)
        got = json.loads(out.read_text())
        plain.update({k: Timing(**v) for k, v in got["plain"].items()})
        for k, v in got["streams"].items():
            streams[k] = Streams([StreamRun(**r) for r in v["runs"]], v["others"])
    return plain, streams


def make_wav(engine: Any) -> bytes:
    audio = b"".join(
        base64.b64decode(e["b64"])
        for e in engine.run("speech", _speech_job(HEARD, "wav"), lambda: False)
        if e.get("kind") == "audio"
    )
    rate = int.from_bytes(audio[24:28], "little")  # the WAV header's sample rate
    seconds = (len(audio) - 44) / 2 / rate
    print(f"direct: transcription input {seconds:.1f} s of audio", file=sys.stderr)
    return audio


# --- through rbee: a real queen and hive -------------------------------------------------------


def rbee_chat_stream(client: Any) -> StreamRun:
    t = time.perf_counter()
    first = None
    tokens = 0
    for chunk in client.chat.completions.create(**STREAM_BODY):
        if chunk.choices and chunk.choices[0].delta.content and first is None:
            first = time.perf_counter() - t
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return StreamRun(first or 0.0, time.perf_counter() - t, tokens)


def rbee_speech_stream(client: Any) -> StreamRun:
    t = time.perf_counter()
    first = None
    size = 0
    with client.audio.speech.with_streaming_response.create(
        model=VOICE, voice="alloy", input=SPOKEN_LONG, response_format="pcm"
    ) as resp:
        for chunk in resp.iter_bytes():
            if chunk and first is None:
                first = time.perf_counter() - t
            size += len(chunk)
    return StreamRun(first or 0.0, time.perf_counter() - t, size)


def run_rbee(
    selected: list[str], n: int, dep: Deployment
) -> tuple[dict[str, Timing], dict[str, Streams]]:
    import openai

    wanted = [w for w in WORKLOADS if w.key in selected]
    models = models_for(selected)
    print(f"rbee: starting a queen and a hive serving {', '.join(models)}", file=sys.stderr)
    queen = Queen(dep)
    Hive(
        dep,
        queen,
        "bench-hive",
        models,
        wait=False,
        env={"RBEE_WHISPER_THREADS": os.environ["RBEE_WHISPER_THREADS"]},
    )
    for m in models:
        queen.wait_for_model("bench-hive", m, timeout=300)
    dep.rbee("tenant", "create", "bench")
    key = dep.rbee("key", "create", "--tenant", "bench").stdout.strip()
    client = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0, timeout=300)

    plain: dict[str, Timing] = {}
    streams: dict[str, Streams] = {}
    for w in wanted:
        print(f"rbee: {w.key}", file=sys.stderr, flush=True)
        plain[w.key] = timed(lambda w=w: w.call(client), n)  # type: ignore[misc]
    if "chat-stream" in selected:
        print("rbee: chat-stream", file=sys.stderr, flush=True)
        streams["chat-stream"] = streamed(lambda: rbee_chat_stream(client), n)
    if "speech-stream" in selected:
        print("rbee: speech-stream", file=sys.stderr, flush=True)
        streams["speech-stream"] = streamed(lambda: rbee_speech_stream(client), n)
    client.close()
    return plain, streams


# --- tables -------------------------------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}ms" if seconds < 10 else f"{seconds:.2f}s"


def pooled(rounds: list[Timing]) -> Timing:
    """The rounds as one row: all latencies, all the time they took."""
    elapsed = sum(t.elapsed for t in rounds)
    others = sum(t.others * t.elapsed for t in rounds) / elapsed if elapsed else 0.0
    return Timing([x for t in rounds for x in t.latencies], elapsed, others)


def pooled_streams(rounds: list[Streams]) -> Streams:
    return Streams([r for s in rounds for r in s.runs], statistics.mean(s.others for s in rounds))


def per_round(values: list[float]) -> str:
    return "/".join(f"{v * 100:.0f}" for v in values) if len(values) > 1 else ""


def print_plain(direct: dict[str, list[Timing]], rbee: dict[str, list[Timing]], n: int) -> None:
    rounds = len(next(iter(direct.values())))
    print(
        f"one request at a time, {n} requests per row and round, {rounds} round(s) pooled "
        f"(after {WARMUP} warm-up requests)\n"
    )
    print(
        f"{'modality':26} | {'direct p50':>10} {'p99':>8} {'req/s':>6} {'bg':>4} | "
        f"{'rbee p50':>8} {'p99':>8} {'req/s':>6} {'bg':>4} | {'added p50':>9} "
        f"{'rbee/direct':>11} {'per round' if rounds > 1 else ''}".rstrip()
    )
    for w in WORKLOADS:
        if w.key not in direct or w.key not in rbee:
            continue
        d, r = pooled(direct[w.key]), pooled(rbee[w.key])
        d50, r50 = statistics.median(d.latencies), statistics.median(r.latencies)
        ratios = [b.rps / a.rps for a, b in zip(direct[w.key], rbee[w.key], strict=True)]
        print(
            f"{LABELS[w.key]:26} | {ms(d50):>10} {ms(pct(d.latencies, 99)):>8} {d.rps:6.2f} "
            f"{d.others:3.0f}% | {ms(r50):>8} {ms(pct(r.latencies, 99)):>8} {r.rps:6.2f} "
            f"{r.others:3.0f}% | {ms(r50 - d50):>9} {r.rps / d.rps * 100:10.1f}% "
            f"{per_round(ratios)}".rstrip()
        )


def tokens_per_s(s: Streams) -> float:
    return sum(r.amount for r in s.runs) / sum(r.total for r in s.runs)


def print_chat_stream(direct: list[Streams], rbee: list[Streams]) -> None:
    print(
        f"\nchat streaming relay: max_tokens {STREAM_BODY['max_tokens']}, temperature "
        f"{STREAM_BODY['temperature']}, seed {STREAM_BODY['seed']}, "
        f"{len(direct[0].runs)} streams per row and round, {len(direct)} round(s) pooled\n"
    )
    print(
        f"{'path':31} | {'tokens':>6} {'1st token':>9} {'stream p50':>10} | "
        f"{'tok/s p50':>9} {'tok/s all':>9} {'bg':>4}"
    )
    rows = (("direct: engine's event iterator", direct), ("rbee: queen SSE, openai", rbee))
    for name, rounds in rows:
        s = pooled_streams(rounds)
        per_run = [r.amount / r.total for r in s.runs]
        print(
            f"{name:31} | {statistics.median(r.amount for r in s.runs):6.0f} "
            f"{ms(statistics.median(r.first for r in s.runs)):>9} "
            f"{ms(statistics.median(r.total for r in s.runs)):>10} | "
            f"{statistics.median(per_run):9.1f} {tokens_per_s(s):9.1f} {s.others:3.0f}%"
        )
    ratio = tokens_per_s(pooled_streams(rbee)) / tokens_per_s(pooled_streams(direct))
    ratios = [tokens_per_s(b) / tokens_per_s(a) for a, b in zip(direct, rbee, strict=True)]
    spread = f" (per round: {per_round(ratios)})" if len(ratios) > 1 else ""
    print(f"rbee/direct tokens/s: {ratio * 100:.1f}%{spread}")


def print_speech_stream(direct: list[Streams], rbee: list[Streams]) -> None:
    print(
        f"\nspeech streaming: {len(SPOKEN_LONG.split('. '))} sentences, pcm, "
        f"{len(direct[0].runs)} requests per row and round, {len(direct)} round(s) pooled\n"
    )
    print(
        f"{'path':31} | {'first audio p50':>15} {'p99':>8} | {'whole p50':>9} "
        f"{'audio KiB':>9} {'bg':>4}"
    )
    rows = (("direct: first audio event", direct), ("rbee: first byte, openai", rbee))
    for name, rounds in rows:
        s = pooled_streams(rounds)
        firsts = [r.first for r in s.runs]
        print(
            f"{name:31} | {ms(statistics.median(firsts)):>15} {ms(pct(firsts, 99)):>8} | "
            f"{ms(statistics.median(r.total for r in s.runs)):>9} "
            f"{statistics.median(r.amount for r in s.runs) / 1024:9.1f} {s.others:3.0f}%"
        )

    def first_p50(s: Streams) -> float:
        return statistics.median(r.first for r in s.runs)

    added = first_p50(pooled_streams(rbee)) - first_p50(pooled_streams(direct))
    each = [ms(first_p50(b) - first_p50(a)) for a, b in zip(direct, rbee, strict=True)]
    spread = f" (per round: {' / '.join(each)})" if len(each) > 1 else ""
    print(f"added to the first audio byte at p50: {ms(added)}{spread}")


def main() -> None:
    every = [w.key for w in WORKLOADS] + list(STREAMS)
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=10, help="requests (or streams) per row")
    ap.add_argument("--only", default=",".join(every), help=f"comma list of: {','.join(every)}")
    ap.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="direct then rbee, this many times; rows pool the rounds (noise on a shared "
        "machine comes in bursts of seconds, which one round can put on one side only)",
    )
    ap.add_argument("--direct-model", help=argparse.SUPPRESS)  # one model's direct run
    ap.add_argument("--wav", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    selected = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(selected) - set(every)
    if unknown:
        raise SystemExit(f"unknown modality: {', '.join(sorted(unknown))}; known: {every}")
    if args.direct_model:
        result = bench_model(args.direct_model, selected, args.requests, args.wav)
        args.out.write_text(json.dumps(result))
        return

    d_plain: dict[str, list[Timing]] = {}
    r_plain: dict[str, list[Timing]] = {}
    d_streams: dict[str, list[Streams]] = {}
    r_streams: dict[str, list[Streams]] = {}
    for i in range(args.rounds):
        print(f"round {i + 1} of {args.rounds}", file=sys.stderr, flush=True)
        dep = Deployment(embedded=True)
        try:
            # The direct engines read prepared models from where the hive will.
            os.environ["RBEE_MODELS_DIR"] = dep.env["RBEE_MODELS_DIR"]
            wav = Path(tempfile.mkdtemp(dir=dep.home)) / "heard.wav"
            d_p, d_s = run_direct(selected, args.requests, wav)
            Audio.wav = wav.read_bytes() if wav.is_file() else b""
            r_p, r_s = run_rbee(selected, args.requests, dep)
        finally:
            dep.close()
        for src, dst in ((d_p, d_plain), (r_p, r_plain), (d_s, d_streams), (r_s, r_streams)):
            for k, v in src.items():
                dst.setdefault(k, []).append(v)  # type: ignore[arg-type]

    print(
        "rbee versus the engine in-process, same bundled models, embedded default "
        f"(RBEE_LLAMA_THREADS={os.environ['RBEE_LLAMA_THREADS']}, "
        f"RBEE_WHISPER_THREADS={os.environ['RBEE_WHISPER_THREADS']})\n"
    )
    if d_plain:
        print_plain(d_plain, r_plain, args.requests)
    if "chat-stream" in d_streams:
        print_chat_stream(d_streams["chat-stream"], r_streams["chat-stream"])
    if "speech-stream" in d_streams:
        print_speech_stream(d_streams["speech-stream"], r_streams["speech-stream"])
    print(
        "\nbg: CPU used by other processes on this shared machine while the row ran, in % of "
        "one core (the machine has 2); the hypervisor's own noise does not show there"
    )


if __name__ == "__main__":
    main()
