"""`GET /v1/stream` against a real `stateowner serve`: the log as Server-Sent Events, resumable,
filtered, capped, and for auditors only."""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN_TOKEN
from tests.helpers import ARTICLE_SPEC
from tests.live import LiveService, own_service

pytestmark = pytest.mark.api

MAX_STREAMS = 3


@dataclass
class Feed:
    """What a stream sent: its events, and every comment line."""

    events: list[dict[str, Any]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    comments: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def service(
    server_conninfo: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveService]:
    with own_service(
        server_conninfo,
        Path(tmp_path_factory.mktemp("stream")),
        STATEOWNER_MAX_STREAMS=str(MAX_STREAMS),
        STATEOWNER_STREAM_KEEPALIVE_SECONDS="0.3",
    ) as live:
        with live.client() as admin:
            assert admin.put("/v1/pipelines/article", json=ARTICLE_SPEC).status_code == 200
            for name, role in (("aud", "auditor"), ("bot", "agent")):
                response = admin.post("/v1/agents", json={"name": name, "role": role, "stages": []})
                assert response.status_code == 201
        yield live


def token(service: LiveService, name: str) -> str:
    """A fresh token for a registered identity (rotation shows it once)."""
    with service.client() as admin:
        response = admin.post(f"/v1/agents/{name}/rotate")
    assert response.status_code == 200, response.text
    value: str = response.json()["token"]
    return value


def create_item(service: LiveService, topic: str = "t", title: str = "x") -> dict[str, Any]:
    with service.client() as admin:
        response = admin.post(
            "/v1/items", json={"pipeline": "article", "topic": topic, "title": title}
        )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def head(service: LiveService) -> int:
    with service.client() as admin:
        position: int = admin.get("/v1/events", params={"limit": 1}).json()["last_position"]
        while True:
            page = admin.get("/v1/events", params={"after": position, "limit": 1000}).json()
            if page["last_position"] == position:
                return position
            position = page["last_position"]


@dataclass
class Stream:
    """An open stream, parsed as it is read."""

    response: httpx.Response
    feed: Feed = field(default_factory=Feed)
    lines: Iterator[str] | None = None

    @property
    def status_code(self) -> int:
        return self.response.status_code

    def read(self, until: Any, seconds: float = 20) -> Feed:
        """Parse until `until(feed)` holds (keep-alives let the loop look at the clock)."""
        if self.lines is None:
            self.lines = self.response.iter_lines()
        feed, data, event_id = self.feed, [], None
        deadline = time.monotonic() + seconds
        for line in self.lines:
            if line.startswith(":"):
                feed.comments.append(line)
            elif line.startswith("id: "):
                event_id = int(line[4:])
            elif line.startswith("data: "):
                data.append(line[6:])
            elif line == "" and data:
                feed.events.append(json.loads("\n".join(data)))
                feed.ids.append(event_id or 0)
                data = []
            if until(feed):
                return feed
            assert time.monotonic() < deadline, f"the stream did not deliver in time: {feed}"
        raise AssertionError(f"the stream ended: {feed}")


@contextmanager
def stream(
    service: LiveService, headers: dict[str, str] | None = None, **params: Any
) -> Iterator[Stream]:
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with (
        httpx.Client(base_url=service.base, timeout=httpx.Timeout(20, read=20)) as client,
        client.stream(
            "GET", "/v1/stream", params=params, headers={**auth, **(headers or {})}
        ) as response,
    ):
        yield Stream(response)


def open_streams(service: LiveService) -> int:
    text = httpx.get(f"{service.base}/metrics", timeout=10).text
    found = re.search(r"^stateowner_streams_open (\S+)$", text, re.MULTILINE)
    assert found, text[-500:]
    return int(float(found.group(1)))


def wait_until_no_streams(service: LiveService) -> None:
    deadline = time.monotonic() + 20
    while open_streams(service) != 0:
        assert time.monotonic() < deadline, "streams stayed open after their clients left"
        time.sleep(0.05)


def test_the_stream_sends_the_log_with_positions_as_ids(service: LiveService) -> None:
    """From after=0 the stream sends the log in order, each event's `id:` its position, each body
    the same as /v1/events gives."""
    create_item(service)
    last = head(service)
    with stream(service, after=0) as response:
        assert response.status_code == 200
        assert response.response.headers["content-type"].startswith("text/event-stream")
        feed = response.read(lambda f: f.ids and f.ids[-1] >= last)
    with service.client() as admin:
        logged = admin.get("/v1/events", params={"limit": 1000}).json()["events"]
    assert feed.ids == [event["position"] for event in logged[: len(feed.ids)]]
    assert feed.events == logged[: len(feed.events)]


def test_last_event_id_resumes_right_after_it(service: LiveService) -> None:
    """A reconnecting client sends Last-Event-ID: the stream goes on with the next position,
    whatever after= says."""
    item = create_item(service)
    with service.client() as admin:
        events = admin.get(f"/v1/items/{item['id']}/events").json()["events"]
    first, second = events[0]["position"], events[1]["position"]
    with stream(service, headers={"Last-Event-ID": str(first)}, after=0) as response:
        feed = response.read(lambda f: len(f.ids) >= 1)
    assert feed.ids[0] == second


def test_a_last_event_id_that_is_not_a_position_is_refused(service: LiveService) -> None:
    """A Last-Event-ID that is not a number is a 422 problem, not a stream from somewhere."""
    with stream(service, headers={"Last-Event-ID": "abc"}) as response:
        response.response.read()
        assert response.status_code == 422
        assert response.response.json()["code"] == "validation_error"


def test_new_events_arrive_while_the_stream_is_open(service: LiveService) -> None:
    """An event appended after the stream opened reaches it without a reconnect."""
    with stream(service, after=head(service)) as response:
        response.read(lambda f: bool(f.comments))  # connected
        item = create_item(service, title="live one")
        feed = response.read(lambda f: any(e["item_id"] == item["id"] for e in f.events))
    created = next(e for e in feed.events if e["item_id"] == item["id"])
    assert created["type"] == "ItemCreated"
    assert created["data"]["title"] == "live one"


def test_filters_by_type_item_and_topic(service: LiveService) -> None:
    """type= (repeatable), item= and topic= each keep only the events they name."""
    start = head(service)
    wanted = create_item(service, topic="wanted")
    other = create_item(service, topic="other")
    last = head(service)

    def upto_last(params: dict[str, Any]) -> list[dict[str, Any]]:
        marker = create_item(service, topic="wanted")  # one more event each filter admits
        with stream(service, after=start, **params) as response:
            feed = response.read(lambda f: any(e["item_id"] == marker["id"] for e in f.events))
        return [e for e in feed.events if e["position"] <= last]

    by_type = upto_last({"type": ["ItemCreated", "StageReady"]})
    assert {e["type"] for e in by_type} == {"ItemCreated", "StageReady"}
    assert {e["item_id"] for e in by_type} == {wanted["id"], other["id"]}
    by_topic = upto_last({"topic": "wanted"})
    assert {e["item_id"] for e in by_topic} == {wanted["id"]}
    with stream(service, after=start, item=other["id"]) as response:
        feed = response.read(lambda f: len(f.events) >= 2)
    assert {e["item_id"] for e in feed.events} == {other["id"]}


def test_an_idle_stream_sends_keep_alive_comments(service: LiveService) -> None:
    """With nothing to send, the stream still sends a comment every keep-alive interval."""
    with stream(service, after=head(service), type="NothingLikeThis") as response:
        feed = response.read(lambda f: ": keep-alive" in f.comments)
    assert feed.events == []


def test_streams_beyond_the_cap_are_refused_with_503(service: LiveService) -> None:
    """Past the cap a new stream gets 503 unavailable with Retry-After; once one closes, a new one
    is admitted."""
    wait_until_no_streams(service)
    last = head(service)
    with (
        stream(service, after=last) as first,
        stream(service, after=last) as second,
        stream(service, after=last) as third,
    ):
        assert [r.status_code for r in (first, second, third)] == [200, 200, 200]
        with stream(service, after=last) as refused:
            refused.response.read()
            assert refused.status_code == 503
            assert refused.response.headers["retry-after"]
            assert refused.response.json()["code"] == "unavailable"
    wait_until_no_streams(service)
    with stream(service, after=last) as again:
        assert again.status_code == 200


@pytest.mark.parametrize(
    ("who", "status"), [(None, 401), ("bot", 403), ("aud", 200), ("bogus", 401)]
)
def test_the_stream_is_for_auditors_and_above(
    service: LiveService, who: str | None, status: int
) -> None:
    """No token is 401, an agent's 403, an auditor's token opens the stream."""
    headers = {}
    if who == "bogus":
        headers = {"Authorization": "Bearer so_nothing_here"}
    elif who is not None:
        headers = {"Authorization": f"Bearer {token(service, who)}"}
    with (
        httpx.Client(base_url=service.base, timeout=20) as client,
        client.stream("GET", "/v1/stream", headers=headers) as response,
    ):
        assert response.status_code == status
        if status != 200:
            response.read()
            assert response.headers["content-type"] == "application/problem+json"


def test_the_consoles_session_cookie_opens_the_stream(service: LiveService) -> None:
    """A signed-in console page reads the stream with its cookie, no bearer token needed."""
    with httpx.Client(base_url=service.base, timeout=20) as browser:
        form = browser.get("/signin").text
        signin_token = re.search(r'name="signin_token" value="([^"]+)"', form)
        assert signin_token
        signed_in = browser.post(
            "/signin",
            data={"token": token(service, "aud"), "signin_token": signin_token.group(1)},
        )
        assert signed_in.status_code == 303
        with browser.stream("GET", "/v1/stream", params={"after": 0}) as response:
            assert response.status_code == 200
            feed = Stream(response).read(lambda f: len(f.events) >= 1)
    assert feed.ids[0] >= 1


def test_open_streams_do_not_hold_up_shutdown(
    server_conninfo: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """SIGTERM ends the open streams, so `serve` exits instead of waiting for its readers."""
    with (
        own_service(server_conninfo, Path(tmp_path_factory.mktemp("shutdown"))) as live,
        stream(live, after=0) as open_stream,
    ):
        open_stream.read(lambda f: bool(f.comments))
        process = live.processes[0].process
        assert process is not None
        process.terminate()
        # uvicorn re-raises the signal once it has shut down gracefully.
        assert process.wait(timeout=30) in (0, -signal.SIGTERM)
        with pytest.raises(AssertionError, match="the stream ended"):
            open_stream.read(lambda f: False)
