"""The log's hash chain: each event's hash covers its content and the hash before it, in log
order, so a row edited, deleted or inserted by hand breaks the chain from there on.

    hash(n) = sha256(hash(n-1) || be64(position) || uuid(originator_id) || be64(version)
                     || be32(len(topic)) || topic || be32(len(state)) || state)

with hash(0) = 32 zero bytes. The append function in the database computes the same (see
`log_recorder.py`); this module recomputes it to verify the log, or an export of it, offline.
"""

from __future__ import annotations

import hashlib
import struct
import uuid
from dataclasses import dataclass

GENESIS = bytes(32)


def link(
    previous: bytes,
    position: int,
    originator_id: uuid.UUID,
    originator_version: int,
    topic: str,
    state: bytes,
) -> bytes:
    """The hash of one event, given the hash of the event before it."""
    topic_bytes = topic.encode()
    return hashlib.sha256(
        previous
        + struct.pack(">q", position)
        + originator_id.bytes
        + struct.pack(">q", originator_version)
        + struct.pack(">i", len(topic_bytes))
        + topic_bytes
        + struct.pack(">i", len(state))
        + state
    ).digest()


@dataclass(frozen=True)
class Link:
    """One stored event as the chain sees it."""

    position: int
    originator_id: uuid.UUID
    originator_version: int
    topic: str
    state: bytes
    hash: bytes | None

    def expected(self, previous: bytes) -> bytes:
        return link(
            previous,
            self.position,
            self.originator_id,
            self.originator_version,
            self.topic,
            self.state,
        )


@dataclass(frozen=True)
class Break:
    """Where the chain stops matching, and why."""

    position: int
    reason: str

    def describe(self) -> str:
        return f"the chain breaks at position {self.position}: {self.reason}"


def first_break(links: list[Link], previous: bytes) -> tuple[Break | None, bytes]:
    """The first link whose stored hash is not the one its content and predecessor give; with
    the last good hash, to go on from."""
    for current in links:
        if current.hash is None:
            return Break(current.position, "the event has no hash"), previous
        if current.expected(previous) != current.hash:
            return (
                Break(
                    current.position,
                    "its content or an event before it was changed, removed or inserted",
                ),
                previous,
            )
        previous = current.hash
    return None, previous
