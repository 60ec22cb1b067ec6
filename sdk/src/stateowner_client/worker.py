"""`Worker`: an agent as a set of functions, one per stage. It claims, heartbeats, reports, backs
off and stops the way the service expects, so a handler only does the work.

How it polls several stages: a claim names one stage, and a claim that comes back with a lease
needs a free job slot to run it. So claims in flight never exceed the free slots, each in flight
is on a different stage, and there are at most `min(concurrency, stages)` polling threads. While
every stage has a claim in flight they long-poll (`claim_wait_seconds`); when there are more
stages than free slots, they take turns with short waits, so every stage is looked at within a
few seconds and an idle stage costs a share of one thread, not a thread of its own.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import Enum
from types import FrameType
from typing import Any, TypeVar

import httpx

from stateowner_client._backoff import Backoff
from stateowner_client._calls import CLAIM_TIMEOUT_MARGIN_SECONDS, Money
from stateowner_client.client import Client
from stateowner_client.errors import (
    RETRYABLE,
    BudgetHalted,
    IdempotencyMismatch,
    LeaseLost,
    PayloadTooLarge,
    ProblemError,
    StateownerError,
    ValidationError,
)
from stateowner_client.models import Claim, Item, Lease
from stateowner_client.trace import Trace

log = logging.getLogger("stateowner_client.worker")

# When more stages than free slots share the pollers, each claim waits this long, then turns.
ROTATE_WAIT_SECONDS = 1.0
# A lease shorter than this is heartbeaten at this interval anyway.
MIN_HEARTBEAT_SECONDS = 0.2
# Once stopping, a report or a hand-back still gets this long to get through to the service.
STOP_REPORT_SECONDS = 15.0
MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class Result:
    """What a handler returns: the stage's output, and what the work cost.

    `outcome` picks the next stage through the pipeline's `on` map (e.g. "revise"); `trace`
    entries are added to the run's trace beside the tool calls recorded with `job.trace`."""

    output: Any = None
    outcome: str | None = None
    cost_usd: Money = 0
    tokens_in: int = 0
    tokens_out: int = 0
    trace: Mapping[str, Any] | None = None
    model: str | None = None


class NonRetryable(Exception):
    """Raise it from a handler to fail the lease as not retryable: the item is parked for a
    person to look at, instead of being tried again."""

    def __init__(
        self, message: str, *, cost_usd: Money = 0, tokens_in: int = 0, tokens_out: int = 0
    ) -> None:
        super().__init__(message)
        self.cost_usd = cost_usd
        self.tokens_in = tokens_in
        self.tokens_out = tokens_out


@dataclass
class Job:
    """One claimed stage of one item, as a handler sees it."""

    item: Item
    lease: Lease
    input: dict[str, Any]
    outputs: dict[str, Any]
    trace: Trace = field(default_factory=Trace)
    # Set once the result can no longer be reported: the lease was lost or handed back.
    # A long handler may check it to give up early; the Worker ignores whatever it returns then.
    cancelled: threading.Event = field(default_factory=threading.Event)

    @property
    def stage(self) -> str:
        return self.lease.stage

    @property
    def attempt(self) -> int:
        return self.lease.attempt

    @property
    def eval(self) -> bool:
        """The item is a case of an eval run (a scorer stage may answer {"score": x})."""
        return self.item.eval


Handler = Callable[[Job], Result] | Callable[[Job], Awaitable[Result]]
H = TypeVar("H", bound=Handler)


@dataclass(frozen=True)
class WorkerStats:
    claimed: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0  # results abandoned because the lease was lost while working
    handed_back: int = 0  # leases failed as retryable because the worker was stopping
    halted: int = 0  # claims refused by an open budget breaker (423)
    unavailable: int = 0  # claims or reports that met 503, 429 or no connection at all


class _State(Enum):
    RUNNING = "running"
    REPORTING = "reporting"
    LOST = "lost"
    HANDED_BACK = "handed_back"


@dataclass
class _Running:
    job: Job
    interval: float
    next_beat: float
    started: float = field(default_factory=time.perf_counter)
    state: _State = _State.RUNNING


class Worker:
    """Runs handlers for stages, `concurrency` jobs at once, until `stop()` or SIGTERM/SIGINT.

    - claims long-poll across all registered stages (see the module's note on polling);
    - each lease is heartbeaten at a third of its length, so a job may outlast its lease;
    - a handler's exception fails the lease as retryable, `NonRetryable` as not retryable;
    - reports carry an `Idempotency-Key` and are retried with the same body after a network
      error or a restart (the service answers an identical repeat again, applying it once);
    - 423 (an open budget breaker), 429, 503 and lost connections are waited out with jittered
      exponential backoff;
    - on stop: no more claims, running jobs get `grace_seconds` to finish, and the leases of
      those that do not are failed as retryable at once, never left to expire.
    """

    def __init__(
        self,
        base_url: str,
        *,
        token: str,
        concurrency: int = 1,
        claim_wait_seconds: float = 5.0,
        grace_seconds: float = 10.0,
        max_backoff_seconds: float = 30.0,
        report_retry_seconds: float = 300.0,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.client = Client(base_url, token, timeout=timeout, transport=transport)
        self.concurrency = concurrency
        self.claim_wait_seconds = claim_wait_seconds
        self.grace_seconds = grace_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.report_retry_seconds = report_retry_seconds
        self._handlers: dict[str, Handler] = {}
        self._lock = threading.Lock()
        self._slots = threading.Semaphore(concurrency)
        self._running: dict[str, _Running] = {}
        self._claiming: set[str] = set()
        self._turn = 0
        self._held_off: dict[str, float] = {}  # stage -> monotonic time its breaker backoff ends
        self._halt_backoff: dict[str, Backoff] = {}
        self._stop = threading.Event()
        self._now = threading.Event()
        self._changed = threading.Event()
        self._beats_stop = threading.Event()
        self._stop_at: float | None = None
        self._fatal: StateownerError | None = None
        self._outage = False
        self._started = False
        self._pollers: list[threading.Thread] = []
        self._stats = WorkerStats()

    # -- the public contract -------------------------------------------------------------------

    def stage(self, name: str) -> Callable[[H], H]:
        """Register the handler of a stage: `@worker.stage("draft") def draft(job): ...`."""

        def register(handler: H) -> H:
            self._handlers[name] = handler
            return handler

        return register

    @property
    def stages(self) -> list[str]:
        return list(self._handlers)

    @property
    def stats(self) -> WorkerStats:
        with self._lock:
            return self._stats

    def run(self) -> None:
        """Work until stopped; in the main thread, SIGTERM and SIGINT stop it (a second signal
        hands running jobs back at once). Raises what made it stop if that was an error."""
        if not self._handlers:
            raise RuntimeError("no stage handlers: register one with @worker.stage(name)")
        if self._started:
            raise RuntimeError("a Worker runs once; make a new one")
        self._started = True
        restore = self._install_signals()
        beats = threading.Thread(target=self._heartbeats, name="stateowner-heartbeats", daemon=True)
        beats.start()
        self._pollers = [
            threading.Thread(target=self._poll, name=f"stateowner-claims-{n}", daemon=True)
            for n in range(min(self.concurrency, len(self._handlers)))
        ]
        for poller in self._pollers:
            poller.start()
        log.info("worker started: stages %s, concurrency %d", self.stages, self.concurrency)
        try:
            while not self._stop.wait(0.25):
                pass
            self._wind_down()
        finally:
            self._beats_stop.set()
            beats.join(5)
            restore()
            self.client.close()
        log.info("worker stopped: %s", self.stats)
        if self._fatal is not None:
            raise self._fatal

    def stop(self, *, now: bool = False) -> None:
        """Stop claiming; let running jobs finish within `grace_seconds` (at once if `now`)."""
        with self._lock:
            if self._stop_at is None:
                self._stop_at = time.monotonic()
        self._stop.set()
        if now:
            self._now.set()

    # -- claims ----------------------------------------------------------------------------------

    def _poll(self) -> None:
        backoff = Backoff(cap=self.max_backoff_seconds)
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=0.25):
                continue
            claim = None
            try:
                claim = self._claim_next(backoff)
            finally:
                if claim is None:
                    self._slots.release()
            if claim is not None:
                self._start(claim)  # the job releases its slot when it ends

    def _pick(self) -> tuple[str | None, float]:
        """The next stage to claim at, in turn, skipping those claimed at or held off now."""
        with self._lock:
            now = time.monotonic()
            stages = list(self._handlers)
            open_stages = [s for s in stages if self._held_off.get(s, 0) <= now]
            for offset in range(len(stages)):
                stage = stages[(self._turn + offset) % len(stages)]
                if stage in open_stages and stage not in self._claiming:
                    self._turn = (stages.index(stage) + 1) % len(stages)
                    self._claiming.add(stage)
                    covered = len(self._claiming) >= len(open_stages)
                    wait = self.claim_wait_seconds
                    return stage, wait if covered else min(wait, ROTATE_WAIT_SECONDS)
            return None, 0.0

    def _claim_next(self, backoff: Backoff) -> Claim | None:
        stage, wait = self._pick()
        if stage is None:
            self._stop.wait(0.25)  # every stage is being claimed at or held off by a breaker
            return None
        try:
            claim = self.client.claim(stage, wait_seconds=wait)
        except BudgetHalted as halted:
            self._hold_off(stage, halted)
            return None
        except RETRYABLE as error:
            self._service_lost(error)
            retry_after = error.retry_after if isinstance(error, ProblemError) else None
            self._stop.wait(backoff.next(retry_after))
            return None
        except ProblemError as problem:  # 401, 403, 422: waiting will not change the answer
            self._fail_fatally(problem)
            return None
        finally:
            with self._lock:
                self._claiming.discard(stage)
        backoff.reset()
        self._service_back(stage)
        if claim is not None and self._past_grace():
            self._hand_back(claim.lease.id, "the worker had stopped when the claim came back")
            return None
        # A claim that comes back while stopping runs like any job: its grace period is the
        # same, and handing it back unworked would cost the item an attempt for nothing.
        return claim

    def _past_grace(self) -> bool:
        with self._lock:
            if self._stop_at is None:
                return False
        return self._now.is_set() or time.monotonic() >= self._stop_at + self.grace_seconds

    def _hold_off(self, stage: str, halted: BudgetHalted) -> None:
        with self._lock:
            self._stats = replace(self._stats, halted=self._stats.halted + 1)
            backoff = self._halt_backoff.setdefault(stage, Backoff(cap=self.max_backoff_seconds))
            first = backoff.failures == 0
            pause = backoff.next(halted.retry_after)
            self._held_off[stage] = time.monotonic() + pause
        if first:
            log.warning(
                "claims at %s refused: the %s budget is halted (%.4f of %.4f USD); backing off",
                stage,
                halted.scope,
                halted.spent_usd,
                halted.halt_usd,
            )

    def _service_lost(self, error: BaseException) -> None:
        with self._lock:
            self._stats = replace(self._stats, unavailable=self._stats.unavailable + 1)
            first, self._outage = not self._outage, True
        if first:
            log.warning("the service did not answer a claim (%s); retrying with backoff", error)

    def _service_back(self, stage: str) -> None:
        with self._lock:
            was_out, self._outage = self._outage, False
            halted = self._halt_backoff.pop(stage, None)
            self._held_off.pop(stage, None)
        if was_out:
            log.info("the service answers claims again")
        if halted is not None:
            log.info("claims at %s are accepted again", stage)

    def _fail_fatally(self, problem: ProblemError) -> None:
        log.error("claims refused (%s); the worker stops", problem)
        with self._lock:
            self._fatal = self._fatal or problem
        self.stop()

    # -- jobs ------------------------------------------------------------------------------------

    def _start(self, claim: Claim) -> None:
        job = Job(claim.item, claim.lease, dict(claim.input), dict(claim.outputs))
        interval = max(_lease_seconds(claim) / 3, MIN_HEARTBEAT_SECONDS)
        running = _Running(job, interval, time.monotonic() + interval)
        with self._lock:
            self._running[claim.lease.id] = running
            self._stats = replace(self._stats, claimed=self._stats.claimed + 1)
        threading.Thread(
            target=self._work, args=(running,), name=f"stateowner-job-{job.stage}", daemon=True
        ).start()

    def _work(self, running: _Running) -> None:
        job = running.job
        try:
            result: Result | BaseException
            try:
                result = _call(self._handlers[job.stage], job)
            except BaseException as error:  # any end of a handler ends its lease, never expiry
                result = error
            duration_ms = int((time.perf_counter() - running.started) * 1000)
            if self._begin_report(running):
                self._report(job, result, duration_ms)
        finally:
            with self._lock:
                self._running.pop(job.lease.id, None)
            self._slots.release()
            self._changed.set()

    def _begin_report(self, running: _Running) -> bool:
        """The job's right to report, unless its lease was lost or handed back meanwhile."""
        with self._lock:
            state = running.state
            if state is _State.RUNNING:
                running.state = _State.REPORTING
                return True
            if state is _State.LOST:
                self._stats = replace(self._stats, lost=self._stats.lost + 1)
        log.info(
            "the result of %s at %s is dropped: its lease was %s while it ran",
            running.job.item.id,
            running.job.stage,
            "lost" if state is _State.LOST else "handed back",
        )
        return False

    def _report(self, job: Job, result: Result | BaseException, duration_ms: int) -> None:
        trace = job.trace.as_json()
        if isinstance(result, Result):
            body: dict[str, Any] = {
                "output": result.output,
                "outcome": result.outcome,
                "cost_usd": result.cost_usd,
                "tokens_in": result.tokens_in,
                "tokens_out": result.tokens_out,
                "duration_ms": duration_ms,
                "trace": {**trace, **(result.trace or {})},
                "model": result.model,
            }
            self._deliver(job.lease.id, "complete", body)
            return
        retryable = not isinstance(result, NonRetryable)
        if retryable:
            log.warning(
                "the handler of %s failed on %s (attempt %d); the lease is failed as retryable",
                job.stage,
                job.item.id,
                job.attempt,
                exc_info=result,
            )
        trace["error"] = {
            "type": type(result).__name__,
            "message": str(result),
            "traceback": "".join(traceback.format_exception(result))[-MAX_ERROR_CHARS:],
        }
        self._deliver(job.lease.id, "fail", _failure(result, retryable, duration_ms, trace))

    def _deliver(self, lease_id: str, kind: str, body: dict[str, Any]) -> None:
        """Send a report until the service has it: the same body under the same key each time,
        so a repeat of one that landed is answered again instead of applied twice."""
        key = uuid.uuid4().hex
        backoff = Backoff(cap=self.max_backoff_seconds)
        give_up = time.monotonic() + self.report_retry_seconds
        shrunk = 0
        while True:
            send = self.client.complete if kind == "complete" else self.client.fail
            try:
                send(lease_id, idempotency_key=key, **body)
            except LeaseLost as lost:
                self._count(lost=1)
                log.info("lease %s was lost before its report (%s); result dropped", lease_id, lost)
                return
            except IdempotencyMismatch as mismatch:
                log.warning("lease %s was already finished otherwise (%s)", lease_id, mismatch)
                return
            except PayloadTooLarge as too_large:
                if shrunk < 2:
                    shrunk += 1
                    body = {**body, "trace": _shrunk(body.get("trace"), shrunk)}
                elif kind == "complete":
                    # Even without its trace the report is too large: its output is.
                    kind = "fail"
                    reason = f"the completion was too large for the service: {too_large.detail}"
                    body = _failure(NonRetryable(reason), False, body["duration_ms"], None)
                else:
                    log.error("the failure of lease %s is too large: %s", lease_id, too_large)
                    return
                key = uuid.uuid4().hex  # refused, so nothing landed: a new body, a new key
                continue
            except ValidationError as invalid:
                if kind == "fail":
                    log.error("the service refused the failure of lease %s: %s", lease_id, invalid)
                    return
                # The result itself was refused (an outcome the stage does not know): park the
                # item so a person sees it, rather than retry what will be refused again.
                kind = "fail"
                reason = f"the completion was refused: {invalid.detail}"
                body = _failure(NonRetryable(reason), False, body["duration_ms"], body["trace"])
                key = uuid.uuid4().hex
                continue
            except RETRYABLE as error:
                self._count(unavailable=1)
                retry_after = error.retry_after if isinstance(error, ProblemError) else None
                pause = backoff.next(retry_after)
                if time.monotonic() + pause > min(give_up, self._stop_give_up()):
                    log.error("the %s of lease %s was not delivered: %s", kind, lease_id, error)
                    return
                log.info("the %s of lease %s is retried: %s", kind, lease_id, error)
                time.sleep(pause)
                continue
            except ProblemError as problem:
                log.error("the service refused the %s of lease %s: %s", kind, lease_id, problem)
                return
            if kind == "complete":
                self._count(completed=1)
            else:
                self._count(failed=1)
            return

    def _stop_give_up(self) -> float:
        with self._lock:
            if self._stop_at is None:
                return float("inf")
            return self._stop_at + self.grace_seconds + STOP_REPORT_SECONDS

    def _hand_back(self, lease_id: str, why: str, trace: Mapping[str, Any] | None = None) -> None:
        self._count(handed_back=1)
        log.info("lease %s handed back: %s", lease_id, why)
        body = _failure(RuntimeError(why), True, 0, {**(trace or {}), "handed_back": True})
        self._deliver(lease_id, "fail", body)

    def _count(self, **increments: int) -> None:
        with self._lock:
            self._stats = replace(
                self._stats,
                **{name: getattr(self._stats, name) + n for name, n in increments.items()},
            )

    # -- heartbeats ------------------------------------------------------------------------------

    def _heartbeats(self) -> None:
        """One thread keeps every running job's lease: each is renewed a third of the way in."""
        while not self._beats_stop.is_set():
            now = time.monotonic()
            with self._lock:
                beating = [r for r in self._running.values() if r.state is _State.RUNNING]
            due = [r for r in beating if r.next_beat <= now]
            for running in due:
                self._beat(running)
            if not due:
                soonest = min((r.next_beat for r in beating), default=now + 0.25)
                self._beats_stop.wait(min(max(soonest - now, 0.01), 0.25))

    def _beat(self, running: _Running) -> None:
        lease_id = running.job.lease.id
        try:
            self.client.heartbeat(lease_id, timeout=min(max(running.interval, 1.0), 10.0))
        except LeaseLost as lost:
            with self._lock:
                if running.state is _State.RUNNING:
                    running.state = _State.LOST
            running.job.cancelled.set()
            log.warning("lease %s was lost while its job ran (%s)", lease_id, lost)
            return
        except StateownerError as error:
            # Not lost, just not renewed yet: try again soon, well before the lease runs out.
            running.next_beat = time.monotonic() + min(running.interval, 1.0)
            log.info("heartbeat of lease %s not answered (%s); trying again", lease_id, error)
            return
        running.next_beat = time.monotonic() + running.interval

    # -- stopping --------------------------------------------------------------------------------

    def _wind_down(self) -> None:
        """Wait for running jobs until the grace period ends, then hand back what still runs;
        wait for claims in flight too, since one may yet come back with a lease to hand back."""
        assert self._stop_at is not None
        deadline = self._stop_at + self.grace_seconds
        hard_limit = deadline + max(
            self.claim_wait_seconds + CLAIM_TIMEOUT_MARGIN_SECONDS, STOP_REPORT_SECONDS + 5
        )
        log.info("stopping: no more claims; running jobs have %.1f s", self.grace_seconds)
        while True:
            with self._lock:
                live = [r for r in self._running.values() if r.state is not _State.LOST]
                unfinished = [r for r in live if r.state is not _State.HANDED_BACK]
            polling = any(poller.is_alive() for poller in self._pollers)
            if not unfinished and not polling:
                return
            now = time.monotonic()
            if now >= deadline or self._now.is_set():
                self._hand_back_running()
            if now >= hard_limit:
                log.error("stopped with %d jobs still reporting", len(unfinished))
                return
            self._changed.wait(0.05)
            self._changed.clear()

    def _hand_back_running(self) -> None:
        with self._lock:
            late = [r for r in self._running.values() if r.state is _State.RUNNING]
            for running in late:
                running.state = _State.HANDED_BACK
        for running in late:
            running.job.cancelled.set()
            trace = running.job.trace.as_json()
            self._hand_back(
                running.job.lease.id, "the worker stopped before the job finished", trace
            )

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            again = self._stop.is_set()
            log.info("signal %s: %s", signal.Signals(signum).name, "now" if again else "stopping")
            self.stop(now=again)

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


def _call(handler: Handler, job: Job) -> Result:
    value: Any = handler(job)
    if inspect.isawaitable(value):
        value = asyncio.run(_awaited(value))
    if not isinstance(value, Result):
        raise TypeError(f"the handler of {job.stage} returned {type(value).__name__}, not Result")
    return value


def _awaited(awaitable: Awaitable[Any]) -> Coroutine[Any, Any, Any]:
    async def wait() -> Any:
        return await awaitable

    return wait()


def _lease_seconds(claim: Claim) -> float:
    """How long the lease runs, from two times on the service's own clock when it gives both,
    so a skewed local clock does not matter."""
    claimed_at = claim.item.updated_at
    if claimed_at is not None:
        length = (claim.lease.expires_at - claimed_at).total_seconds()
        if length > 0:
            return length
    return max((claim.lease.expires_at - datetime.now(UTC)).total_seconds(), 0.0)


def _failure(error: BaseException, retryable: bool, duration_ms: int, trace: Any) -> dict[str, Any]:
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    spent = error if isinstance(error, NonRetryable) else None
    return {
        "error": message[:MAX_ERROR_CHARS],
        "retryable": retryable,
        "cost_usd": spent.cost_usd if spent else 0,
        "tokens_in": spent.tokens_in if spent else 0,
        "tokens_out": spent.tokens_out if spent else 0,
        "duration_ms": duration_ms,
        "trace": trace,
    }


def _shrunk(trace: Any, step: int) -> Any:
    """A trace the service refused as too large: first without the tool calls' inputs and
    outputs, then only a note that it was dropped."""
    if step == 1 and isinstance(trace, dict):
        calls = [
            {key: value for key, value in call.items() if key not in ("input", "output")}
            for call in trace.get("tool_calls", [])
            if isinstance(call, dict)
        ]
        return {"tool_calls": calls, "truncated": "inputs and outputs dropped: over the limit"}
    return {"truncated": "the trace was over the service's limit"}
