"""agents: each identity, its scope, and what it has done."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import Cursor, sql
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from domain.agent import Agent
from domain.item import Item, LeaseReported
from projections.base import ADD_SPEND, View, handles, spend_of


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
