"""Verify the log's hash chain in the database, export a range of it with its chain, and check an
export offline, without the database."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

import psycopg
from psycopg import sql

from store.chain import GENESIS, Break, Link, first_break

EVENTS_TABLE = "stateowner_events"
EXPORT_FORMAT = "stateowner-log/1"
BATCH = 5000


@dataclass(frozen=True)
class Verified:
    """How far the chain was checked, and where it broke if it did."""

    first: int
    last: int
    events: int
    broken: Break | None


def _links(conn: psycopg.Connection[Any], after: int, until: int | None) -> Iterator[Link]:
    query = sql.SQL(
        "SELECT notification_id, originator_id, originator_version, topic, state, hash FROM {} "
        "WHERE notification_id > %s AND (%s::bigint IS NULL OR notification_id <= %s) "
        "ORDER BY notification_id LIMIT %s"
    ).format(sql.Identifier(EVENTS_TABLE))
    while True:
        rows = conn.execute(query, (after, until, until, BATCH)).fetchall()
        for position, originator_id, version, topic, state, hashed in rows:
            yield Link(
                position,
                originator_id,
                version,
                topic,
                bytes(state),
                bytes(hashed) if hashed is not None else None,
            )
        if len(rows) < BATCH:
            return
        after = rows[-1][0]


def anchor(conn: psycopg.Connection[Any], after: int) -> bytes:
    """The hash a range after `after` chains from: the stored hash at `after`, or the genesis."""
    if after == 0:
        return GENESIS
    row = conn.execute(
        sql.SQL(
            "SELECT hash FROM {} WHERE notification_id <= %s ORDER BY notification_id DESC LIMIT 1"
        ).format(sql.Identifier(EVENTS_TABLE)),
        (after,),
    ).fetchone()
    return bytes(row[0]) if row and row[0] is not None else GENESIS


def verify(conninfo: str, after: int = 0) -> Verified:
    """Recompute the chain after a position (trusting the hash stored there) to the head."""
    with psycopg.connect(conninfo) as conn:
        previous = anchor(conn, after)
        count, first, last = 0, 0, after
        for current in _links(conn, after, None):
            broken, previous = first_break([current], previous)
            if broken is not None:
                return Verified(first or current.position, last, count, broken)
            first, last, count = first or current.position, current.position, count + 1
        return Verified(first, last, count, None)


def export(conninfo: str, out: IO[str], after: int = 0, until: int | None = None) -> int:
    """Write the events after `after` (to `until`) as JSON Lines: first the anchor (the hash the
    range chains from), then each event with its hash. Returns how many events it wrote."""
    with psycopg.connect(conninfo) as conn:
        start = anchor(conn, after)
        out.write(
            json.dumps(
                {"format": EXPORT_FORMAT, "anchor": {"position": after, "hash": start.hex()}}
            )
            + "\n"
        )
        written = 0
        for current in _links(conn, after, until):
            out.write(json.dumps(_record(current), sort_keys=True) + "\n")
            written += 1
        return written


def _record(current: Link) -> dict[str, Any]:
    record: dict[str, Any] = {
        "position": current.position,
        "originator_id": str(current.originator_id),
        "originator_version": current.originator_version,
        "topic": current.topic,
        "hash": current.hash.hex() if current.hash is not None else None,
    }
    try:
        record["state"] = current.state.decode("utf-8")
    except UnicodeDecodeError:
        record["state_base64"] = base64.b64encode(current.state).decode()
    return record


@dataclass(frozen=True)
class Checked:
    events: int
    last_position: int
    problem: str | None


def check(lines: Iterator[str]) -> Checked:
    """Verify an export offline: every line whole, positions rising, each hash the one its
    content and the line before give, from the anchor on. Names the first bad line."""
    count, position = 0, 0
    try:
        header = json.loads(next(lines))
        previous = bytes.fromhex(header["anchor"]["hash"])
        position = int(header["anchor"]["position"])
        if header.get("format") != EXPORT_FORMAT:
            return Checked(0, position, f"line 1: not a {EXPORT_FORMAT} export")
    except (StopIteration, ValueError, KeyError, TypeError):
        return Checked(0, 0, "line 1: no anchor: the export is empty or not an export")
    for number, line in enumerate(lines, start=2):
        try:
            record = json.loads(line)
            current = Link(
                int(record["position"]),
                uuid.UUID(record["originator_id"]),
                int(record["originator_version"]),
                record["topic"],
                record["state"].encode()
                if "state" in record
                else base64.b64decode(record["state_base64"]),
                bytes.fromhex(record["hash"]),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return Checked(count, position, f"line {number}: not a whole event (truncated?)")
        if current.position <= position:
            return Checked(
                count, position, f"line {number}: position {current.position} is out of order"
            )
        broken, previous = first_break([current], previous)
        if broken is not None:
            return Checked(count, position, f"line {number}: {broken.describe()}")
        count, position = count + 1, current.position
    return Checked(count, position, None)
