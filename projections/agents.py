"""agents: each identity, its scope, and what it has done."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from psycopg import Cursor, sql
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from domain.agent import Agent
from domain.item import Item, LeaseReported
from projections.base import ADD_SPEND, Fold, FoldConflict, View, add_spend, handles, spend_of


class AgentsView(View):
    name = "agents"
    tables = {"agents": ("name",)}

    def table_statements(self) -> Sequence[sql.Composed]:
        return [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                "name text PRIMARY KEY, agent_id uuid NOT NULL, role text NOT NULL, "
                "stages jsonb NOT NULL, disabled boolean NOT NULL, claims int NOT NULL, "
                "completions int NOT NULL, failures int NOT NULL, expired int NOT NULL, "
                "cost_usd numeric NOT NULL, tokens_in bigint NOT NULL, tokens_out bigint NOT NULL, "
                "last_active_at timestamptz, created_by text NOT NULL, "
                "created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL)"
            ).format(self.table("agents"))
        ]

    @handles(Agent.AgentRegistered)
    def agent_registered(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        curs.execute(
            sql.SQL(
                "INSERT INTO {} (name, agent_id, role, stages, disabled, claims, completions, "
                "failures, expired, cost_usd, tokens_in, tokens_out, created_by, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, false, 0, 0, 0, 0, 0, 0, 0, %s, %s, %s)"
            ).format(self.table("agents")),
            (
                event.name,
                event.originator_id,
                event.role,
                Jsonb(event.stages),
                event.actor,
                event.timestamp,
                event.timestamp,
            ),
        )

    def _identity(self, curs: Cursor[DictRow], event: Any, assignments: str, *params: Any) -> None:
        curs.execute(
            sql.SQL("UPDATE {} SET {}, updated_at = %s WHERE agent_id = %s").format(
                self.table("agents"), sql.SQL(assignments)
            ),
            (*params, event.timestamp, event.originator_id),
        )

    @handles(Agent.AgentScopeChanged)
    def scope_changed(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._identity(curs, event, "stages = %s", Jsonb(event.stages))

    @handles(Agent.AgentDisabled)
    def agent_disabled(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._identity(curs, event, "disabled = true")

    def _activity(self, curs: Cursor[DictRow], event: Any, assignments: str, **params: Any) -> None:
        statement = self.composed(
            assignments,
            lambda: sql.SQL(
                "UPDATE {} SET {}, last_active_at = %(at)s, updated_at = %(at)s WHERE name = %(agent)s"
            ).format(self.table("agents"), sql.SQL(assignments)),
        )
        curs.execute(
            statement,
            {**params, "agent": event.agent, "at": event.timestamp},
        )

    @handles(Item.StageClaimed)
    def stage_claimed(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._activity(curs, event, "claims = claims + 1")

    @handles(LeaseReported)
    def stage_finished(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        counter = "completions" if isinstance(event, Item.StageCompleted) else "failures"
        self._activity(curs, event, f"{counter} = {counter} + 1, {ADD_SPEND}", **spend_of(event))

    @handles(Item.LeaseExpired)
    def lease_expired(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        curs.execute(
            sql.SQL("UPDATE {} SET expired = expired + 1, updated_at = %s WHERE name = %s").format(
                self.table("agents")
            ),
            (event.timestamp, event.agent),
        )


class AgentsFold(Fold):
    view = AgentsView
    jsonb = frozenset({"stages"})

    def __init__(self) -> None:
        super().__init__()
        self._names: dict[Any, str] = {}

    def agent_registered(self, event: Any, position: int) -> None:
        if event.originator_id in self._names:
            raise FoldConflict(f"agent {event.originator_id} registered twice")
        self.insert(
            "agents",
            event.name,
            {
                "name": event.name,
                "agent_id": event.originator_id,
                "role": event.role,
                "stages": event.stages,
                "disabled": False,
                "claims": 0,
                "completions": 0,
                "failures": 0,
                "expired": 0,
                "cost_usd": Decimal(0),
                "tokens_in": 0,
                "tokens_out": 0,
                "last_active_at": None,
                "created_by": event.actor,
                "created_at": event.timestamp,
                "updated_at": event.timestamp,
            },
        )
        self._names[event.originator_id] = event.name

    def _identity(self, event: Any, **values: Any) -> None:
        row = self.tables["agents"].get(self._names.get(event.originator_id))
        if row is not None:
            row.update(values, updated_at=event.timestamp)

    def scope_changed(self, event: Any, position: int) -> None:
        self._identity(event, stages=event.stages)

    def agent_disabled(self, event: Any, position: int) -> None:
        self._identity(event, disabled=True)

    def _activity(self, event: Any, counter: str) -> Any:
        row = self.tables["agents"].get(event.agent)
        if row is not None:
            row[counter] += 1
            row["last_active_at"] = row["updated_at"] = event.timestamp
        return row

    def stage_claimed(self, event: Any, position: int) -> None:
        self._activity(event, "claims")

    def stage_finished(self, event: Any, position: int) -> None:
        counter = "completions" if isinstance(event, Item.StageCompleted) else "failures"
        row = self._activity(event, counter)
        if row is not None:
            add_spend(row, event)

    def lease_expired(self, event: Any, position: int) -> None:
        row = self.tables["agents"].get(event.agent)
        if row is not None:
            row["expired"] += 1
            row["updated_at"] = event.timestamp
