"""Any OpenAI-compatible server as a worker, end to end: a real queen and hive, models
served by the openai engine from a fake upstream in this process (testkit/fakeupstream.py)
and from a real `llama_cpp.server` running the bundled SmolLM2, asked with the official
`openai` client. The upstream's key stays in the hive's environment."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import openai
import pytest

from testkit.fakeupstream import TRANSCRIPT, WORDS, FakeUpstream
from testkit.live import Deployment, Hive, Queen, bundled_gguf, free_port, stop_process

pytestmark = pytest.mark.e2e

SECRET = "sk-upstream-e2e-9f8e7d6c"
OPTS = "model=fake-model&api_key_env=UPSTREAM_KEY&health_interval=0.3&read_timeout=2"


@dataclass
class Setup:
    dep: Deployment
    queen: Queen
    hive: Hive
    upstream: FakeUpstream
    flaky: FakeUpstream
    key: str  # an operator's key: errors name the hives' reasons

    def client(self, key: str | None = None) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=f"{self.queen.url}/v1", api_key=key or self.key, max_retries=0, timeout=30
        )

    def worker(self, model: str) -> tuple[str, str]:
        rows = self.dep.sql(
            "SELECT w.state, w.message FROM hives_worker w JOIN hives_catalogmodel m "
            f"ON m.id = w.model_id WHERE m.name = '{model}'"
        )
        if not rows:
            return "", ""  # not reported by its hive yet
        [row] = rows
        return str(row[0]), str(row[1])

    def wait_state(self, model: str, state: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now, message = self.worker(model)
            if now == state:
                return message
            time.sleep(0.1)
        raise AssertionError(f"{model} is {self.worker(model)}, not {state}")


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    upstream = FakeUpstream(["fake-model"], api_key=SECRET)
    flaky = FakeUpstream(["fake-model"], api_key=SECRET)
    dep = Deployment()
    try:
        queen = Queen(dep, env={"RBEE_HIVE_HEARTBEAT": "1"})
        url = upstream.url
        models = [
            f"up-chat=openai:{url}?{OPTS}",
            f"up-embed=openai:{url}#embedding?{OPTS}",
            f"up-image=openai:{url}#image-gen?{OPTS}",
            f"up-stt=openai:{url}#audio-transcription?{OPTS}",
            f"up-tts=openai:{url}#audio-gen?{OPTS}",
            f"up-flaky=openai:{flaky.url}?{OPTS}",
            f"up-nokey=openai:{url}?model=fake-model&api_key_env=NOT_SET_ANYWHERE",
        ]
        hive = Hive(dep, queen, "hive-up", models, env={"UPSTREAM_KEY": SECRET})
        for m in ("up-embed", "up-image", "up-stt", "up-tts", "up-flaky"):
            queen.wait_for_model("hive-up", m)
        dep.rbee("tenant", "create", "acme")
        key = dep.rbee("key", "create", "--tenant", "acme", "--operator").stdout.strip()
        yield Setup(dep, queen, hive, upstream, flaky, key)
    finally:
        dep.close()
        upstream.close()
        flaky.close()


def test_chat_and_completions_pass_through_with_the_upstreams_usage(setup: Setup) -> None:
    c = setup.client()
    raw = c.chat.completions.with_raw_response.create(
        model="up-chat", messages=[{"role": "user", "content": "hello there upstream"}]
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == " ".join(WORDS)
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (3, 16)
    sent = setup.upstream.last("/v1/chat/completions")
    assert sent.headers["authorization"] == f"Bearer {SECRET}"
    assert sent.json()["stream_options"] == {"include_usage": True}

    stream = c.chat.completions.create(
        model="up-chat",
        messages=[{"role": "user", "content": "stream it please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = [
        ch.choices[0].delta.content for ch in chunks if ch.choices and ch.choices[0].delta.content
    ]
    assert "".join(text) == " ".join(WORDS)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16
    assert chunks[-1].usage.prompt_tokens == 3

    done = c.completions.create(model="up-chat", prompt="count", max_tokens=5)
    assert done.choices[0].text == "w1 w2 w3 w4 w5" and done.choices[0].finish_reason == "length"

    # Metered exactly as the upstream counted, under our request ids.
    rows = setup.dep.sql(
        "SELECT request_id, prompt_tokens, completion_tokens FROM billing_usageevent "
        f"WHERE request_id = '{raw.headers['x-request-id']}'"
    )
    assert [(r[1], r[2]) for r in rows] == [(3, 16)]


def test_embeddings_images_and_audio_pass_through(setup: Setup) -> None:
    c = setup.client()
    emb = c.embeddings.create(model="up-embed", input=["one two", "three"])
    assert [len(d.embedding) for d in emb.data] == [8, 8] and emb.usage.prompt_tokens == 3
    img = c.images.generate(model="up-image", prompt="a bee", n=2, response_format="b64_json")
    assert img.data is not None and len(img.data) == 2
    text = c.audio.transcriptions.create(
        model="up-stt", file=("clip.wav", b"RIFF0000WAVEfmt ", "audio/wav")
    )
    assert text.text == TRANSCRIPT
    speech = c.audio.speech.create(model="up-tts", voice="alloy", input="hello bees")
    assert len(speech.content) == 4096


WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Oslo", "Rome"]}},
            "required": ["city"],
        },
    },
}


def test_tool_calls_and_log_probabilities_through_an_upstream(setup: Setup) -> None:
    c = setup.client()
    answer = c.chat.completions.create(
        model="up-chat",
        messages=[{"role": "user", "content": "weather in Oslo?"}],
        tools=[WEATHER],  # type: ignore[list-item]
        tool_choice="required",
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.type == "function"
    assert (call.id, call.function.name, call.function.arguments) == (
        "call_fake0",
        "get_weather",
        '{"city": "Oslo"}',
    )
    sent = setup.upstream.last("/v1/chat/completions").json()
    assert sent["tools"] == [WEATHER] and sent["tool_choice"] == "required"

    stream = c.chat.completions.create(
        model="up-chat",
        messages=[
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny and 21 degrees"},
            {"role": "user", "content": "call get_weather !loosecalls"},
        ],
        tools=[WEATHER],  # type: ignore[list-item]
        stream=True,
    )
    chunks = list(stream)
    pieces = [p for ch in chunks if ch.choices for p in ch.choices[0].delta.tool_calls or []]
    assert pieces[0].index == 0 and pieces[0].id == "call_fake0"
    assert pieces[0].function is not None and pieces[0].function.name == "get_weather"
    assert "".join(p.function.arguments or "" for p in pieces if p.function) == '{"city": "Oslo"}'
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    history = setup.upstream.last("/v1/chat/completions").json()["messages"]
    assert history[1]["tool_calls"][0]["id"] == "call_fake0"
    assert history[2] == {
        "role": "tool",
        "tool_call_id": "call_fake0",
        "content": "sunny and 21 degrees",
    }

    answer = c.chat.completions.create(
        model="up-chat",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=2,
        logprobs=True,
        top_logprobs=2,
    )
    assert answer.choices[0].logprobs is not None
    content = answer.choices[0].logprobs.content or []
    assert [(t.token, t.logprob) for t in content] == [("w1", -0.1), (" w2", -0.2)]
    assert [(t.token, t.logprob) for t in content[1].top_logprobs] == [
        (" w2", -0.2),
        (" alt", -5.0),
    ]
    done = c.completions.create(model="up-chat", prompt="count", max_tokens=2, logprobs=1)
    lp = done.choices[0].logprobs
    assert lp is not None and lp.tokens == ["w1", " w2"] and lp.token_logprobs == [-0.1, -0.2]
    assert lp.top_logprobs == [{"w1": -0.1}, {" w2": -0.2}]


def test_upstream_errors_keep_their_meaning(setup: Setup) -> None:
    c = setup.client()

    def ask(prompt: str) -> openai.APIStatusError:
        with pytest.raises(openai.APIStatusError) as err:
            c.chat.completions.create(
                model="up-chat", messages=[{"role": "user", "content": prompt}]
            )
        return err.value

    bad = ask("!status 400")
    assert bad.status_code == 400 and "injected 400" in bad.message
    assert ask("!status 422").status_code == 400
    assert ask("!status 429").status_code == 429
    auth = ask("!status 401")  # the upstream refused rbee's key: not the caller's fault
    assert auth.status_code == 502 and auth.code == "upstream_auth_failed"
    assert ask("!status 500").status_code == 502
    assert ask("!status 503").status_code == 503
    slow = ask("!sleep 3")  # read_timeout=2
    assert slow.status_code == 504 and slow.code == "upstream_timeout"
    # The worker serves on after all of them.
    ok = c.chat.completions.create(model="up-chat", messages=[{"role": "user", "content": "hi"}])
    assert ok.choices[0].message.content == " ".join(WORDS)


def test_a_client_that_leaves_closes_the_upstream_request(setup: Setup) -> None:
    setup.upstream.quiet()  # an earlier test's `!sleep 3` (given up after 2 s) may still end
    before = setup.upstream.closed_early
    with httpx.stream(
        "POST",
        f"{setup.queen.url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {setup.key}"},
        json={
            "model": "up-chat",
            "stream": True,
            "messages": [{"role": "user", "content": "!slow 0.3"}],
        },
        timeout=30,
    ) as r:
        assert r.status_code == 200
        got = []
        for line in r.iter_lines():
            if '"content":" w2"' in line:
                got.append(line)
                break  # two words read: hang up
    assert got
    deadline = time.monotonic() + 10
    while setup.upstream.closed_early == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert setup.upstream.closed_early == before + 1


def test_an_upstream_that_goes_down_and_comes_back(setup: Setup) -> None:
    c = setup.client()
    setup.flaky.down()
    message = setup.wait_state("up-flaky", "failed")
    assert "cannot be reached" in message
    with pytest.raises(openai.APIStatusError) as err:
        c.chat.completions.create(model="up-flaky", messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 503 and "cannot be reached" in err.value.message
    setup.flaky.up()
    setup.wait_state("up-flaky", "ready")
    ok = c.chat.completions.create(model="up-flaky", messages=[{"role": "user", "content": "hi"}])
    assert ok.choices[0].message.content == " ".join(WORDS)


def test_a_missing_key_variable_is_refused_at_load_and_the_key_stays_on_the_hive(
    setup: Setup,
) -> None:
    message = setup.wait_state("up-nokey", "failed")
    assert "$NOT_SET_ANYWHERE, which is not set in the hive's environment" in message
    # The key the hive holds is nowhere on the queen: not in its database, not in its log,
    # and the hive never logs it either.
    rows = setup.dep.sql("SELECT * FROM hives_worker") + setup.dep.sql(
        "SELECT * FROM hives_catalogmodel"
    )
    assert rows and SECRET not in repr(rows)
    assert SECRET not in setup.queen.log.read_text()
    assert SECRET not in setup.hive.log.read_text()


def test_the_queen_cannot_point_a_hive_at_an_upstream_its_operator_did_not_grant(
    setup: Setup,
) -> None:
    """SSRF: a model the queen assigns names a URL inside the hive's network (a cloud's
    metadata service); the hive records it failed with the reason and sends nothing."""
    spec = "meta=openai:http://169.254.169.254/latest/v1?model=fake-model"
    setup.dep.rbee("model", "add", spec, "--hive", "hive-up")
    message = setup.wait_state("meta", "failed")
    assert "an upstream its operator did not grant (RBEE_HIVE_UPSTREAM_URLS" in message


def test_tenant_quotas_apply_to_upstream_models(setup: Setup) -> None:
    setup.dep.rbee("plan", "set", "two", "requests_per_day=2")
    setup.dep.rbee("tenant", "create", "tiny", "--plan", "two")
    key = setup.dep.rbee("key", "create", "--tenant", "tiny").stdout.strip()
    c = setup.client(key)
    before = setup.upstream.posts()
    for _ in range(2):
        c.chat.completions.create(model="up-chat", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.RateLimitError) as err:
        c.chat.completions.create(model="up-chat", messages=[{"role": "user", "content": "hi"}])
    assert err.value.code == "insufficient_quota"
    assert setup.upstream.posts() == before + 2  # the third never left rbee


def test_a_real_llama_cpp_server_as_the_upstream(deployment: Deployment) -> None:
    pytest.importorskip("llama_cpp.server", reason="pip install 'llama-cpp-python[server]'")
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            bundled_gguf(),
            "--model_alias",
            "smol",
            "--n_ctx",
            "1024",
            "--n_threads",
            "1",
            # By default it drops the request it is generating for when another arrives
            # (a health check of /models, a second client): rbee sends several at once.
            "--interrupt_requests",
            "false",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        queen = Queen(deployment)
        Hive(
            deployment,
            queen,
            "hive-llama",
            [f"smol-up=openai:http://127.0.0.1:{port}/v1?model=smol"],
        )
        deployment.rbee("tenant", "create", "acme")
        key = deployment.rbee("key", "create", "--tenant", "acme").stdout.strip()
        c = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0, timeout=120)
        stream = c.chat.completions.create(
            model="smol-up",
            messages=[{"role": "user", "content": "Name a colour."}],
            max_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
        usage = chunks[-1].usage
        assert text.strip() and usage is not None, chunks
        # llama.cpp's server sends no usage in streams (include_usage is ignored): rbee
        # counts its chunks, one token each, and a quarter of the prompt's characters.
        pieces = [ch for ch in chunks if ch.choices and ch.choices[0].delta.content]
        assert usage.completion_tokens == len(pieces) and 0 < len(pieces) <= 12
        assert usage.prompt_tokens == len("Name a colour.") // 4
        # The same question straight to llama.cpp's server gives the same greedy answer.
        direct = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        same = direct.chat.completions.create(
            model="smol",
            messages=[{"role": "user", "content": "Name a colour."}],
            max_tokens=12,
            temperature=0,
        )
        assert same.choices[0].message.content == text
    finally:
        stop_process(server)


def test_residency_keeps_a_tenant_off_an_upstream_outside_its_region(
    deployment: Deployment,
) -> None:
    """Overflow to a cloud API only for tenants allowed to leave the region: the same model
    served locally in the EU (echo) and by an upstream from a US hive. An EU tenant is
    served only in the EU and fails closed when that hive is gone; another tenant may ask
    for the US hive, whose answer is the upstream's."""
    dep = deployment
    cloud = FakeUpstream(["fake-model"])
    try:
        queen = Queen(dep, env={"RBEE_HIVE_HEARTBEAT": "1"})
        eu = Hive(dep, queen, "eu-box", ["shared=echo:"], region="eu")
        Hive(dep, queen, "us-cloud", [f"shared=openai:{cloud.url}?model=fake-model"], region="us")
        dep.rbee("tenant", "create", "euco", "--data-region", "eu")
        dep.rbee("tenant", "create", "anyco")
        eu_key = dep.rbee("key", "create", "--tenant", "euco", "--operator").stdout.strip()
        any_key = dep.rbee("key", "create", "--tenant", "anyco", "--operator").stdout.strip()

        def ask(key: str, region: str = "") -> tuple[str, str]:
            c = openai.OpenAI(base_url=f"{queen.url}/v1", api_key=key, max_retries=0)
            raw = c.chat.completions.with_raw_response.create(
                model="shared",
                messages=[{"role": "user", "content": "where am I"}],
                extra_headers={"X-Rbee-Region": region} if region else None,
            )
            text = raw.parse().choices[0].message.content or ""
            return raw.headers["x-rbee-worker"].split("/")[0], text

        assert {ask(eu_key)[0] for _ in range(10)} == {"eu-box"}
        assert ask(any_key, "us") == ("us-cloud", " ".join(WORDS))
        before = cloud.posts()
        eu.stop()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                assert ask(eu_key)[0] == "eu-box"
            except openai.APIStatusError as err:
                assert err.status_code == 503
                break
            time.sleep(0.2)
        else:
            raise AssertionError("the EU tenant was still served with its hive gone")
        assert cloud.posts() == before  # never sent to the US upstream
    finally:
        cloud.close()
