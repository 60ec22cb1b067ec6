"""topics: each topic's metadata, and the inventory of its items by stage and status."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from psycopg import Cursor, sql
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from domain.item import Item, ItemStopped, LeaseEnded, LeaseReported
from domain.topic import Described
from projections.base import ADD_SPEND, Fold, View, add_spend, handles, spend_of


class TopicsView(View):
    name = "topics"
    tables = {"topics": ("name",), "topic_items": ("item_id",)}

    def table_statements(self) -> Sequence[sql.Composed]:
        return [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                "name text PRIMARY KEY, defined boolean NOT NULL, owner text, priority int NOT NULL, "
                "tags jsonb NOT NULL, metadata jsonb NOT NULL, cost_usd numeric NOT NULL, "
                "tokens_in bigint NOT NULL, tokens_out bigint NOT NULL, "
                "last_activity_at timestamptz NOT NULL, created_at timestamptz NOT NULL, "
                "updated_at timestamptz NOT NULL)"
            ).format(self.table("topics")),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (item_id uuid PRIMARY KEY, topic text NOT NULL, "
                "stage text NOT NULL, status text NOT NULL)"
            ).format(self.table("topic_items")),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (topic)").format(
                sql.Identifier("topic_items_topic_idx"), self.table("topic_items")
            ),
        ]

    def _touch_topic(self, curs: Cursor[DictRow], topic: str, at: Any) -> None:
        curs.execute(
            sql.SQL(
                "INSERT INTO {} (name, defined, priority, tags, metadata, cost_usd, tokens_in, "
                "tokens_out, last_activity_at, created_at, updated_at) "
                "VALUES (%s, false, 0, '[]', '{{}}', 0, 0, 0, %s, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET last_activity_at = EXCLUDED.last_activity_at"
            ).format(self.table("topics")),
            (topic, at, at, at),
        )

    def _item_moved(
        self,
        curs: Cursor[DictRow],
        event: Any,
        assignments: str,
        topic_assignments: str = "",
        **params: Any,
    ) -> None:
        """Update the item's row, and its topic's last activity (and `topic_assignments`)."""
        statement = self.composed(
            assignments + topic_assignments,
            lambda: sql.SQL(
                "WITH moved AS (UPDATE {items} SET {assignments} WHERE item_id = %(item_id)s "
                "RETURNING topic) UPDATE {topics} SET last_activity_at = %(at)s{more} "
                "FROM moved WHERE {topics}.name = moved.topic"
            ).format(
                items=self.table("topic_items"),
                topics=self.table("topics"),
                assignments=sql.SQL(assignments),
                more=sql.SQL(f", {topic_assignments}" if topic_assignments else ""),
            ),
        )
        curs.execute(
            statement,
            {**params, "item_id": event.originator_id, "at": event.timestamp},
        )

    @handles(Described)
    def topic_described(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        curs.execute(
            sql.SQL(
                "INSERT INTO {} AS t (name, defined, owner, priority, tags, metadata, cost_usd, "
                "tokens_in, tokens_out, last_activity_at, created_at, updated_at) "
                "VALUES (%(name)s, true, %(owner)s, %(priority)s, %(tags)s, %(metadata)s, 0, 0, 0, "
                "%(at)s, %(at)s, %(at)s) ON CONFLICT (name) DO UPDATE SET defined = true, "
                "owner = EXCLUDED.owner, priority = EXCLUDED.priority, tags = EXCLUDED.tags, "
                "metadata = EXCLUDED.metadata, updated_at = EXCLUDED.updated_at"
            ).format(self.table("topics")),
            {
                "name": event.name,
                "owner": event.owner,
                "priority": event.priority,
                "tags": Jsonb(event.tags),
                "metadata": Jsonb(event.metadata),
                "at": event.timestamp,
            },
        )

    @handles(Item.ItemCreated)
    def item_created(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._touch_topic(curs, event.topic, event.timestamp)
        curs.execute(
            sql.SQL(
                "INSERT INTO {} (item_id, topic, stage, status) VALUES (%s, %s, '', 'ready')"
            ).format(self.table("topic_items")),
            (event.originator_id, event.topic),
        )

    @handles(Item.StageReady)
    def stage_ready(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._item_moved(curs, event, "stage = %(stage)s, status = 'ready'", stage=event.stage)

    @handles(Item.StageClaimed)
    def stage_claimed(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._item_moved(curs, event, "status = 'claimed'")

    @handles(LeaseEnded)
    def lease_ended(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        if isinstance(event, LeaseReported):
            self._item_moved(curs, event, "status = 'advancing'", ADD_SPEND, **spend_of(event))
        else:
            self._item_moved(curs, event, "status = 'advancing'")

    @handles(ItemStopped)
    def item_stopped(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._item_moved(curs, event, "status = %(status)s", status=event.status)


class TopicsFold(Fold):
    view = TopicsView
    jsonb = frozenset({"tags", "metadata"})

    def _new_topic(self, name: str, at: Any, defined: bool, **facts: Any) -> None:
        self.insert(
            "topics",
            name,
            {
                "name": name,
                "defined": defined,
                "owner": None,
                "priority": 0,
                "tags": [],
                "metadata": {},
                **facts,
                "cost_usd": Decimal(0),
                "tokens_in": 0,
                "tokens_out": 0,
                "last_activity_at": at,
                "created_at": at,
                "updated_at": at,
            },
        )

    def topic_described(self, event: Any, position: int) -> None:
        facts = {
            "owner": event.owner,
            "priority": event.priority,
            "tags": event.tags,
            "metadata": event.metadata,
        }
        row = self.tables["topics"].get(event.name)
        if row is None:
            self._new_topic(event.name, event.timestamp, True, **facts)
        else:
            row.update(facts, defined=True, updated_at=event.timestamp)

    def item_created(self, event: Any, position: int) -> None:
        row = self.tables["topics"].get(event.topic)
        if row is None:
            self._new_topic(event.topic, event.timestamp, False)
        else:
            row["last_activity_at"] = event.timestamp
        self.insert(
            "topic_items",
            event.originator_id.int,
            {"item_id": event.originator_id, "topic": event.topic, "stage": "", "status": "ready"},
        )

    def _item_moved(self, event: Any, spend: bool = False, **values: Any) -> None:
        item = self.tables["topic_items"].get(event.originator_id.int)
        if item is None:
            return
        item.update(values)
        topic = self.tables["topics"].get(item["topic"])
        if topic is not None:
            topic["last_activity_at"] = event.timestamp
            if spend:
                add_spend(topic, event)

    def stage_ready(self, event: Any, position: int) -> None:
        self._item_moved(event, stage=event.stage, status="ready")

    def stage_claimed(self, event: Any, position: int) -> None:
        self._item_moved(event, status="claimed")

    def lease_ended(self, event: Any, position: int) -> None:
        self._item_moved(event, isinstance(event, LeaseReported), status="advancing")

    def item_stopped(self, event: Any, position: int) -> None:
        self._item_moved(event, status=event.status)
