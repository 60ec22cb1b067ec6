"""Client and AsyncClient against a real `stateowner serve`: the whole v1 surface through typed
methods, and each refusal raised as the exception its code names."""

from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

import stateowner_client as so
from stateowner_client import AsyncClient, Client
from tests.conftest import ADMIN_TOKEN
from tests.live import LiveService
from tests.sdk.conftest import unique, wait_for, wait_for_status

pytestmark = [pytest.mark.sdk, pytest.mark.api]


@dataclass(frozen=True)
class Setup:
    """A pipeline with stages of its own (claims name a stage, whatever the pipeline), and an
    agent for those stages, so tests on one server stay apart."""

    pipeline: str
    draft: str
    publish: str
    agent: str
    token: str


def setup(admin: Client, **spec: Any) -> Setup:
    pipeline, draft, publish = unique("p"), unique("draft"), unique("publish")
    admin.put_pipeline(pipeline, {"stages": [{"name": draft}, {"name": publish}], **spec})
    agent = admin.create_agent(unique("bot"), "agent", [draft, publish])
    assert agent.token is not None
    return Setup(pipeline, draft, publish, agent.name, agent.token)


def test_an_item_goes_through_its_pipeline_by_the_client_alone(
    live: LiveService, admin: Client
) -> None:
    """Create, claim, heartbeat, complete each stage; then read it back every way the API has."""
    it = setup(admin)
    topic = unique("t")
    with Client(live.base, it.token) as agent:
        item = agent.create_item(it.pipeline, topic, "First", {"brief": "b"}, idempotency_key="k")
        again = agent.create_item(it.pipeline, topic, "First", {"brief": "b"}, idempotency_key="k")
        assert again.id == item.id
        for stage in (it.draft, it.publish):
            claim = agent.claim(stage, wait_seconds=10)
            assert claim is not None
            assert (claim.item.id, claim.lease.stage) == (item.id, stage)
            assert claim.input == {"brief": "b"}
            renewed = agent.heartbeat(claim.lease.id)
            assert renewed.expires_at >= claim.lease.expires_at
            report = agent.complete(
                claim.lease.id,
                output={"by": stage},
                cost_usd=0.01,
                tokens_in=10,
                tokens_out=5,
                duration_ms=12,
                trace={"model": "m"},
            )
            assert report.item_id == item.id
        assert claim.outputs == {it.draft: {"by": it.draft}}
        assert wait_for_status(agent, item.id, "done") == "done"
        types = [event.type for event in agent.item_events(item.id)]
        runs = list(agent.item_runs(item.id))
    assert types[0] == "ItemCreated"
    assert types[-1] == "ItemCompleted"
    assert [run.stage for run in runs] == [it.draft, it.publish]
    assert runs[0].trace == {"model": "m"}
    assert (runs[0].tokens, runs[0].duration_ms) == (so.Tokens(10, 5), 12)
    assert admin.item_at(item.id, 1).status == "ready"
    assert admin.get_item(item.id).cost_usd == pytest.approx(0.02)
    assert [e.item_id for e in admin.audit(item=item.id, page_size=2)] == [item.id] * len(types)
    assert admin.get_topic(topic).items["total"] == 1
    assert topic in {t.name for t in admin.list_topics()}
    assert any(a.name == it.agent and a.completions == 2 for a in admin.list_agents())
    page = admin.events(after=0, limit=3)
    assert len(page.events) == 3
    assert page.last_position == page.events[-1].position
    assert {p.name for p in admin.projections()} >= {"item_status", "topics"}


def test_list_items_reads_every_page(admin: Client) -> None:
    """Five items read two at a time come back all five, oldest first."""
    it = setup(admin)
    topic = unique("t")
    ids = [admin.create_item(it.pipeline, topic, f"#{n}").id for n in range(5)]
    position = admin.get_item(ids[-1]).position
    listed = [i.id for i in admin.list_items(topic=topic, page_size=2, min_position=position)]
    assert listed == ids


def test_pipelines_are_read_and_written_as_json_or_toml(admin: Client) -> None:
    """A TOML spec makes a new version; an earlier version can still be read."""
    name = unique("p")
    first = admin.put_pipeline(name, {"stages": [{"name": "a"}, {"name": "b"}]})
    second = admin.put_pipeline(name, '[[stages]]\nname = "only"\n')
    assert second.version == first.version + 1
    assert [s["name"] for s in admin.get_pipeline(name).spec["stages"]] == ["only"]
    assert len(admin.get_pipeline(name, version=first.version).spec["stages"]) == 2


def test_refusals_raise_the_exception_their_code_names(live: LiveService, admin: Client) -> None:
    """Not found, unauthorized, forbidden, invalid, taken, mismatched, wrong state, lease lost."""
    it = setup(admin)
    with pytest.raises(so.NotFound):
        admin.get_item(str(uuid.uuid4()))
    with Client(live.base, "not-a-token") as stranger, pytest.raises(so.Unauthorized):
        stranger.list_budgets()
    with pytest.raises(so.ValidationError) as invalid:
        admin.put_pipeline(unique("p"), {"stages": []})
    assert invalid.value.status == 422
    with pytest.raises(so.AlreadyExists):
        admin.create_agent(it.agent, "agent", [it.draft])
    admin.create_item(it.pipeline, "t", "A", idempotency_key=it.pipeline)
    with pytest.raises(so.IdempotencyMismatch):
        admin.create_item(it.pipeline, "t", "B", idempotency_key=it.pipeline)
    with Client(live.base, it.token) as agent:
        with pytest.raises(so.Forbidden):
            agent.claim(unique("elsewhere"))
        claim = agent.claim(it.draft, wait_seconds=10)
        assert claim is not None
        with pytest.raises(so.InvalidState):
            admin.retry(claim.item.id)
        agent.complete(claim.lease.id, output=1)
        with pytest.raises(so.LeaseLost) as lost:
            agent.heartbeat(claim.lease.id)
    assert (lost.value.status, lost.value.code) == (409, "lease_lost")


def test_an_open_breaker_refuses_claims_until_it_is_reset(live: LiveService, admin: Client) -> None:
    """Spend over an agent's halt level makes its claims 423 naming the scope; a reset ends it."""
    it = setup(admin)
    scope = f"agent:{it.agent}"
    budget = admin.put_budget(scope, alert_usd=0.01, halt_usd=0.02)
    assert (budget.scope, budget.state) == (scope, "ok")
    with Client(live.base, it.token) as agent:
        agent.create_item(it.pipeline, unique("t"), "costly")
        claim = agent.claim(it.draft, wait_seconds=10)
        assert claim is not None
        agent.complete(claim.lease.id, output=1, cost_usd=0.05)
        wait_for("the breaker to open", lambda: _state(admin, scope) == "halted")
        with pytest.raises(so.BudgetHalted) as halted:
            agent.claim(it.publish)
        assert (halted.value.scope, halted.value.spent_usd) == (scope, pytest.approx(0.05))
        assert halted.value.halt_usd == pytest.approx(0.02)
        assert admin.reset_budget(scope).state != "halted"
        assert agent.claim(it.publish, wait_seconds=10) is not None


def _state(admin: Client, scope: str) -> str:
    return next(b.state for b in admin.list_budgets() if b.scope == scope)


def test_operators_retry_cancel_and_resume(live: LiveService, admin: Client) -> None:
    """A parked item is retried, a halted one resumed, any open one cancelled."""
    it = setup(admin, item_budget_usd=0.01)
    with Client(live.base, it.token) as agent:
        item = agent.create_item(it.pipeline, unique("t"), "parks")
        claim = agent.claim(it.draft, wait_seconds=10)
        assert claim is not None
        agent.fail(claim.lease.id, error="bad input", retryable=False)
        wait_for_status(admin, item.id, "parked")
        assert admin.retry(item.id).status == "ready"
        claim = agent.claim(it.draft, wait_seconds=10)
        assert claim is not None
        agent.complete(claim.lease.id, output=1, cost_usd=0.05)
        wait_for_status(admin, item.id, "halted")
        assert admin.resume(item.id).stage == it.publish
        assert admin.cancel(item.id).status == "cancelled"


def test_admins_manage_agents(live: LiveService, admin: Client) -> None:
    """Stages change, a rotated token replaces the old one, a disabled agent is refused."""
    it = setup(admin)
    assert admin.set_agent_stages(it.agent, [it.draft]).stages == [it.draft]
    rotated = admin.rotate_token(it.agent)
    assert rotated.token is not None
    assert rotated.token != it.token
    with Client(live.base, it.token) as old, pytest.raises(so.Unauthorized):
        old.claim(it.draft)
    assert admin.disable_agent(it.agent).disabled
    with Client(live.base, rotated.token) as new, pytest.raises(so.Unauthorized):
        new.claim(it.draft)


def test_health_readiness_and_metrics_need_no_token(live: LiveService) -> None:
    """The probes answer a client without a token."""
    with Client(live.base) as anonymous:
        assert anonymous.healthz().status == "ok"
        assert anonymous.readyz().ready
        assert "stateowner_" in anonymous.metrics()


def test_the_async_client_does_the_same_work(live: LiveService, admin: Client) -> None:
    """AsyncClient creates, claims, completes and pages the history, awaited."""
    it = setup(admin)

    async def work() -> list[str]:
        async with (
            AsyncClient(live.base, it.token) as agent,
            AsyncClient(live.base, ADMIN_TOKEN) as operator,
        ):
            item = await agent.create_item(it.pipeline, unique("t"), "async")
            for stage in (it.draft, it.publish):
                claim = await agent.claim(stage, wait_seconds=10)
                assert claim is not None
                await agent.complete(claim.lease.id, output={"ok": True})
            while (await operator.get_item(item.id)).status != "done":
                await asyncio.sleep(0.05)
            return [event.type async for event in agent.item_events(item.id, page_size=2)]

    types = asyncio.run(work())
    assert types[0] == "ItemCreated"
    assert types[-1] == "ItemCompleted"


def test_the_live_feed_streams_new_events(live: LiveService, admin: Client) -> None:
    """stream_events() yields events appended after it started, from the service's /v1/stream."""
    paths = httpx.get(f"{live.base}/openapi.json").json()["paths"]
    if "/v1/stream" not in paths:
        print("skipped: the service has no GET /v1/stream yet (it is landing on main)")
        pytest.skip("the service has no /v1/stream yet")
    it = setup(admin)
    after = admin.projections()[0].head
    seen: list[so.Event] = []
    found = threading.Event()
    topic = unique("t")

    def follow() -> None:
        with Client(live.base, ADMIN_TOKEN) as reader:
            for event in reader.stream_events(after=after):
                seen.append(event)
                if event.type == "ItemCreated" and event.data.get("topic") == topic:
                    found.set()
                    return

    threading.Thread(target=follow, daemon=True).start()
    admin.create_item(it.pipeline, topic, "streamed")
    assert found.wait(30)
    assert all(event.position > after for event in seen)


def test_an_eval_run_and_an_activation_through_the_client(live: LiveService, admin: Client) -> None:
    """Start an eval run, let an agent work its case, read the results, activate through the
    gate; a repeat under the same key is the same run."""
    it = setup(admin, eval_gate={"tolerance": 0.0})
    cases = [{"name": "says hi", "checks": [{"kind": "contains", "value": "hi"}]}]
    started = admin.start_eval(it.pipeline, 1, cases, idempotency_key="run-1")
    assert admin.start_eval(it.pipeline, 1, cases, idempotency_key="run-1").id == started.id
    with Client(live.base, it.token) as agent:
        for stage in (it.draft, it.publish):
            claim = agent.claim(stage, wait_seconds=10)
            assert claim is not None
            assert claim.eval
            assert claim.item.eval
            agent.complete(claim.lease.id, output={"text": "hi there"})
    run = wait_for(
        "the eval run to finish",
        lambda: (
            (r := admin.get_eval(it.pipeline, started.id, min_position=started.position)).status
            == "finished"
            and r
        ),
    )
    assert (run.passed, run.pass_rate) == (1, 1.0)
    assert run.cases is not None
    assert run.cases[0].checks[0].passed
    assert [r.id for r in admin.list_evals(it.pipeline, version=1)] == [started.id]
    assert admin.put_pipeline(it.pipeline, {"stages": [{"name": it.draft}]}).active_version == 1
    with pytest.raises(so.EvalGateRefused):
        admin.activate_version(it.pipeline, 2)
    forced = admin.activate_version(it.pipeline, 2, force=True)
    assert (forced.active_version, forced.forced) == (2, True)
    assert admin.get_pipeline(it.pipeline).active_version == 2
