"""Terminal views for `stateowner items …` and `stateowner tail`: the same reads as the console,
from a remote server over HTTP (a URL and a token) or from the local database (a Container)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Protocol

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from api.container import Container
from api.presenters import event_body, item_from_aggregate, item_from_row
from api.schemas import EventOut, ItemOut
from api.stream import StreamFilter
from domain.errors import NotFound
from projections.follower import read_batch
from projections.queries import BadCursor

POLL_SECONDS = 0.5
STATUS_STYLES = {
    "ready": "blue",
    "claimed": "magenta",
    "advancing": "cyan",
    "parked": "bold red",
    "halted": "bold yellow",
    "done": "green",
    "cancelled": "dim",
}


class Refused(Exception):
    """The server (or the local database) said no: shown as a message, exit status 1."""


class Source(Protocol):
    def items(
        self, filters: dict[str, str | None], limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]: ...

    def item(self, item_id: str) -> dict[str, Any]: ...

    def history(self, item_id: str) -> list[dict[str, Any]]: ...

    def at(self, item_id: str, version: int) -> dict[str, Any]: ...

    def tail(
        self, after: int | None, types: list[str], item: str | None, topic: str | None
    ) -> Iterator[dict[str, Any]]: ...


def _item(body: dict[str, Any]) -> dict[str, Any]:
    """An item as the API's response model encodes it, so both sources render alike."""
    return ItemOut.model_validate(body).model_dump(mode="json", by_alias=True)


def _event(body: dict[str, Any]) -> dict[str, Any]:
    return EventOut.model_validate(body).model_dump(mode="json", by_alias=True)


class Remote:
    """A stateowner server, read with a bearer token."""

    def __init__(self, url: str, token: str) -> None:
        self.client = httpx.Client(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(30, read=60),
        )

    def _get(self, path: str, **params: Any) -> Any:
        try:
            response = self.client.get(
                path, params={k: v for k, v in params.items() if v is not None}
            )
        except httpx.TransportError as error:
            raise Refused(f"cannot reach {self.client.base_url}: {error}") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text[:200]
            raise Refused(f"{response.status_code}: {detail}")
        return response.json()

    def items(
        self, filters: dict[str, str | None], limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        body = self._get("/v1/items", limit=limit, cursor=cursor, **filters)
        return body["items"], body.get("next_cursor")

    def item(self, item_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self._get(f"/v1/items/{item_id}")
        return body

    def history(self, item_id: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        cursor = None
        while True:
            body = self._get(f"/v1/items/{item_id}/events", cursor=cursor)
            events.extend(body["events"])
            # Paged answers carry next_cursor; an unpaged one is the whole history.
            cursor = body.get("next_cursor")
            if not cursor:
                return events

    def at(self, item_id: str, version: int) -> dict[str, Any]:
        body: dict[str, Any] = self._get(f"/v1/items/{item_id}/at/{version}")
        return body

    def tail(
        self, after: int | None, types: list[str], item: str | None, topic: str | None
    ) -> Iterator[dict[str, Any]]:
        """Follow /v1/stream, reconnecting after a dropped connection from the last id seen."""
        last = after
        params = {"type": types or None, "item": item, "topic": topic}
        while True:
            try:
                with self.client.stream(
                    "GET",
                    "/v1/stream",
                    params={k: v for k, v in params.items() if v is not None},
                    # No position yet: the stream starts at the log's head, live events only.
                    headers={"Last-Event-ID": str(last)} if last is not None else {},
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise Refused(f"{response.status_code}: {response.json().get('detail')}")
                    for line in response.iter_lines():
                        if line.startswith("data: "):
                            event: dict[str, Any] = json.loads(line[6:])
                            last = int(event["position"])
                            yield event
            except httpx.TransportError:
                time.sleep(1)


class Local:
    """This machine's database, through the same Queries and application as the server."""

    def __init__(self, container: Container) -> None:
        self.container = container

    def _uuid(self, item_id: str) -> uuid.UUID:
        try:
            return uuid.UUID(item_id)
        except ValueError:
            raise Refused(f"no item {item_id!r}") from None

    def items(
        self, filters: dict[str, str | None], limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        try:
            rows, next_cursor = self.container.queries.items(
                pipeline=filters.get("pipeline"),
                topic=filters.get("topic"),
                stage=filters.get("stage"),
                status=filters.get("status"),
                agent=filters.get("agent"),
                limit=limit,
                cursor=cursor,
            )
        except BadCursor as error:
            raise Refused(str(error)) from None
        return [_item(item_from_row(row)) for row in rows], next_cursor

    def item(self, item_id: str) -> dict[str, Any]:
        row = self.container.queries.item(self._uuid(item_id))
        if row is None:
            raise Refused(f"no item {item_id}")
        return _item(item_from_row(row))

    def history(self, item_id: str) -> list[dict[str, Any]]:
        app = self.container.app
        stored = self.container.queries.stored_events(self._uuid(item_id))
        if not stored:
            raise Refused(f"no item {item_id}")
        return [_event(event_body(app.mapper.to_domain_event(s), p)) for s, p in stored]

    def at(self, item_id: str, version: int) -> dict[str, Any]:
        uid = self._uuid(item_id)
        app = self.container.app
        try:
            current = app.item(uid)
        except NotFound:
            raise Refused(f"no item {item_id}") from None
        if not 1 <= version <= current.version:
            raise Refused(f"item {item_id} has no version {version}; it is at {current.version}")
        position = self.container.queries.event_position(uid, version)
        return _item(item_from_aggregate(app.item(uid, version=version), position))

    def tail(
        self, after: int | None, types: list[str], item: str | None, topic: str | None
    ) -> Iterator[dict[str, Any]]:
        app = self.container.app
        position = app.position() if after is None else after

        def topic_of(item_id: uuid.UUID) -> str | None:
            try:
                return app.item(item_id, version=1).topic
            except NotFound:
                return None

        admits = StreamFilter(
            types=frozenset(types),
            item=self._uuid(item) if item else None,
            topic=topic,
            topic_of=topic_of,
        ).admits
        while True:
            batch = read_batch(app.recorder, app.mapper, position, 500)
            for event, at in batch:
                position = at
                if admits(event):
                    yield _event(event_body(event, at))
            if not batch:
                time.sleep(POLL_SECONDS)


# -- rendering -----------------------------------------------------------------------------------


def _when(value: str | None) -> str:
    if not value:
        return "—"
    return datetime.fromisoformat(value.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M:%S")


def _status(value: str) -> Text:
    return Text(value, style=STATUS_STYLES.get(value, ""))


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 or value == 0 else f"${value:.4f}"


def items_table(items: list[dict[str, Any]]) -> Table:
    table = Table("title", "status", "pipeline", "stage", "topic", "agent", "cost", "updated")
    table.add_column("id", no_wrap=True, style="dim")
    for item in items:
        table.add_row(
            Text(item["title"]),
            _status(item["status"]),
            f"{item['pipeline']} v{item['pipeline_version']}",
            item["stage"],
            item["topic"],
            item.get("agent") or "",
            _usd(item["cost_usd"]),
            _when(item["updated_at"]),
            item["id"],
        )
    return table


def item_table(item: dict[str, Any], title: str) -> Table:
    table = Table(title=title, show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for name in (
        "id",
        "title",
        "status",
        "pipeline",
        "pipeline_version",
        "topic",
        "stage",
        "visit",
        "attempt",
        "agent",
        "lease_expires_at",
        "not_before",
        "visits",
        "transitions",
        "cost_usd",
        "tokens",
        "version",
        "position",
        "created_by",
        "created_at",
        "updated_at",
    ):
        value = item.get(name)
        if name == "status":
            table.add_row(name, _status(str(value)))
        elif name == "cost_usd":
            table.add_row(name, _usd(float(value or 0)))
        elif isinstance(value, dict):
            table.add_row(name, json.dumps(value))
        else:
            table.add_row(name, Text("—" if value is None else str(value)))
    return table


def _cost(event: dict[str, Any]) -> str:
    cost = event["data"].get("cost_usd")
    return _usd(float(cost)) if cost is not None else ""


def history_table(events: list[dict[str, Any]], title: str) -> Table:
    table = Table("pos", "v", "time", "event", "actor", "cause", "cost", "details", title=title)
    for event in events:
        data = event["data"]
        details = ", ".join(
            f"{key}={value}"
            for key, value in data.items()
            if key in ("stage", "agent", "reason", "attempt", "outcome", "error", "detail")
            and value not in (None, "")
        )
        table.add_row(
            str(event["position"]),
            str(event["version"]),
            _when(event["at"]),
            event["type"],
            event.get("actor") or "",
            event.get("caused_by") or "",
            _cost(event),
            Text(details),
        )
    return table


def tail_line(event: dict[str, Any]) -> Text:
    line = Text()
    line.append(f"{event['position']:>8} ", style="dim")
    line.append(f"{_when(event['at'])} ")
    line.append(f"{event['type']:<16} ", style="bold")
    line.append(f"{event.get('actor') or '':<22} ")
    line.append(event.get("item_id") or event["aggregate_id"], style="dim")
    cost = _cost(event)
    if cost:
        line.append(f"  {cost}")
    return line


def render_tail(
    console: Console, events: Iterator[dict[str, Any]], count: int | None, raw: bool
) -> None:
    for shown, event in enumerate(events, start=1):
        if raw:
            print(json.dumps(event), flush=True)
        else:
            console.print(tail_line(event), soft_wrap=True)
        if count is not None and shown >= count:
            return
