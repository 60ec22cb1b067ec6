"""The fixture log of an earlier release (tests/fixtures/), read and restored as it was stored."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from eventsourcing.persistence import StoredEvent

FIXTURES = Path(__file__).parent / "fixtures"
RELEASE_LOG = FIXTURES / "release-0.1.0.jsonl"
RELEASE_FOLDED = FIXTURES / "release-0.1.0.folded.json"


@dataclass(frozen=True)
class Record:
    position: int
    stored: StoredEvent


def records(path: Path = RELEASE_LOG) -> list[Record]:
    found = []
    for line in path.read_text().splitlines():
        raw = json.loads(line)
        stored = StoredEvent(
            originator_id=uuid.UUID(raw["originator_id"]),
            originator_version=raw["originator_version"],
            topic=raw["topic"],
            state=raw["state"].encode(),
        )
        found.append(Record(raw["position"], stored))
    return found


def folded(path: Path = RELEASE_FOLDED) -> dict[str, dict[str, Any]]:
    """Each aggregate's public state as the release folded its events (JSON, values as text)."""
    state: dict[str, dict[str, Any]] = json.loads(path.read_text())
    return state


def restore(conninfo: str, path: Path = RELEASE_LOG) -> int:
    """Insert the log's events at their own positions into an empty event table; returns the
    last position."""
    log = records(path)
    with psycopg.connect(conninfo) as conn:
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO stateowner_events "
                "(notification_id, originator_id, originator_version, topic, state) "
                "VALUES (%s, %s, %s, %s, %s)",
                [
                    (
                        r.position,
                        r.stored.originator_id,
                        r.stored.originator_version,
                        r.stored.topic,
                        r.stored.state,
                    )
                    for r in log
                ],
            )
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('stateowner_events', 'notification_id'), %s)",
            (log[-1].position,),
        )
    return log[-1].position
