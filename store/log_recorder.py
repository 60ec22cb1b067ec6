"""The event log's writer: the library's process recorder, appending in one round trip, and
chaining every event's hash to the one before it.

The library appends with LOCK TABLE, INSERT, a fetch of the new ids and COMMIT as separate round
trips, all holding the table lock; under load, writers queue on that lock while its holder waits
for its own Python thread to send the next step. Here one statement, a function, takes the same
EXCLUSIVE lock, records the tracking position (if any), numbers the events, chains their hashes
(see `store/chain.py`), inserts them and NOTIFYs, and its implicit transaction commits at once:
the same gap-free order for followers, the lock held only while the database works, and the
chain computed in the order the log has.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier, Literal

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
        self.append_statement = SQL("SELECT * FROM {schema}.{append}(%s, %s, %s)").format(**names)
        self.rechain_statement = SQL("SELECT {schema}.{rechain}()").format(**names)
        self.returned_column = self.events_table_name + FUNCTION_SUFFIX

    @staticmethod
    def _schema_statements() -> list[SQL]:
        return [
            # A log written before the chain existed gets the column, then its chain (rechain).
            SQL("ALTER TABLE {schema}.{events} ADD COLUMN IF NOT EXISTS hash bytea"),
            SQL(
                "CREATE INDEX IF NOT EXISTS {unchained} ON {schema}.{events} (notification_id) "
                "WHERE hash IS NULL"
            ),
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{append}("
                "events {schema}.{event_type}[], tracking_name text, tracking_id bigint) "
                "RETURNS SETOF bigint LANGUAGE plpgsql AS $BODY$ "
                "DECLARE previous bytea; ids bigint[] := '{{}}'; hashes bytea[] := '{{}}'; "
                "  e {schema}.{event_type}; id bigint; "
                "BEGIN "
                "  LOCK TABLE {schema}.{events} IN EXCLUSIVE MODE; "
                "  IF tracking_name IS NOT NULL THEN "
                "    INSERT INTO {schema}.{tracking} AS t (application_name, notification_id) "
                "    VALUES (tracking_name, tracking_id) ON CONFLICT (application_name) DO UPDATE "
                "    SET notification_id = EXCLUDED.notification_id "
                "    WHERE t.notification_id < EXCLUDED.notification_id; "
                "    IF NOT FOUND THEN "
                "      RAISE EXCEPTION USING ERRCODE = 'unique_violation', "
                "      MESSAGE = 'tracking position ' || tracking_id || ' recorded already'; "
                "    END IF; "
                "  END IF; "
                "  SELECT hash INTO previous FROM {schema}.{events} "
                "    ORDER BY notification_id DESC LIMIT 1; "
                "  previous := coalesce(previous, {genesis}); "
                "  FOREACH e IN ARRAY events LOOP "
                "    id := nextval(pg_get_serial_sequence({sequence}, 'notification_id')); "
                "    previous := sha256(previous || {hash_of_e}); "
                "    ids := ids || id; hashes := hashes || previous; "
                "  END LOOP; "
                "  NOTIFY {channel}; "
                "  RETURN QUERY INSERT INTO {schema}.{events} "
                "    (notification_id, originator_id, originator_version, topic, state, hash) "
                "    SELECT ids[n], originator_id, originator_version, topic, state, hashes[n] "
                "    FROM unnest(events) WITH ORDINALITY "
                "    AS u(originator_id, originator_version, topic, state, n) "
                "    RETURNING notification_id; "
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

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        tracking: Tracking | None = kwargs.get("tracking")
        events = [
            self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state)
            for e in stored_events
        ]
        with self.datastore.get_connection() as conn:
            rows = conn.execute(
                self.append_statement,
                (
                    events,
                    tracking.application_name if tracking else None,
                    tracking.notification_id if tracking else None,
                ),
                prepare=True,
            ).fetchall()
        return [row[self.returned_column] for row in rows]
