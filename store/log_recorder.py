"""The event log's writer: the library's process recorder, appending many commands' events in
one round trip, and chaining every event's hash to the one before it.

The library appends with LOCK TABLE, INSERT, a fetch of the new ids and COMMIT as separate round
trips, all holding the table lock; under load, writers queue on that lock while its holder waits
for its own Python thread to send the next step. Here one statement, a function, takes the same
EXCLUSIVE lock and, for each command in a group (see `store/group_commit.py`): refuses it alone
if another append took one of its aggregate versions or its tracking position, else records the
tracking position (if any), numbers its events, chains their hashes (see `store/chain.py`) and
inserts them; then NOTIFYs, and its implicit transaction commits at once: the same gap-free
order for followers, one commit for the group, the lock held only while the database works, and
the chain computed in the order the log has.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoredEvent,
    Tracking,
)
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from eventsourcing.utils import get_topic, retry
from psycopg.sql import SQL, Identifier, Literal

from domain.agent import Agent
from store.group_commit import GroupCommit

# Every process keeps the agents that call it in memory (api/principals.py); a change to one is
# announced here, in the append's own transaction, so no writer can forget to.
AGENTS_CHANNEL = "stateowner_agents"
AGENT_TOPIC = get_topic(Agent) + "."
FUNCTION_SUFFIX = "_append"
RECHAIN_SUFFIX = "_rechain"
GENESIS = SQL("'\\x" + "00" * 32 + "'::bytea")
# The bytes a hash covers, for a row or an array element `e` at position `id` (store/chain.py).
HASHED = SQL(
    "int8send({id}) || uuid_send({e}.originator_id) || int8send({e}.originator_version) "
    "|| int4send(octet_length(convert_to({e}.topic, 'UTF8'))) || convert_to({e}.topic, 'UTF8') "
    "|| int4send(octet_length({e}.state)) || {e}.state"
)


class SingleTripRecorder(PostgresProcessRecorder):
    def __init__(
        self,
        datastore: PostgresDatastore,
        *,
        events_table_name: str = "stored_events",
        tracking_table_name: str = "notification_tracking",
    ) -> None:
        super().__init__(
            datastore, events_table_name=events_table_name, tracking_table_name=tracking_table_name
        )
        names = {
            "schema": Identifier(self.datastore.schema),
            "events": Identifier(self.events_table_name),
            "tracking": Identifier(self.tracking_table_name),
            "event_type": Identifier(self.stored_event_type_name),
            "channel": Identifier(self.channel_name),
            "agents_channel": Literal(AGENTS_CHANNEL),
            "agent_topic": Literal(AGENT_TOPIC),
            "append": Identifier(self.events_table_name + FUNCTION_SUFFIX),
            "rechain": Identifier(self.events_table_name + RECHAIN_SUFFIX),
            "unchained": Identifier(self.events_table_name + "_unchained_idx"),
            "genesis": GENESIS,
            "sequence": Literal(f"{self.datastore.schema}.{self.events_table_name}"),
            "hash_of_e": HASHED.format(id=SQL("id"), e=SQL("e")),
            "hash_of_r": HASHED.format(id=SQL("r.notification_id"), e=SQL("r")),
        }
        self.sql_create_statements.extend(
            statement.format(**names) for statement in self._schema_statements()
        )
        self.append_statement = SQL(
            "SELECT * FROM {schema}.{append}(%s, %s::int[], %s::text[], %s::bigint[])"
        ).format(**names)
        self.rechain_statement = SQL("SELECT {schema}.{rechain}()").format(**names)
        self.group_commit: GroupCommit[Append, list[int]] = GroupCommit(self._append_together)

    @staticmethod
    def _schema_statements() -> list[SQL]:
        return [
            # A log written before the chain existed gets the column, then its chain (rechain).
            SQL("ALTER TABLE {schema}.{events} ADD COLUMN IF NOT EXISTS hash bytea"),
            SQL(
                "CREATE INDEX IF NOT EXISTS {unchained} ON {schema}.{events} (notification_id) "
                "WHERE hash IS NULL"
            ),
            # The single-append function of earlier releases; appends now go in groups.
            SQL("DROP FUNCTION IF EXISTS {schema}.{append}({schema}.{event_type}[], text, bigint)"),
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{append}("
                "events {schema}.{event_type}[], groups int[], tracking_names text[], "
                "tracking_ids bigint[]) "
                "RETURNS TABLE (appended_group int, appended_position bigint, conflict text) "
                "LANGUAGE plpgsql AS $BODY$ "
                "DECLARE previous bytea; e {schema}.{event_type}; id bigint; g int; "
                "  lo int := 1; hi int; ids bigint[]; hashes bytea[]; taken text; "
                "BEGIN "
                "  LOCK TABLE {schema}.{events} IN EXCLUSIVE MODE; "
                "  SELECT hash INTO previous FROM {schema}.{events} "
                "    ORDER BY notification_id DESC LIMIT 1; "
                "  previous := coalesce(previous, {genesis}); "
                "  FOR g IN 1 .. coalesce(array_length(tracking_names, 1), 0) LOOP "
                "    hi := lo - 1; "
                "    WHILE hi < coalesce(array_length(events, 1), 0) "
                "      AND groups[hi + 1] = g LOOP hi := hi + 1; END LOOP; "
                # A version another append took (committed, or earlier in this batch) refuses
                # this group alone, before anything of it is written.
                "    SELECT u.originator_id || ' version ' || u.originator_version INTO taken "
                "      FROM unnest(events[lo:hi]) AS u "
                "      JOIN {schema}.{events} s ON s.originator_id = u.originator_id "
                "      AND s.originator_version = u.originator_version LIMIT 1; "
                "    IF taken IS NOT NULL THEN "
                "      RETURN QUERY SELECT g, NULL::bigint, 'aggregate ' || taken || ' exists'; "
                "      lo := hi + 1; CONTINUE; "
                "    END IF; "
                "    IF tracking_names[g] IS NOT NULL THEN "
                "      INSERT INTO {schema}.{tracking} AS t (application_name, notification_id) "
                "      VALUES (tracking_names[g], tracking_ids[g]) "
                "      ON CONFLICT (application_name) DO UPDATE "
                "      SET notification_id = EXCLUDED.notification_id "
                "      WHERE t.notification_id < EXCLUDED.notification_id; "
                "      IF NOT FOUND THEN "
                "        RETURN QUERY SELECT g, NULL::bigint, "
                "          'tracking position ' || tracking_ids[g] || ' recorded already'; "
                "        lo := hi + 1; CONTINUE; "
                "      END IF; "
                "    END IF; "
                "    ids := '{{}}'; hashes := '{{}}'; "
                "    FOR n IN lo .. hi LOOP "
                "      e := events[n]; "
                "      id := nextval(pg_get_serial_sequence({sequence}, 'notification_id')); "
                "      previous := sha256(previous || {hash_of_e}); "
                "      ids := ids || id; hashes := hashes || previous; "
                "    END LOOP; "
                "    RETURN QUERY INSERT INTO {schema}.{events} "
                "      (notification_id, originator_id, originator_version, topic, state, hash) "
                "      SELECT ids[k], u.originator_id, u.originator_version, u.topic, u.state, "
                "      hashes[k] FROM unnest(events[lo:hi]) WITH ORDINALITY "
                "      AS u(originator_id, originator_version, topic, state, k) "
                "      RETURNING g, notification_id, NULL::text; "
                "    lo := hi + 1; "
                "  END LOOP; "
                "  NOTIFY {channel}; "
                "  PERFORM pg_notify({agents_channel}, a.originator_id::text) FROM "
                "    (SELECT DISTINCT u.originator_id FROM unnest(events) AS u "
                "     WHERE starts_with(u.topic, {agent_topic})) AS a; "
                "END $BODY$"
            ),
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{rechain}() RETURNS bigint "
                "LANGUAGE plpgsql AS $BODY$ "
                "DECLARE previous bytea; r record; chained bigint := 0; "
                "BEGIN "
                "  IF NOT EXISTS (SELECT 1 FROM {schema}.{events} WHERE hash IS NULL) THEN "
                "    RETURN 0; "
                "  END IF; "
                "  LOCK TABLE {schema}.{events} IN EXCLUSIVE MODE; "
                "  SELECT hash INTO previous FROM {schema}.{events} WHERE notification_id < "
                "    (SELECT min(notification_id) FROM {schema}.{events} WHERE hash IS NULL) "
                "    ORDER BY notification_id DESC LIMIT 1; "
                "  previous := coalesce(previous, {genesis}); "
                "  FOR r IN SELECT * FROM {schema}.{events} WHERE hash IS NULL "
                "      ORDER BY notification_id LOOP "
                "    previous := sha256(previous || {hash_of_r}); "
                "    UPDATE {schema}.{events} SET hash = previous "
                "      WHERE notification_id = r.notification_id; "
                "    chained := chained + 1; "
                "  END LOOP; "
                "  RETURN chained; "
                "END $BODY$"
            ),
        ]

    def create_table(self) -> None:
        """Create what is missing; then chain any events an earlier release appended."""
        super().create_table()
        with self.datastore.transaction(commit=True) as curs:
            curs.execute(self.rechain_statement)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Append with whatever other threads are appending now (see `store/group_commit.py`);
        a conflict refuses this append alone, as IntegrityError."""
        return self.group_commit.submit(Append(stored_events, kwargs.get("tracking")))

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def _append_together(self, appends: Sequence[Append]) -> list[list[int] | Exception]:
        events, groups = [], []
        for group, append in enumerate(appends, start=1):
            for e in append.events:
                events.append(
                    self.construct_pg_stored_event(
                        e.originator_id, e.originator_version, e.topic, e.state
                    )
                )
                groups.append(group)
        trackings = [append.tracking for append in appends]
        with self.datastore.get_connection() as conn:
            rows = conn.execute(
                self.append_statement,
                (
                    events,
                    groups,
                    [t.application_name if t else None for t in trackings],
                    [t.notification_id if t else None for t in trackings],
                ),
                prepare=True,
            ).fetchall()
        outcomes: list[list[int] | Exception] = [[] for _ in appends]
        for row in rows:
            outcome = outcomes[row["appended_group"] - 1]
            if row["conflict"] is not None:
                outcomes[row["appended_group"] - 1] = IntegrityError(row["conflict"])
            elif isinstance(outcome, list):
                outcome.append(row["appended_position"])
        return outcomes


@dataclass(frozen=True)
class Append:
    """One command's events, and the follower's position they answer (if any)."""

    events: Sequence[StoredEvent]
    tracking: Tracking | None
