"""The log's hash chain: every append extends it; a byte edited, a row deleted or inserted by
hand breaks it at that position; an export carries it and is checked without the database."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest

from api.container import Container
from domain.values import By, NewItem
from store import chain, ledger
from tests import release_log
from tests.integration.test_cli import run

pytestmark = pytest.mark.integration

OPS = By("operator:test", "t")


def _log(container: Container, items: int = 4) -> int:
    app = container.app
    app.put_pipeline("p", {"stages": [{"name": "work"}]}, OPS)
    for n in range(items):
        app.create_item(NewItem("p", "t", f"item {n}", {"n": n}), OPS)
    return app.position()


def test_every_append_extends_the_chain(container: Container) -> None:
    """Recomputing the chain from the genesis over every stored event matches every stored
    hash, whatever commands wrote them."""
    head = _log(container)
    verified = ledger.verify(container.database.conninfo)
    assert verified.broken is None
    assert (verified.events, verified.last) == (head, head)


def test_a_byte_edited_by_hand_breaks_the_chain_at_its_position(
    container: Container, clean_database: str
) -> None:
    """`log verify` passes on an honest log, and after one byte of one stored event is changed
    it exits 1 naming that event's position."""
    _log(container)
    container.close()
    honest = run(clean_database, "log", "verify")
    assert honest.returncode == 0, honest.stderr
    assert "chain intact" in honest.stdout
    with psycopg.connect(clean_database) as conn:
        conn.execute(
            "UPDATE stateowner_events SET state = overlay(state placing '7' from 40 for 1) "
            "WHERE notification_id = 5"
        )
    tampered = run(clean_database, "log", "verify")
    assert tampered.returncode == 1
    assert "the chain breaks at position 5" in tampered.stderr
    assert run(clean_database, "log", "verify", "--after", "5").returncode == 0


@pytest.mark.parametrize(
    ("tamper", "position"),
    [
        ("DELETE FROM stateowner_events WHERE notification_id = 4", 5),
        (
            "INSERT INTO stateowner_events SELECT gen_random_uuid(), 1, topic, state, 100, hash "
            "FROM stateowner_events WHERE notification_id = 3",
            100,
        ),
    ],
)
def test_a_row_deleted_or_inserted_by_hand_breaks_the_chain(
    container: Container, clean_database: str, tamper: str, position: int
) -> None:
    """A deleted row breaks the chain at the event after it; an inserted one, at itself."""
    _log(container)
    with psycopg.connect(clean_database) as conn:
        conn.execute(tamper)
    broken = ledger.verify(clean_database).broken
    assert broken is not None
    assert broken.position == position


def test_an_export_is_checked_offline_and_names_the_first_bad_line(
    container: Container, clean_database: str, tmp_path: Path
) -> None:
    """An export after a position carries its anchor and checks clean; a truncated export, or
    one with two lines swapped, names the first bad line."""
    head = _log(container)
    export = tmp_path / "log.jsonl"
    exported = run(clean_database, "log", "export", "--after", "3", "--out", str(export))
    assert exported.returncode == 0, exported.stderr
    lines = export.read_text().splitlines()
    assert json.loads(lines[0])["anchor"]["position"] == 3
    assert len(lines) == 1 + head - 3
    clean = run(clean_database, "log", "check", str(export))
    assert clean.returncode == 0, clean.stderr
    assert f"up to position {head}" in clean.stdout

    truncated = tmp_path / "truncated.jsonl"
    truncated.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:40])
    result = run(clean_database, "log", "check", str(truncated))
    assert result.returncode == 1
    assert f"line {len(lines)}: not a whole event" in result.stderr

    swapped = tmp_path / "swapped.jsonl"
    swapped.write_text("\n".join([lines[0], lines[2], lines[1], *lines[3:]]) + "\n")
    result = run(clean_database, "log", "check", str(swapped))
    assert result.returncode == 1
    assert "line 2: the chain breaks at position 5" in result.stderr


def test_a_log_written_before_the_chain_gets_one_on_upgrade(clean_database: str) -> None:
    """The release 0.1.0 log, restored into the table as that release made it (no hash column),
    is chained when today's release starts, and verifies."""
    with psycopg.connect(clean_database) as conn:
        conn.execute(
            "CREATE TABLE stateowner_events (originator_id uuid NOT NULL, "
            "originator_version bigint NOT NULL, topic text, state bytea, "
            "notification_id bigserial, PRIMARY KEY (originator_id, originator_version))"
        )
        conn.execute(
            "CREATE UNIQUE INDEX stateowner_events_notification_id_idx "
            "ON stateowner_events (notification_id ASC)"
        )
    head = release_log.restore(clean_database)
    records = release_log.records()
    upgraded = run(clean_database, "log", "verify")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"{len(records)} events after position 0, up to {head}" in upgraded.stdout
    previous = chain.GENESIS
    for record in records:
        previous = chain.link(
            previous,
            record.position,
            record.stored.originator_id,
            record.stored.originator_version,
            record.stored.topic,
            record.stored.state,
        )
    assert ledger.verify(clean_database).broken is None
    with psycopg.connect(clean_database) as conn:
        (stored,) = conn.execute(
            "SELECT hash FROM stateowner_events WHERE notification_id = %s", (head,)
        ).fetchone() or (None,)
    assert bytes(stored) == previous
