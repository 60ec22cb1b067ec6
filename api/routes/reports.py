"""A pipeline's report: its pilot's exit criteria measured from the report projection."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.deps import AnyPrincipal, ContainerDep
from api.evals import latest_finished
from api.openapi import problems
from api.schemas import Name
from domain.pipeline import EXIT_CRITERIA

router = APIRouter(prefix="/v1/pipelines", tags=["pipelines"])


class Percentiles(BaseModel):
    p50_seconds: float | None
    p95_seconds: float | None


class StageTimes(BaseModel):
    visits: int
    wait_p50_seconds: float | None
    wait_p95_seconds: float | None
    work_p50_seconds: float | None
    work_p95_seconds: float | None


class Criterion(BaseModel):
    name: str
    target: float
    actual: float | None
    met: bool | None


class ReportOut(BaseModel):
    pipeline: str
    days: int
    items: int
    items_per_day: float
    done: int
    parked: int
    halted: int
    cancelled: int
    success_rate: float | None
    cost_usd: float
    cost_per_item_usd: float | None
    end_to_end: Percentiles
    stages: dict[str, StageTimes]
    incidents: int
    incidents_by_kind: dict[str, int]
    quality_pass_rate: float | None
    criteria: list[Criterion]


def _seconds(value: Any) -> float | None:
    return None if value is None else round(float(value), 3)


def measure(
    pipeline: str, days: int, row: dict[str, Any], quality_pass_rate: float | None = None
) -> dict[str, Any]:
    """The report's figures from the projection's totals (pure: no I/O)."""
    items, done = int(row["items"]), int(row["done"])
    ended = done + int(row["parked"]) + int(row["halted"]) + int(row["cancelled"])
    cost = float(row["cost_usd"])
    incidents = {
        "parked": int(row["parkings"]),
        "halted": int(row["halts"]),
        "lease_expired": int(row["expiries"]),
    }
    return {
        "pipeline": pipeline,
        "days": days,
        "items": items,
        "items_per_day": round(items / days, 3),
        "done": done,
        "parked": int(row["parked"]),
        "halted": int(row["halted"]),
        "cancelled": int(row["cancelled"]),
        "success_rate": round(done / ended, 4) if ended else None,
        "cost_usd": round(cost, 6),
        "cost_per_item_usd": round(cost / items, 6) if items else None,
        "end_to_end": {"p50_seconds": _seconds(row["p50"]), "p95_seconds": _seconds(row["p95"])},
        "stages": {
            stage["stage"]: {
                "visits": stage["visits"],
                "wait_p50_seconds": _seconds(stage["wait_p50"]),
                "wait_p95_seconds": _seconds(stage["wait_p95"]),
                "work_p50_seconds": _seconds(stage["work_p50"]),
                "work_p95_seconds": _seconds(stage["work_p95"]),
            }
            for stage in row["stages"]
        },
        "incidents": sum(incidents.values()),
        "incidents_by_kind": incidents,
        # The quality signal that needs no human: the active version's latest finished eval run.
        "quality_pass_rate": quality_pass_rate,
    }


def judge(report: dict[str, Any], targets: dict[str, float]) -> list[dict[str, Any]]:
    """Each declared criterion against its measure: at least the target (rates, volume) or at
    most it (cost, time); `met` is null while there is nothing to measure."""
    actuals = {
        "items_per_day": report["items_per_day"],
        "success_rate": report["success_rate"],
        "cost_per_item_usd": report["cost_per_item_usd"],
        "p95_seconds": report["end_to_end"]["p95_seconds"],
        "quality_pass_rate": report["quality_pass_rate"],
    }
    criteria = []
    for name, target in targets.items():
        actual = actuals[name]
        met = (
            None
            if actual is None
            else (actual >= target if EXIT_CRITERIA[name] else actual <= target)
        )
        criteria.append({"name": name, "target": target, "actual": actual, "met": met})
    return criteria


@router.get("/{name}/report", response_model=ReportOut, responses=problems(404))
def pipeline_report(
    name: Name,
    principal: AnyPrincipal,
    container: ContainerDep,
    days: Annotated[int, Query(ge=1, le=366)] = 7,
) -> dict[str, Any]:
    """The last `days` days of production items (eval items left out): volume, outcomes, cost
    per item, end-to-end and per-stage waiting vs working times, incidents, and each of the
    spec's `exit_criteria` met or not."""
    pipeline, active = container.app.active_version(name)
    since = container.app.clock() - timedelta(days=days)
    quality = latest_finished(container.queries, name, active)
    report = measure(
        name,
        days,
        container.queries.pipeline_report(name, since),
        None if quality is None else quality.pass_rate,
    )
    return {**report, "criteria": judge(report, dict(pipeline.parsed.exit_criteria))}
