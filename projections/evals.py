"""evals: each eval run and, per case, where its item stands — its status, the outputs of its
stages, what it cost. Whether a case passed follows from these rows and its checks (pure
functions of `domain.evals`), so nothing here waits on or blocks an item's hand-off."""

from __future__ import annotations

import json
from collections.abc import Sequence
from decimal import Decimal
from typing import Any
from uuid import UUID

from psycopg import Cursor, sql
from psycopg.rows import DictRow
from psycopg.types.json import Jsonb

from domain.eval_run import EvalRun
from domain.item import Item, ItemStopped, LeaseReported
from projections.base import Fold, FoldConflict, Row, View, add_spend, handles, spend_of

# A stage made ready again by hand (a retry of a parked item, a resume, a rewind) sets its case
# running again; the ready events of the ordinary flow change nothing here.
FLOW_REASONS = {"created", "advanced", "retry"}


def _json(value: Any) -> Jsonb:
    return Jsonb(value, dumps=lambda v: json.dumps(v, default=str))


class EvalsView(View):
    name = "evals"
    tables = {"eval_runs": ("run_id",), "eval_cases": ("item_id",)}

    def table_statements(self) -> Sequence[sql.Composed]:
        return [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (run_id uuid PRIMARY KEY, pipeline text NOT NULL, "
                "version int NOT NULL, topic text NOT NULL, cases int NOT NULL, "
                "started_by text NOT NULL, started_at timestamptz NOT NULL, "
                "position bigint NOT NULL)"
            ).format(self.table("eval_runs")),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (pipeline, version, position)").format(
                sql.Identifier("eval_runs_pipeline_idx"), self.table("eval_runs")
            ),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (item_id uuid PRIMARY KEY, run_id uuid NOT NULL, "
                "ordinal int NOT NULL, name text NOT NULL, checks jsonb NOT NULL, "
                "status text NOT NULL, detail text NOT NULL, outputs jsonb NOT NULL, "
                "cost_usd numeric NOT NULL, tokens_in bigint NOT NULL, "
                "tokens_out bigint NOT NULL, updated_at timestamptz NOT NULL)"
            ).format(self.table("eval_cases")),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (run_id, ordinal)").format(
                sql.Identifier("eval_cases_run_idx"), self.table("eval_cases")
            ),
        ]

    @handles(EvalRun.EvalRunStarted)
    def run_started(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        curs.execute(
            sql.SQL(
                "INSERT INTO {} (run_id, pipeline, version, topic, cases, started_by, started_at, "
                "position) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            ).format(self.table("eval_runs")),
            (
                event.originator_id,
                event.pipeline,
                event.pipeline_version,
                event.topic,
                len(event.cases),
                event.actor,
                event.timestamp,
                position,
            ),
        )
        for ordinal, case in enumerate(event.cases):
            curs.execute(
                sql.SQL(
                    "INSERT INTO {} (item_id, run_id, ordinal, name, checks, status, detail, "
                    "outputs, cost_usd, tokens_in, tokens_out, updated_at) "
                    "VALUES (%s, %s, %s, %s, %s, 'ready', '', '{{}}', 0, 0, 0, %s)"
                ).format(self.table("eval_cases")),
                (
                    case["item_id"],
                    event.originator_id,
                    ordinal,
                    case["name"],
                    _json(case["checks"]),
                    event.timestamp,
                ),
            )

    def _update(self, curs: Cursor[DictRow], event: Any, assignments: str, **params: Any) -> None:
        """Change an eval item's case; for any other item this matches no row."""
        statement = self.composed(
            assignments,
            lambda: sql.SQL(
                "UPDATE {} SET {}, updated_at = %(at)s WHERE item_id = %(item_id)s"
            ).format(self.table("eval_cases"), sql.SQL(assignments)),
        )
        curs.execute(statement, {**params, "at": event.timestamp, "item_id": event.originator_id})

    @handles(LeaseReported)
    def reported(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        spend = (
            "cost_usd = cost_usd + %(cost)s, tokens_in = tokens_in + %(tokens_in)s, "
            "tokens_out = tokens_out + %(tokens_out)s"
        )
        if isinstance(event, Item.StageCompleted):
            self._update(
                curs,
                event,
                f"{spend}, status = 'advancing', "
                "outputs = jsonb_set(outputs, ARRAY[%(stage)s], %(output)s)",
                stage=event.stage,
                output=_json(event.output),
                **spend_of(event),
            )
        else:
            self._update(curs, event, f"{spend}, status = 'advancing'", **spend_of(event))

    @handles(ItemStopped)
    def stopped(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        detail = getattr(event, "detail", "") or ""
        if isinstance(event, Item.ItemParked):
            detail = f"parked at {event.stage} ({event.reason}): {detail}"
        self._update(
            curs,
            event,
            "status = %(status)s, detail = %(detail)s",
            status=event.status,
            detail=detail,
        )

    @handles(Item.ItemResumed)
    def resumed(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        self._update(curs, event, "status = 'ready', detail = ''")

    @handles(Item.StageReady)
    def ready(self, event: Any, position: int, curs: Cursor[DictRow]) -> None:
        if event.reason not in FLOW_REASONS:
            self._update(curs, event, "status = 'ready', detail = ''")


class EvalsFold(Fold):
    view = EvalsView
    jsonb = frozenset({"checks", "outputs"})

    def to_jsonb(self, value: Any) -> Jsonb:
        return _json(value)

    def run_started(self, event: Any, position: int) -> None:
        self.insert(
            "eval_runs",
            event.originator_id.int,
            {
                "run_id": event.originator_id,
                "pipeline": event.pipeline,
                "version": event.pipeline_version,
                "topic": event.topic,
                "cases": len(event.cases),
                "started_by": event.actor,
                "started_at": event.timestamp,
                "position": position,
            },
        )
        for ordinal, case in enumerate(event.cases):
            # The handler passes the id as text, for PostgreSQL to read as a uuid.
            item_id = UUID(case["item_id"])
            self.insert(
                "eval_cases",
                item_id.int,
                {
                    "item_id": item_id,
                    "run_id": event.originator_id,
                    "ordinal": ordinal,
                    "name": case["name"],
                    "checks": case["checks"],
                    "status": "ready",
                    "detail": "",
                    "outputs": {},
                    "cost_usd": Decimal(0),
                    "tokens_in": 0,
                    "tokens_out": 0,
                    "updated_at": event.timestamp,
                },
            )

    def _update(self, event: Any, **values: Any) -> Row | None:
        """Change an eval item's case; for any other item there is no row."""
        return self.update(
            "eval_cases", event.originator_id.int, **values, updated_at=event.timestamp
        )

    def reported(self, event: Any, position: int) -> None:
        row = self._update(event, status="advancing")
        if row is None:
            return
        add_spend(row, event)
        if isinstance(event, Item.StageCompleted):
            if event.stage is None:  # jsonb_set refuses a null path element
                raise FoldConflict("eval_cases: an output of no stage")
            row["outputs"][event.stage] = event.output

    def stopped(self, event: Any, position: int) -> None:
        detail = getattr(event, "detail", "") or ""
        if isinstance(event, Item.ItemParked):
            detail = f"parked at {event.stage} ({event.reason}): {detail}"
        self._update(event, status=event.status, detail=detail)

    def resumed(self, event: Any, position: int) -> None:
        self._update(event, status="ready", detail="")

    def ready(self, event: Any, position: int) -> None:
        if event.reason not in FLOW_REASONS:
            self._update(event, status="ready", detail="")
