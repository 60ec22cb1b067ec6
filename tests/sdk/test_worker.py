"""The Worker against a real `stateowner serve`: leases kept by heartbeats, failures reported as
the handler meant them, traces recorded, breakers and lost connections waited out, and leases
handed back, never left to expire, when the process is told to stop."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import stateowner_client as so
from stateowner_client import Client, Job, NonRetryable, Result, Worker
from tests.live import LiveService
from tests.sdk.conftest import unique, wait_for, wait_for_status

pytestmark = [pytest.mark.sdk, pytest.mark.api]


@dataclass(frozen=True)
class Stage:
    """A one-stage pipeline whose stage no other test claims at, and an agent for it."""

    pipeline: str
    name: str
    agent: str
    token: str


def stage(admin: Client, **options: Any) -> Stage:
    pipeline, name = unique("p"), unique("s")
    admin.put_pipeline(pipeline, {"stages": [{"name": name, **options}]})
    agent = admin.create_agent(unique("bot"), "agent", [name])
    assert agent.token is not None
    return Stage(pipeline, name, agent.name, agent.token)


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """The worker's run() on a thread for the block; stopped and joined after it."""
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(60)
    assert not thread.is_alive(), "the worker did not stop"


def quick(live: LiveService, token: str, **options: Any) -> Worker:
    """A worker whose claims wait 1 s, so stopping it (which waits for the claim in flight, since
    a claim cannot be called off and may yet bring a lease) takes a second, not five."""
    return Worker(live.base, token=token, claim_wait_seconds=1, **options)


def types(admin: Client, item_id: str) -> list[str]:
    return [event.type for event in admin.item_events(item_id)]


def test_a_job_longer_than_its_lease_keeps_it_and_completes(
    live: LiveService, admin: Client
) -> None:
    """Heartbeats at a third of a 3 s lease carry a 6.5 s job to completion with no expiry."""
    s = stage(admin, lease_seconds=3)
    worker = quick(live, s.token)

    @worker.stage(s.name)
    def slow(job: Job) -> Result:
        job.cancelled.wait(6.5)  # a job that would notice losing its lease; it must not
        return Result(output={"lost": job.cancelled.is_set()})

    item = admin.create_item(s.pipeline, "t", "slow")
    with running(worker):
        wait_for_status(admin, item.id, "done")
    history = types(admin, item.id)
    assert "LeaseExpired" not in history
    assert history.count("LeaseRenewed") >= 2
    assert history.count("StageCompleted") == 1
    assert next(admin.item_runs(item.id)).raw["result"] == "completed"
    assert worker.stats.lost == 0


def test_an_exception_fails_the_lease_as_retryable_and_the_retry_completes(
    live: LiveService, admin: Client
) -> None:
    """The first attempt raises; its lease is failed as retryable with the error; the second ends it."""
    s = stage(admin, retry_backoff_seconds=0.1)
    worker = quick(live, s.token)

    @worker.stage(s.name)
    def flaky(job: Job) -> Result:
        if job.attempt == 1:
            raise RuntimeError("the tool timed out")
        return Result(output={"attempt": job.attempt})

    item = admin.create_item(s.pipeline, "t", "flaky")
    with running(worker):
        wait_for_status(admin, item.id, "done")
    events = list(admin.item_events(item.id))
    failed = next(e for e in events if e.type == "StageFailed")
    assert failed.data["retryable"] is True
    assert failed.data["error"] == "RuntimeError: the tool timed out"
    ready = [e.data["reason"] for e in events if e.type == "StageReady"]
    assert ready == ["created", "retry"]
    first, second = admin.item_runs(item.id)
    assert first.trace["error"]["type"] == "RuntimeError"
    assert "the tool timed out" in first.trace["error"]["traceback"]
    assert (second.result, second.attempt) == ("completed", 2)
    assert (worker.stats.failed, worker.stats.completed) == (1, 1)


def test_non_retryable_parks_the_item_with_what_it_spent(live: LiveService, admin: Client) -> None:
    """NonRetryable fails the lease as not retryable: the item parks, its cost recorded."""
    s = stage(admin)
    worker = quick(live, s.token)

    @worker.stage(s.name)
    def refuse(job: Job) -> Result:
        raise NonRetryable("the input is not an article", cost_usd=0.01, tokens_in=50)

    item = admin.create_item(s.pipeline, "t", "refused")
    with running(worker):
        wait_for_status(admin, item.id, "parked")
    failed = next(e for e in admin.item_events(item.id) if e.type == "StageFailed")
    assert failed.data["retryable"] is False
    assert failed.data["error"] == "NonRetryable: the input is not an article"
    run = next(admin.item_runs(item.id))
    assert (run.cost_usd, run.tokens.in_) == (pytest.approx(0.01), 50)


def test_tool_calls_and_the_result_reach_the_runs_trace(live: LiveService, admin: Client) -> None:
    """job.trace.tool records name, input, output and duration; the Result's cost, tokens and
    trace entries go with them."""
    s = stage(admin)
    worker = quick(live, s.token)

    @worker.stage(s.name)
    def draft(job: Job) -> Result:
        with job.trace.tool("web.search", input={"q": job.item.title}) as call:
            call.output = {"hits": 3}
        with pytest.raises(KeyError), job.trace.tool("cache.get", input={"k": 1}):
            raise KeyError("k")
        job.trace.set(model="stand-in")
        return Result(output={"text": "…"}, cost_usd=0.02, tokens_in=900, tokens_out=300)

    item = admin.create_item(s.pipeline, "t", "traced")
    with running(worker):
        wait_for_status(admin, item.id, "done")
    run = next(admin.item_runs(item.id))
    search, cache = run.trace["tool_calls"]
    assert (search["name"], search["input"], search["output"]) == (
        "web.search",
        {"q": "traced"},
        {"hits": 3},
    )
    assert search["duration_ms"] >= 0
    assert cache["error"] == "KeyError: 'k'"
    assert run.trace["model"] == "stand-in"
    assert (run.cost_usd, run.tokens) == (pytest.approx(0.02), so.Tokens(900, 300))
    assert run.duration_ms is not None


def test_a_trace_over_the_limit_is_sent_again_without_inputs_and_outputs(
    live: LiveService, admin: Client
) -> None:
    """The service refuses a 300 kB trace (413); the completion goes again with a smaller one."""
    s = stage(admin)
    worker = quick(live, s.token)

    @worker.stage(s.name)
    def verbose(job: Job) -> Result:
        with job.trace.tool("page.fetch", input={"url": "u"}) as call:
            call.output = "x" * 300_000
        return Result(output="short")

    item = admin.create_item(s.pipeline, "t", "big trace")
    with running(worker):
        wait_for_status(admin, item.id, "done")
    run = next(admin.item_runs(item.id))
    assert "truncated" in run.trace
    assert run.trace["tool_calls"][0]["name"] == "page.fetch"
    assert "output" not in run.trace["tool_calls"][0]
    assert run.result == "completed"


def test_an_outcome_the_stage_does_not_know_parks_the_item(
    live: LiveService, admin: Client
) -> None:
    """The service refuses the completion (422); the Worker fails the lease as not retryable."""
    s = stage(admin)
    worker = quick(live, s.token)

    @worker.stage(s.name)
    def confused(job: Job) -> Result:
        return Result(output=1, outcome="no-such-outcome")

    item = admin.create_item(s.pipeline, "t", "bad outcome")
    with running(worker):
        wait_for_status(admin, item.id, "parked")
    failed = next(e for e in admin.item_events(item.id) if e.type == "StageFailed")
    assert failed.data["retryable"] is False
    assert "the completion was refused" in failed.data["error"]
    assert "no-such-outcome" in failed.data["error"]


def test_jobs_run_concurrency_at_a_time_and_async_handlers_too(
    live: LiveService, admin: Client
) -> None:
    """With concurrency 3, three jobs are inside their handlers at once; an async handler works."""
    sync_stage, async_stage = stage(admin), stage(admin)
    together = threading.Barrier(3, timeout=30)
    worker = quick(live, sync_stage.token, concurrency=3)

    @worker.stage(sync_stage.name)
    def meet(job: Job) -> Result:
        together.wait()  # passes only once three jobs are running at the same time
        return Result(output="met")

    async_worker = quick(live, async_stage.token)

    @async_worker.stage(async_stage.name)
    async def awaited(job: Job) -> Result:
        await asyncio.sleep(0.01)
        return Result(output={"async": True})

    ids = [admin.create_item(sync_stage.pipeline, "t", f"#{n}").id for n in range(3)]
    async_item = admin.create_item(async_stage.pipeline, "t", "async")
    with running(worker), running(async_worker):
        for item_id in [*ids, async_item.id]:
            wait_for_status(admin, item_id, "done")
    assert not together.broken
    assert next(admin.item_runs(async_item.id)).result == "completed"


def test_an_open_breaker_is_waited_out_and_work_resumes_after_a_reset(
    live: LiveService, admin: Client
) -> None:
    """Claims meet 423 while the agent's budget is halted; the worker backs off, takes no lease,
    and carries on once an operator resets the breaker."""
    s = stage(admin)
    scope = f"agent:{s.agent}"
    admin.put_budget(scope, alert_usd=0.01, halt_usd=0.02)
    worker = quick(live, s.token, max_backoff_seconds=1)

    @worker.stage(s.name)
    def costly(job: Job) -> Result:
        return Result(output=1, cost_usd=0.05)

    first = admin.create_item(s.pipeline, "t", "opens the breaker")
    with running(worker):
        wait_for_status(admin, first.id, "done")
        wait_for("the breaker", lambda: _state(admin, scope) == "halted")
        held = admin.create_item(s.pipeline, "t", "waits")
        wait_for("refused claims", lambda: worker.stats.halted >= 2)
        assert admin.get_item(held.id).status == "ready"
        admin.reset_budget(scope)
        wait_for_status(admin, held.id, "done")
    assert worker.stats.completed == 2


def _state(admin: Client, scope: str) -> str:
    return next(b.state for b in admin.list_budgets() if b.scope == scope)


def test_a_lease_lost_while_working_drops_the_result_quietly(
    live: LiveService, admin: Client
) -> None:
    """An operator cancels the item mid-job: the heartbeat learns the lease is gone, the job sees
    job.cancelled, and its result is dropped without a report."""
    s = stage(admin, lease_seconds=3)
    worker = quick(live, s.token)
    started = threading.Event()

    @worker.stage(s.name)
    def patient(job: Job) -> Result:
        started.set()
        job.cancelled.wait(30)
        return Result(output="too late")

    item = admin.create_item(s.pipeline, "t", "cancelled")
    with running(worker):
        assert started.wait(30)
        admin.cancel(item.id)
        wait_for("the dropped result", lambda: worker.stats.lost == 1)
    history = types(admin, item.id)
    assert "StageCompleted" not in history
    assert history[-1] == "ItemCancelled"


class DropsFirstCompletion(httpx.BaseTransport):
    """Passes requests to the service, but loses the answer to the first completion, as a
    connection cut after the service applied it would."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.keys: list[str | None] = []
        self.bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        if request.url.path.endswith("/complete"):
            self.keys.append(request.headers.get("idempotency-key"))
            self.bodies.append(request.read())
            if len(self.keys) == 1:
                response.read()
                response.close()
                raise httpx.ReadError("connection reset after sending", request=request)
        return response

    def close(self) -> None:
        self.inner.close()


def test_a_report_whose_answer_was_lost_is_sent_again_and_applied_once(
    live: LiveService, admin: Client
) -> None:
    """The same report under the same Idempotency-Key goes again; the history has one completion."""
    s = stage(admin)
    transport = DropsFirstCompletion()
    worker = quick(live, s.token, transport=transport)

    @worker.stage(s.name)
    def once(job: Job) -> Result:
        return Result(output={"n": 1}, cost_usd=0.01)

    item = admin.create_item(s.pipeline, "t", "retried report")
    with running(worker):
        wait_for_status(admin, item.id, "done")
    assert len(transport.keys) == 2
    assert transport.keys[0] is not None
    assert transport.keys[0] == transport.keys[1]
    assert transport.bodies[0] == transport.bodies[1]
    assert types(admin, item.id).count("StageCompleted") == 1
    assert worker.stats.completed == 1


def test_a_refused_token_stops_the_worker_with_the_error(live: LiveService) -> None:
    """No amount of waiting fixes a 401: run() returns by raising Unauthorized."""
    worker = Worker(live.base, token="not-a-token")
    worker.stage("anything")(lambda job: Result())
    with pytest.raises(so.Unauthorized):
        worker.run()


AGENT_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from stateowner_client import Result, Worker

    base, token, stage, grace, seconds = sys.argv[1:6]
    worker = Worker(base, token=token, grace_seconds=float(grace), claim_wait_seconds=2)

    @worker.stage(stage)
    def work(job):
        print("working", flush=True)
        time.sleep(float(seconds))  # a handler that does not look at job.cancelled
        return Result(output={"slept": float(seconds)})

    worker.run()
    print("stopped", worker.stats, flush=True)
    """
)


def _agent_process(
    tmp_path: Path, live: LiveService, s: Stage, grace: float, seconds: float
) -> subprocess.Popen[str]:
    script = tmp_path / "agent.py"
    script.write_text(AGENT_SCRIPT)
    command = [sys.executable, str(script), live.base, s.token, s.name, str(grace), str(seconds)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _terminated(process: subprocess.Popen[str]) -> str:
    """SIGTERM once the job is running; the output once the process has exited by itself."""
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "working"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    return output


def test_sigterm_mid_job_hands_the_lease_back_at_once(
    tmp_path: Path, live: LiveService, admin: Client
) -> None:
    """A job that will not finish within the grace period has its lease failed as retryable
    before the process exits: the history shows StageFailed, then the retry, and no expiry."""
    s = stage(admin, lease_seconds=60, retry_backoff_seconds=0)
    item = admin.create_item(s.pipeline, "t", "interrupted")
    output = _terminated(_agent_process(tmp_path, live, s, grace=0.5, seconds=120))
    events = list(admin.item_events(item.id))
    ended = [e for e in events if e.type in ("StageCompleted", "StageFailed", "LeaseExpired")]
    assert [e.type for e in ended] == ["StageFailed"], output
    assert ended[0].data["retryable"] is True
    assert "stopped before the job finished" in ended[0].data["error"]
    wait_for_status(admin, item.id, "ready")
    assert "handed_back=1" in output


def test_sigterm_lets_a_job_within_the_grace_period_finish(
    tmp_path: Path, live: LiveService, admin: Client
) -> None:
    """A job that ends within the grace period completes; then the process exits."""
    s = stage(admin)
    item = admin.create_item(s.pipeline, "t", "finishes")
    output = _terminated(_agent_process(tmp_path, live, s, grace=30, seconds=1))
    assert types(admin, item.id).count("StageCompleted") == 1, output
    assert "completed=1" in output
