"""Server-Sent Events, line by line (the WHATWG event-stream rules that the live feed needs)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from stateowner_client.models import DecodeError, Event, decode


@dataclass(frozen=True)
class Message:
    data: str
    event: str | None = None
    id: str | None = None


class Decoder:
    """Feed it lines without their ends; it answers a message at each blank line that ends one."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event: str | None = None
        self._id: str | None = None

    def feed(self, line: str) -> Message | None:
        if not line:
            message = None
            if self._data:
                message = Message("\n".join(self._data), self._event, self._id)
            self._data, self._event, self._id = [], None, None
            return message
        if line.startswith(":"):
            return None  # a comment: the server's keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id" and "\0" not in value:
            self._id = value
        return None


def event_of(message: Message) -> Event | None:
    """The log event a message carries; None for anything else (a ping, a malformed line)."""
    try:
        body = json.loads(message.data)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if "position" not in body and message.id and message.id.isdigit():
        body["position"] = int(message.id)
    if "type" not in body and message.event:
        body["type"] = message.event
    try:
        return decode(Event, body)
    except (DecodeError, TypeError, ValueError):
        return None
