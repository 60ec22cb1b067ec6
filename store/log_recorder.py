"""The event log's writer: the library's process recorder, appending in one round trip.

The library appends with LOCK TABLE, INSERT, a fetch of the new ids and COMMIT as separate round
trips, all holding the table lock; under load, writers queue on that lock while its holder waits
for its own Python thread to send the next step. Here one statement, a function, takes the same
EXCLUSIVE lock, records the tracking position (if any), inserts the events and NOTIFYs, and its
implicit transaction commits at once: the same gap-free order for followers, the lock held only
while the database works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from eventsourcing.persistence import InterfaceError, OperationalError, StoredEvent, Tracking
from eventsourcing.postgres import PostgresDatastore, PostgresProcessRecorder
from eventsourcing.utils import retry
from psycopg.sql import SQL, Identifier

FUNCTION_SUFFIX = "_append"


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
        schema = Identifier(self.datastore.schema)
        function = Identifier(self.events_table_name + FUNCTION_SUFFIX)
        events = Identifier(self.events_table_name)
        tracking = Identifier(self.tracking_table_name)
        self.sql_create_statements.append(
            SQL(
                "CREATE OR REPLACE FUNCTION {schema}.{function}("
                "events {schema}.{event_type}[], tracking_name text, tracking_id bigint) "
                "RETURNS SETOF bigint LANGUAGE plpgsql AS $BODY$ "
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
                "  NOTIFY {channel}; "
                "  RETURN QUERY INSERT INTO {schema}.{events} "
                "    (originator_id, originator_version, topic, state) "
                "    SELECT originator_id, originator_version, topic, state FROM unnest(events) "
                "    RETURNING notification_id; "
                "END $BODY$"
            ).format(
                schema=schema,
                function=function,
                event_type=Identifier(self.stored_event_type_name),
                events=events,
                tracking=tracking,
                channel=Identifier(self.channel_name),
            )
        )
        self.append_statement = SQL("SELECT * FROM {schema}.{function}(%s, %s, %s)").format(
            schema=schema, function=function
        )
        self.returned_column = self.events_table_name + FUNCTION_SUFFIX

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
