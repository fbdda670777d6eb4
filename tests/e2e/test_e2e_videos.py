"""OpenAI's asynchronous video API through port 7833, with the official openai client.

One queen and one hive serving the bundled `tiny-video` (a random-weight AnimateDiff
pipeline built from configs: it animates noise) through the real diffusers path; each
MP4 is opened with PyAV. Jobs run in the queen's background, so a client that leaves
after the POST loses nothing; each job is metered in seconds of video, its files expire,
and another tenant sees none of it.
"""

from __future__ import annotations

import io
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import av
import httpx
import openai
import pytest
from PIL import Image

from testkit.live import Deployment, Hive, Queen
from tests.conftest import Stack

pytestmark = [
    pytest.mark.e2e,
    # openai's SDK warns that OpenAI's own service (Sora) will close; the API shape stays.
    pytest.mark.filterwarnings("ignore:The Sora API:DeprecationWarning"),
]

VIDEO = "tiny-video"
FPS = 4  # tiny-video's rbee.json


@dataclass
class Videos:
    stack: Stack
    other_key: str  # a key of another tenant
    first: Any  # a completed video, made with the SDK
    second: Any  # a completed video, made by a client that left after its POST
    second_ids: tuple[str, str]  # its POST's x-request-id and the X-Client-Request-Id sent


def _execute(dep: Deployment, query: str) -> None:
    """Write to the deployment's database (dep.sql only reads)."""
    if dep.db_name:
        import psycopg

        with psycopg.connect(dep.env["RBEE_DATABASE_URL"]) as conn:
            conn.execute(query)
        return
    conn = sqlite3.connect(dep.home / "rbee.sqlite3")
    try:
        conn.execute(query)
        conn.commit()
    finally:
        conn.close()


def _status(dep: Deployment, video_id: str) -> str:
    rows = dep.sql(f"SELECT status FROM inference_video WHERE id = '{video_id}'")
    return str(rows[0][0]) if rows else ""


def _wait_done_in_db(dep: Deployment, video_id: str, timeout: float = 300) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = _status(dep, video_id)
        if status in ("completed", "failed"):
            return status
        time.sleep(0.5)
    raise AssertionError(f"video {video_id} still {_status(dep, video_id)!r}")


@pytest.fixture(scope="module")
def videos() -> Iterator[Videos]:
    dep = Deployment()
    try:
        queen = Queen(dep)
        hive = Hive(dep, queen, "hive-v", [VIDEO], wait=False)
        queen.wait_for_model("hive-v", VIDEO, timeout=300)
        dep.rbee("tenant", "create", "acme")
        dep.rbee("tenant", "create", "umbrella")
        api_key = dep.rbee("key", "create", "--tenant", "acme").stdout.strip()
        other_key = dep.rbee("key", "create", "--tenant", "umbrella").stdout.strip()
        stack = Stack(dep=dep, queen=queen, hive=hive, api_key=api_key)
        client = stack.client(timeout=300)
        first = client.videos.create_and_poll(
            model=VIDEO, prompt="a bee lands on a sunflower", seconds="4", size="64x64"
        )
        # A client that posts and goes away: nobody polls this job until it is done.
        with httpx.Client(timeout=60) as raw:
            posted = raw.post(
                f"{stack.base_url}/videos",
                headers={"Authorization": f"Bearer {api_key}", "X-Client-Request-Id": "wave-1"},
                json={"model": VIDEO, "prompt": "waves on a beach", "seconds": "8"},
            )
        assert posted.status_code == 200, posted.text
        assert posted.headers["x-client-request-id"] == "wave-1"
        second_ids = (posted.headers["x-request-id"], "wave-1")
        second_id = posted.json()["id"]
        assert posted.json()["status"] == "queued"
        assert _wait_done_in_db(dep, second_id) == "completed"
        second = client.videos.retrieve(second_id)
        yield Videos(
            stack=stack, other_key=other_key, first=first, second=second, second_ids=second_ids
        )
    finally:
        dep.close()


def _mp4(data: bytes) -> tuple[str, int, float, float, tuple[int, int]]:
    """(codec, decoded frames, frame rate, duration in seconds, size) of an MP4."""
    with av.open(io.BytesIO(data)) as container:
        assert container.format.name.startswith("mov,mp4")
        stream = container.streams.video[0]
        assert stream.type == "video"
        assert not container.streams.audio
        frames = sum(1 for _ in container.decode(video=0))
        duration = float(container.duration or 0) / av.time_base
        return (
            stream.codec_context.name,
            frames,
            float(stream.average_rate or 0),
            duration,
            (stream.width, stream.height),
        )


# --- the happy path ------------------------------------------------------------------------


def test_a_video_job_completes_and_its_mp4_plays(videos: Videos) -> None:
    video = videos.first
    assert video.object == "video"
    assert video.status == "completed", video.error
    assert video.progress == 100
    assert video.model == VIDEO
    assert video.seconds == "4"
    assert video.size == "64x64"
    assert video.prompt == "a bee lands on a sunflower"
    assert video.error is None
    assert video.completed_at is not None and video.completed_at >= video.created_at
    assert video.expires_at is not None and video.expires_at > video.completed_at

    client = videos.stack.client(timeout=120)
    content = client.videos.download_content(video.id)
    data = content.read()
    assert content.response.headers["content-type"] == "video/mp4"
    assert data[4:8] == b"ftyp"
    codec, frames, fps, duration, size = _mp4(data)
    assert codec in ("h264", "mpeg4")
    assert frames == 4 * FPS
    assert fps == FPS
    assert duration == pytest.approx(4.0, abs=0.3)
    assert size == (64, 64)

    thumb = client.videos.download_content(video.id, variant="thumbnail")
    assert thumb.response.headers["content-type"] == "image/webp"
    assert Image.open(io.BytesIO(thumb.read())).size == (64, 64)
    sheet = client.videos.download_content(video.id, variant="spritesheet")
    assert sheet.response.headers["content-type"] == "image/jpeg"
    width, height = Image.open(io.BytesIO(sheet.read())).size
    assert (width, height) == (64 * 8, 64)  # eight frames side by side


def test_a_job_survives_its_client_going_away(videos: Videos) -> None:
    video = videos.second
    assert video.status == "completed"
    assert video.seconds == "8"
    assert video.size == "64x64"  # the model's first size when none is asked for
    data = videos.stack.client(timeout=120).videos.download_content(video.id).read()
    _, frames, fps, duration, _ = _mp4(data)
    assert (frames, fps) == (8 * FPS, FPS)
    assert duration == pytest.approx(8.0, abs=0.3)


def test_each_job_is_metered_in_seconds_of_video(videos: Videos) -> None:
    dep = videos.stack.dep
    for video, seconds in ((videos.first, 4.0), (videos.second, 8.0)):
        rows = dep.sql(
            "SELECT u.modality, u.video_seconds, u.outcome, u.model, u.images, "
            "u.audio_seconds FROM billing_usageevent u JOIN inference_video v "
            f"ON v.request_id = u.request_id WHERE v.id = '{video.id}'"
        )
        assert rows == [("video", seconds, "ok", VIDEO, 0, 0.0)]
    # The job's usage row is under the id its POST answered with, and the client's id.
    rid, client_id = videos.second_ids
    rows = dep.sql(
        "SELECT u.client_request_id FROM billing_usageevent u JOIN inference_video v "
        f"ON v.request_id = u.request_id WHERE v.id = '{videos.second.id}' "
        f"AND u.request_id = '{rid}'"
    )
    assert rows == [(client_id,)]


def test_list_pages_with_a_cursor_newest_first(videos: Videos) -> None:
    client = videos.stack.client()
    everything = [v.id for v in client.videos.list(limit=100).data]
    # newest first (other tests of this module may have made more since)
    assert everything.index(videos.second.id) < everything.index(videos.first.id)
    paged: list[str] = []
    after: str | None = None
    while True:
        page = client.videos.list(limit=1, after=after) if after else client.videos.list(limit=1)
        assert len(page.data) == 1
        paged.append(page.data[0].id)
        if not page.has_more:
            break
        after = page.data[0].id
    assert paged == everything
    oldest_first = [v.id for v in client.videos.list(order="asc", limit=100).data]
    assert oldest_first == everything[::-1]
    body = httpx.get(
        f"{videos.stack.base_url}/videos?limit=2",
        headers={"Authorization": f"Bearer {videos.stack.api_key}"},
    ).json()
    assert body["object"] == "list"
    assert body["first_id"] == body["data"][0]["id"]
    assert body["last_id"] == body["data"][-1]["id"]
    assert set(body["data"][0]) >= {
        "id",
        "object",
        "model",
        "status",
        "progress",
        "created_at",
        "completed_at",
        "expires_at",
        "prompt",
        "size",
        "seconds",
        "remixed_from_video_id",
        "error",
    }


# --- tenants ------------------------------------------------------------------------------


def test_another_tenant_sees_nothing_of_a_video(videos: Videos) -> None:
    theirs = videos.stack.client(api_key=videos.other_key)
    vid = videos.first.id
    with pytest.raises(openai.NotFoundError) as got:
        theirs.videos.retrieve(vid)
    assert got.value.body["code"] == "video_not_found"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        theirs.videos.download_content(vid)
    with pytest.raises(openai.NotFoundError):
        theirs.videos.delete(vid)
    assert theirs.videos.list().data == []
    # ... and the owner's video is still there, whole.
    assert videos.stack.client().videos.retrieve(vid).status == "completed"


def test_a_key_without_the_videos_scope_reaches_no_video(videos: Videos) -> None:
    """The 'videos' scope guards reads and deletes too, not only the POST: a key of the
    same tenant limited to chat may not list, read, download or delete its videos."""
    dep = videos.stack.dep
    chat_only = dep.rbee("key", "create", "--tenant", "acme", "--endpoints", "chat").stdout.strip()
    base, vid = videos.stack.base_url, videos.first.id
    auth = {"Authorization": f"Bearer {chat_only}"}
    for method, path in (
        ("POST", "/videos"),
        ("GET", "/videos"),
        ("GET", f"/videos/{vid}"),
        ("GET", f"/videos/{vid}/content"),
        ("DELETE", f"/videos/{vid}"),
    ):
        body = {"model": VIDEO, "prompt": "a"} if method == "POST" else None
        resp = httpx.request(method, base + path, headers=auth, json=body, timeout=30)
        err = _error(resp, 403)
        assert err["code"] == "insufficient_scope", (method, path, err)
    assert videos.stack.client().videos.retrieve(vid).status == "completed"


# --- failures, delete, expiry ---------------------------------------------------------------


def test_a_length_the_model_does_not_make_fails_the_job(videos: Videos) -> None:
    client = videos.stack.client(timeout=120)
    video = client.videos.create_and_poll(
        model=VIDEO,
        prompt="a clock",
        seconds="5",  # type: ignore[arg-type]
    )
    assert video.status == "failed"
    assert video.error is not None
    assert video.error.code == "invalid_value"
    assert "4, 8, 12" in video.error.message
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(video.id)
    # A size the model does not offer fails the same way, naming the sizes it has.
    bad = client.videos.create_and_poll(model=VIDEO, prompt="a clock", size="1280x720")
    assert bad.status == "failed" and bad.error is not None
    assert bad.error.code == "invalid_size" and "64x64" in bad.error.message


def test_delete_removes_the_video(videos: Videos) -> None:
    client = videos.stack.client(timeout=120)
    video = client.videos.create_and_poll(model=VIDEO, prompt="x", seconds="5")  # type: ignore[arg-type]
    deleted = client.videos.delete(video.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (video.id, "video.deleted", True)
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.delete(video.id)
    assert video.id not in [v.id for v in client.videos.list(limit=100).data]


def test_an_expired_video_is_gone_and_the_sweep_deletes_its_files(videos: Videos) -> None:
    dep = videos.stack.dep
    client = videos.stack.client(timeout=300)
    video = client.videos.create_and_poll(model=VIDEO, prompt="a falling leaf", seconds="4")
    assert video.status == "completed"
    assets = f"SELECT COUNT(*) FROM inference_videoasset WHERE video_id = '{video.id}'"
    assert dep.sql(assets) == [(3,)]
    _execute(
        dep,
        "UPDATE inference_video SET expires_at = completed_at "
        f"WHERE id = '{video.id}'",  # in the past
    )
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    with pytest.raises(openai.NotFoundError):
        client.videos.download_content(video.id)
    dep.rbee("gdpr", "retention", "run")
    assert dep.sql(assets) == [(0,)]
    assert dep.sql(f"SELECT COUNT(*) FROM inference_video WHERE id = '{video.id}'") == [(0,)]
    # The other videos have not expired and are still there.
    assert client.videos.retrieve(videos.first.id).status == "completed"


def test_the_post_answer_names_the_jobs_usage_row(videos: Videos) -> None:
    """Like every /v1 answer, the POST's x-request-id is the id its usage row (and audit
    event) is recorded under, and the client's X-Client-Request-Id is kept on that row."""
    dep = videos.stack.dep
    resp = _post(
        videos,
        json={"model": VIDEO, "prompt": "a kite", "seconds": "4"},
        headers={"X-Client-Request-Id": "vid-client-7"},
    )
    assert resp.status_code == 200, resp.text
    assert resp.headers["X-Client-Request-Id"] == "vid-client-7"
    request_id = resp.headers["x-request-id"]
    video_id = resp.json()["id"]
    assert _wait_done_in_db(dep, video_id) == "completed"
    assert dep.sql(f"SELECT request_id FROM inference_video WHERE id = '{video_id}'") == [
        (request_id,)
    ]
    assert dep.sql(
        "SELECT modality, video_seconds, client_request_id FROM billing_usageevent "
        f"WHERE request_id = '{request_id}'"
    ) == [("video", 4.0, "vid-client-7")]


# --- bad input: OpenAI's error bodies ----------------------------------------------------------


def _post(videos: Videos, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {videos.stack.api_key}", **kw.pop("headers", {})}
    return httpx.post(f"{videos.stack.base_url}/videos", headers=headers, timeout=30, **kw)


def _error(resp: httpx.Response, status: int) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return dict(body["error"])


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": VIDEO}, "prompt", "missing_required_parameter"),
        ({"model": VIDEO, "prompt": ""}, "prompt", "invalid_value"),
        ({"model": VIDEO, "prompt": "   "}, "prompt", "invalid_value"),
        ({"model": VIDEO, "prompt": 7}, "prompt", "invalid_type"),
        ({"model": VIDEO, "prompt": "a", "seconds": "four"}, "seconds", "invalid_value"),
        ({"model": VIDEO, "prompt": "a", "seconds": 0}, "seconds", "invalid_value"),
        ({"model": VIDEO, "prompt": "a", "seconds": [4]}, "seconds", "invalid_type"),
        ({"model": VIDEO, "prompt": "a", "size": "big"}, "size", "invalid_value"),
        ({"model": VIDEO, "prompt": "a", "steps": 0}, "steps", "invalid_value"),
        (
            {"model": VIDEO, "prompt": "a", "input_reference": {"image_url": "https://x/y.png"}},
            "input_reference",
            "unsupported_parameter",
        ),
    ],
)
def test_bad_bodies_are_refused_with_400(
    videos: Videos, body: dict[str, Any], param: str, code: str
) -> None:
    err = _error(_post(videos, json=body), 400)
    assert (err["param"], err["code"], err["type"]) == (param, code, "invalid_request_error")


def test_bad_requests_name_what_is_wrong(videos: Videos) -> None:
    before = videos.stack.dep.sql("SELECT COUNT(*) FROM inference_video")
    err = _error(_post(videos, json={"model": "no-such-model", "prompt": "a"}), 404)
    assert err["code"] == "model_not_found"
    err = _error(_post(videos, content=b"{not json", headers={"Content-Type": JSON}), 400)
    err = _error(_post(videos, content=b"prompt=a", headers={"Content-Type": FORM}), 415)
    assert err["code"] == "unsupported_media_type"
    # A reference image upload (multipart, as the SDK sends it): text to video only.
    err = _error(
        _post(
            videos,
            data={"model": VIDEO, "prompt": "a"},
            files={"input_reference": ("ref.png", b"\x89PNG\r\n\x1a\n", "image/png")},
        ),
        400,
    )
    assert (err["param"], err["code"]) == ("input_reference", "unsupported_parameter")
    no_key = httpx.post(f"{videos.stack.base_url}/videos", json={"prompt": "a"}, timeout=30)
    assert _error(no_key, 401)["code"] == "invalid_api_key"
    # None of these made a job.
    assert videos.stack.dep.sql("SELECT COUNT(*) FROM inference_video") == before

    auth = {"Authorization": f"Bearer {videos.stack.api_key}"}
    base = videos.stack.base_url
    err = _error(httpx.get(f"{base}/videos?limit=0", headers=auth), 400)
    assert err["param"] == "limit"
    err = _error(httpx.get(f"{base}/videos?order=sideways", headers=auth), 400)
    assert err["param"] == "order"
    err = _error(
        httpx.get(f"{base}/videos/{videos.first.id}/content?variant=gif", headers=auth), 400
    )
    assert err["param"] == "variant"
    err = _error(httpx.get(f"{base}/videos/video_nope", headers=auth), 404)
    assert err["code"] == "video_not_found"
    err = _error(httpx.put(f"{base}/videos/{videos.first.id}", headers=auth), 405)
    assert err["code"] == "method_not_allowed"


def test_the_sdk_multipart_create_is_accepted(videos: Videos) -> None:
    """The official SDK sends multipart/form-data; the JSON body works too (above)."""
    client = videos.stack.client()
    raw = client.videos.with_raw_response.create(
        model=VIDEO,
        prompt="x",
        seconds="5",  # type: ignore[arg-type]
    )
    assert raw.http_request.headers["content-type"].startswith("multipart/form-data")
    video = raw.parse()
    assert video.status == "queued" and video.seconds == "5"


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
