"""`Client` and `AsyncClient`: one method per v1 route, typed answers, problems as exceptions.

Neither retries on its own: a method sends one request (a paging method one per page) and
raises what went wrong. Retrying is the caller's choice; the `Worker` makes it for agents.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from stateowner_client import _calls as calls
from stateowner_client._backoff import Backoff
from stateowner_client._sse import Decoder, event_of
from stateowner_client.errors import (
    ProblemError,
    TooManyRequests,
    TransportError,
    Unavailable,
    problem_from,
)
from stateowner_client.models import (
    Activation,
    Agent,
    AuditEntry,
    Budget,
    Claim,
    Delivery,
    EvalRun,
    EvalStarted,
    Event,
    EventPage,
    Health,
    Heartbeat,
    Item,
    OperatorHealth,
    Pipeline,
    PipelineReport,
    ProjectionStatus,
    Readiness,
    Run,
    Schedule,
    StageReport,
    Topic,
    Webhook,
)

T = TypeVar("T")

__version__ = "0.1.0"
USER_AGENT = f"stateowner-client/{__version__}"
DEFAULT_TIMEOUT = 30.0
# The live feed sends a keep-alive now and then; silence longer than this means a dead link.
STREAM_READ_TIMEOUT = 60.0


def _headers(token: str | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    headers.update(extra or {})
    return headers


def _answer(call: calls.Call[T], response: httpx.Response) -> T:
    if response.status_code >= 400 and response.status_code not in call.accept:
        raise problem_from(response)
    return call.parse(response)


def _timeout(call: calls.Call[Any]) -> float | httpx._client.UseClientDefault:
    return call.timeout if call.timeout is not None else httpx.USE_CLIENT_DEFAULT


class _NextCursor:
    """Guards a paging loop against a server that hands back the cursor it was given."""

    def __init__(self) -> None:
        self.seen: set[calls.Cursor] = set()

    def __call__(self, page: calls.Page[Any]) -> calls.Cursor:
        if page.next in self.seen:
            raise ProblemError(500, "cursor_loop", f"cursor {page.next!r} came back", {})
        self.seen.add(page.next)
        return page.next


class Client:
    """A synchronous client. Safe to share between threads; close it (or use `with`) when done."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            headers=_headers(token, headers),
            timeout=timeout,
            transport=transport,
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: calls.Call[T]) -> T:
        try:
            response = self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                content=call.content,
                headers=call.headers,
                timeout=_timeout(call),
            )
        except httpx.TransportError as error:
            raise TransportError(f"{call.method} {call.path}: {error!r}") from error
        return _answer(call, response)

    def _pages(self, page: Callable[[calls.Cursor], calls.Call[calls.Page[T]]]) -> Iterator[T]:
        cursor: calls.Cursor = None
        following = _NextCursor()
        while True:
            answer = self._send(page(cursor))
            yield from answer.entries
            if answer.next is None:
                return
            cursor = following(answer)

    # -- agents ---------------------------------------------------------------------------------

    def create_agent(
        self,
        name: str,
        role: str = "agent",
        stages: Sequence[str] = (),
        *,
        idempotency_key: str | None = None,
        max_concurrent_leases: int | None = None,
    ) -> Agent:
        """Register an identity (admin). The answer's `token` is shown this once."""
        return self._send(
            calls.create_agent(name, role, stages, idempotency_key, max_concurrent_leases)
        )

    def list_agents(self) -> list[Agent]:
        return self._send(calls.list_agents())

    def rotate_token(self, name: str) -> Agent:
        """A new token for the agent (admin); the old one is refused from then on."""
        return self._send(calls.rotate_token(name))

    def set_agent_stages(self, name: str, stages: Sequence[str]) -> Agent:
        return self._send(calls.set_agent_stages(name, stages))

    def disable_agent(self, name: str) -> Agent:
        return self._send(calls.disable_agent(name))

    def set_agent_limits(self, name: str, max_concurrent_leases: int | None) -> Agent:
        """Cap the leases the agent may hold at once (None: no cap); operator."""
        return self._send(calls.set_agent_limits(name, max_concurrent_leases))

    # -- schedules and reports ------------------------------------------------------------------

    def put_schedule(self, name: str, schedule: Mapping[str, Any]) -> Schedule:
        """`{pipeline, topic, title, cron | every_seconds, timezone, input, enabled, catch_up}`."""
        return self._send(calls.put_schedule(name, schedule))

    def list_schedules(self) -> list[Schedule]:
        return self._send(calls.list_schedules())

    def get_schedule(self, name: str) -> Schedule:
        return self._send(calls.get_schedule(name))

    def delete_schedule(self, name: str) -> None:
        self._send(calls.delete_schedule(name))

    def pipeline_report(self, name: str, *, days: int = 7) -> PipelineReport:
        """The pipeline's last `days` days against its exit criteria."""
        return self._send(calls.pipeline_report(name, days))

    # -- pipelines ------------------------------------------------------------------------------

    def put_pipeline(self, name: str, spec: Mapping[str, Any] | str) -> Pipeline:
        """A new version of the pipeline; `spec` is a mapping (sent as JSON) or TOML text."""
        return self._send(calls.put_pipeline(name, spec))

    def get_pipeline(self, name: str, *, version: int | None = None) -> Pipeline:
        return self._send(calls.get_pipeline(name, version))

    def start_eval(
        self,
        pipeline: str,
        version: int,
        cases: Sequence[Mapping[str, Any]],
        *,
        topic: str | None = None,
        idempotency_key: str | None = None,
    ) -> EvalStarted:
        """Run a reference set against a version; each case becomes an eval item on it."""
        return self._send(calls.start_eval(pipeline, version, cases, topic, idempotency_key))

    def get_eval(self, pipeline: str, run_id: str, *, min_position: int | None = None) -> EvalRun:
        return self._send(calls.get_eval(pipeline, run_id, min_position))

    def list_evals(
        self, pipeline: str, *, version: int | None = None, limit: int | None = None
    ) -> list[EvalRun]:
        return self._send(calls.list_evals(pipeline, version, limit))

    def activate_version(self, pipeline: str, version: int, *, force: bool = False) -> Activation:
        """Make `version` the one new items start on; EvalGateRefused when its eval results do
        not meet the active version's gate (an admin may `force`)."""
        return self._send(calls.activate_version(pipeline, version, force))

    # -- items ----------------------------------------------------------------------------------

    def create_item(
        self,
        pipeline: str,
        topic: str,
        title: str,
        input: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Item:
        """A new item; with an `idempotency_key`, a repeat returns the same item."""
        return self._send(calls.create_item(pipeline, topic, title, input, idempotency_key))

    def get_item(self, item_id: str, *, min_position: int | None = None) -> Item:
        """The item; with `min_position`, once the view holds every write up to it."""
        return self._send(calls.get_item(item_id, min_position))

    def list_items(
        self,
        *,
        topic: str | None = None,
        stage: str | None = None,
        status: str | None = None,
        agent: str | None = None,
        page_size: int = 100,
        min_position: int | None = None,
    ) -> Iterator[Item]:
        """Every matching item, oldest first, fetching page after page as it is iterated."""
        return self._pages(calls.list_items(topic, stage, status, agent, page_size, min_position))

    def item_events(self, item_id: str, *, page_size: int | None = None) -> Iterator[Event]:
        """The item's history in order, page after page when the service pages it."""
        return self._pages(calls.item_events(item_id, page_size))

    def item_runs(self, item_id: str, *, page_size: int | None = None) -> Iterator[Run]:
        """Every attempt at every stage, with its result, cost and trace."""
        return self._pages(calls.item_runs(item_id, page_size))

    def item_at(self, item_id: str, version: int) -> Item:
        """The item as it stood once it had `version` events."""
        return self._send(calls.item_at(item_id, version))

    def retry(self, item_id: str) -> Item:
        """Un-park the item (operator): its stage is ready again with attempts reset."""
        return self._send(calls.item_command(item_id, "retry"))

    def cancel(self, item_id: str) -> Item:
        return self._send(calls.item_command(item_id, "cancel"))

    def resume(self, item_id: str) -> Item:
        """Carry a halted item on (operator)."""
        return self._send(calls.item_command(item_id, "resume"))

    def rewind(self, item_id: str, stage: str, reason: str) -> Item:
        """Make a stage the item reached before ready again, a done item too (operator)."""
        return self._send(calls.rewind(item_id, stage, reason))

    def fork(
        self,
        item_id: str,
        stage: str,
        *,
        pipeline_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Item:
        """A new item ready at `stage` (on the latest or the given pipeline version), carrying
        the outputs of the stages before it; `forked_from` names the source (operator)."""
        return self._send(calls.fork(item_id, stage, pipeline_version, idempotency_key))

    # -- work -----------------------------------------------------------------------------------

    def claim(self, stage: str, *, wait_seconds: float = 0) -> Claim | None:
        """A lease on the oldest ready item at `stage`, or None once `wait_seconds` (≤ 30) pass."""
        return self._send(calls.claim(stage, wait_seconds))

    def heartbeat(self, lease_id: str, *, timeout: float | None = None) -> Heartbeat:
        """Extend the lease by its stage's lease time; `LeaseLost` once it is gone."""
        return self._send(calls.heartbeat(lease_id, timeout))

    def complete(
        self,
        lease_id: str,
        *,
        output: Any = None,
        outcome: str | None = None,
        cost_usd: calls.Money = 0,
        tokens_in: int = 0,
        tokens_out: int = 0,
        duration_ms: int = 0,
        trace: Any = None,
        idempotency_key: str | None = None,
        model: str | None = None,
    ) -> StageReport:
        """Report the stage done. Sending the very same report again is answered again."""
        return self._send(
            calls.complete(
                lease_id,
                output=output,
                outcome=outcome,
                cost_usd=cost_usd,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                duration_ms=duration_ms,
                trace=trace,
                idempotency_key=idempotency_key,
                model=model,
            )
        )

    def fail(
        self,
        lease_id: str,
        *,
        error: str,
        retryable: bool = True,
        cost_usd: calls.Money = 0,
        tokens_in: int = 0,
        tokens_out: int = 0,
        duration_ms: int = 0,
        trace: Any = None,
        idempotency_key: str | None = None,
        model: str | None = None,
    ) -> StageReport:
        """Report the stage failed: retried with backoff if `retryable`, else the item parks."""
        return self._send(
            calls.fail(
                lease_id,
                error=error,
                retryable=retryable,
                cost_usd=cost_usd,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                duration_ms=duration_ms,
                trace=trace,
                idempotency_key=idempotency_key,
                model=model,
            )
        )

    # -- topics and budgets ---------------------------------------------------------------------

    def put_topic(
        self,
        name: str,
        *,
        owner: str | None = None,
        priority: int = 0,
        tags: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> Topic:
        return self._send(calls.put_topic(name, owner, priority, tags, metadata))

    def get_topic(self, name: str) -> Topic:
        return self._send(calls.get_topic(name))

    def list_topics(self) -> list[Topic]:
        return self._send(calls.list_topics())

    def put_budget(self, scope: str, *, alert_usd: calls.Money, halt_usd: calls.Money) -> Budget:
        """Daily limits for `global`, `stage:NAME`, `agent:NAME` or `topic:NAME`."""
        return self._send(calls.put_budget(scope, alert_usd, halt_usd))

    def list_budgets(self) -> list[Budget]:
        return self._send(calls.list_budgets())

    def reset_budget(self, scope: str) -> Budget:
        """Close the scope's breaker for the rest of the day (operator)."""
        return self._send(calls.reset_budget(scope))

    # -- webhooks -------------------------------------------------------------------------------

    def put_webhook(self, name: str, url: str, events: Sequence[str], secret: str) -> Webhook:
        """Post each event of these types to `url`, signed with `secret` (operator)."""
        return self._send(calls.put_webhook(name, url, events, secret))

    def get_webhook(self, name: str) -> Webhook:
        return self._send(calls.get_webhook(name))

    def list_webhooks(self) -> list[Webhook]:
        return self._send(calls.list_webhooks())

    def delete_webhook(self, name: str) -> None:
        self._send(calls.delete_webhook(name))

    def webhook_deliveries(
        self, name: str, *, status: str | None = None, page_size: int | None = None
    ) -> Iterator[Delivery]:
        """The webhook's deliveries, newest first (`status`: pending, delivered or dead)."""
        return self._pages(calls.webhook_deliveries(name, status, page_size))

    def redrive_delivery(self, name: str, delivery_id: str) -> Delivery:
        """Send a dead (or delivered) delivery again from its first attempt."""
        return self._send(calls.redrive_delivery(name, delivery_id))

    # -- audit, the log, the followers, health --------------------------------------------------

    def audit(
        self,
        *,
        actor: str | None = None,
        type: str | None = None,
        item: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 100,
    ) -> Iterator[AuditEntry]:
        """Who did what, oldest first, page after page."""
        return self._pages(calls.audit(actor, type, item, since, until, page_size))

    def events(self, *, after: int = 0, limit: int = 100) -> EventPage:
        """One page of the global log after `after`; go on from its `last_position`."""
        return self._send(calls.events(after, limit))

    def projections(self) -> list[ProjectionStatus]:
        return self._send(calls.projections())

    def health(self) -> OperatorHealth:
        """Readiness with its reasons, for operators."""
        return self._send(calls.health())

    def healthz(self) -> Health:
        return self._send(calls.healthz())

    def readyz(self) -> Readiness:
        """Readiness; a service that is not ready answers too (`ready` is False), not raises."""
        return self._send(calls.readyz())

    def metrics(self) -> str:
        """The Prometheus text."""
        return self._send(calls.metrics())

    def stream_events(
        self,
        *,
        after: int | None = None,
        type: str | None = None,
        item: str | None = None,
        topic: str | None = None,
        reconnect: bool = True,
    ) -> Iterator[Event]:
        """The live feed of the global log. When the connection drops it reconnects (with
        backoff) and resumes after the last event seen (`Last-Event-ID`), so none is missed."""
        last_id: str | None = str(after) if after is not None else None
        backoff = Backoff()
        while True:
            retry_after: float | None = None
            try:
                with self._http.stream(
                    "GET",
                    calls.STREAM_PATH,
                    params=calls.stream_params(
                        int(last_id) if last_id and last_id.isdigit() else after, type, item, topic
                    ),
                    headers=_stream_headers(last_id),
                    timeout=httpx.Timeout(self.timeout, read=STREAM_READ_TIMEOUT),
                ) as response:
                    if response.status_code >= 400:
                        response.read()
                        raise problem_from(response)
                    backoff.reset()
                    decoder = Decoder()
                    for line in response.iter_lines():
                        message = decoder.feed(line)
                        if message is None:
                            continue
                        last_id = message.id or last_id
                        event = event_of(message)
                        if event is not None:
                            yield event
            except httpx.TransportError as error:
                if not reconnect:
                    raise TransportError(f"GET {calls.STREAM_PATH}: {error!r}") from error
            except (Unavailable, TooManyRequests) as problem:
                if not reconnect:
                    raise
                retry_after = problem.retry_after
            if not reconnect:
                return
            time.sleep(backoff.next(retry_after))


def _stream_headers(last_id: str | None) -> dict[str, str]:
    headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    return headers


class AsyncClient:
    """The same methods as `Client`, awaited; the paging ones are async iterators."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_headers(token, headers),
            timeout=timeout,
            transport=transport,
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: calls.Call[T]) -> T:
        try:
            response = await self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                content=call.content,
                headers=call.headers,
                timeout=_timeout(call),
            )
        except httpx.TransportError as error:
            raise TransportError(f"{call.method} {call.path}: {error!r}") from error
        return _answer(call, response)

    async def _pages(
        self, page: Callable[[calls.Cursor], calls.Call[calls.Page[T]]]
    ) -> AsyncIterator[T]:
        cursor: calls.Cursor = None
        following = _NextCursor()
        while True:
            answer = await self._send(page(cursor))
            for entry in answer.entries:
                yield entry
            if answer.next is None:
                return
            cursor = following(answer)

    # -- agents ---------------------------------------------------------------------------------

    async def create_agent(
        self,
        name: str,
        role: str = "agent",
        stages: Sequence[str] = (),
        *,
        idempotency_key: str | None = None,
        max_concurrent_leases: int | None = None,
    ) -> Agent:
        return await self._send(
            calls.create_agent(name, role, stages, idempotency_key, max_concurrent_leases)
        )

    async def list_agents(self) -> list[Agent]:
        return await self._send(calls.list_agents())

    async def rotate_token(self, name: str) -> Agent:
        return await self._send(calls.rotate_token(name))

    async def set_agent_stages(self, name: str, stages: Sequence[str]) -> Agent:
        return await self._send(calls.set_agent_stages(name, stages))

    async def disable_agent(self, name: str) -> Agent:
        return await self._send(calls.disable_agent(name))

    async def set_agent_limits(self, name: str, max_concurrent_leases: int | None) -> Agent:
        return await self._send(calls.set_agent_limits(name, max_concurrent_leases))

    # -- schedules and reports ------------------------------------------------------------------

    async def put_schedule(self, name: str, schedule: Mapping[str, Any]) -> Schedule:
        return await self._send(calls.put_schedule(name, schedule))

    async def list_schedules(self) -> list[Schedule]:
        return await self._send(calls.list_schedules())

    async def get_schedule(self, name: str) -> Schedule:
        return await self._send(calls.get_schedule(name))

    async def delete_schedule(self, name: str) -> None:
        await self._send(calls.delete_schedule(name))

    async def pipeline_report(self, name: str, *, days: int = 7) -> PipelineReport:
        return await self._send(calls.pipeline_report(name, days))

    # -- pipelines ------------------------------------------------------------------------------

    async def put_pipeline(self, name: str, spec: Mapping[str, Any] | str) -> Pipeline:
        return await self._send(calls.put_pipeline(name, spec))

    async def get_pipeline(self, name: str, *, version: int | None = None) -> Pipeline:
        return await self._send(calls.get_pipeline(name, version))

    async def start_eval(
        self,
        pipeline: str,
        version: int,
        cases: Sequence[Mapping[str, Any]],
        *,
        topic: str | None = None,
        idempotency_key: str | None = None,
    ) -> EvalStarted:
        return await self._send(calls.start_eval(pipeline, version, cases, topic, idempotency_key))

    async def get_eval(
        self, pipeline: str, run_id: str, *, min_position: int | None = None
    ) -> EvalRun:
        return await self._send(calls.get_eval(pipeline, run_id, min_position))

    async def list_evals(
        self, pipeline: str, *, version: int | None = None, limit: int | None = None
    ) -> list[EvalRun]:
        return await self._send(calls.list_evals(pipeline, version, limit))

    async def activate_version(
        self, pipeline: str, version: int, *, force: bool = False
    ) -> Activation:
        return await self._send(calls.activate_version(pipeline, version, force))

    # -- items ----------------------------------------------------------------------------------

    async def create_item(
        self,
        pipeline: str,
        topic: str,
        title: str,
        input: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> Item:
        return await self._send(calls.create_item(pipeline, topic, title, input, idempotency_key))

    async def get_item(self, item_id: str, *, min_position: int | None = None) -> Item:
        return await self._send(calls.get_item(item_id, min_position))

    def list_items(
        self,
        *,
        topic: str | None = None,
        stage: str | None = None,
        status: str | None = None,
        agent: str | None = None,
        page_size: int = 100,
        min_position: int | None = None,
    ) -> AsyncIterator[Item]:
        return self._pages(calls.list_items(topic, stage, status, agent, page_size, min_position))

    def item_events(self, item_id: str, *, page_size: int | None = None) -> AsyncIterator[Event]:
        return self._pages(calls.item_events(item_id, page_size))

    def item_runs(self, item_id: str, *, page_size: int | None = None) -> AsyncIterator[Run]:
        return self._pages(calls.item_runs(item_id, page_size))

    async def item_at(self, item_id: str, version: int) -> Item:
        return await self._send(calls.item_at(item_id, version))

    async def retry(self, item_id: str) -> Item:
        return await self._send(calls.item_command(item_id, "retry"))

    async def cancel(self, item_id: str) -> Item:
        return await self._send(calls.item_command(item_id, "cancel"))

    async def resume(self, item_id: str) -> Item:
        return await self._send(calls.item_command(item_id, "resume"))

    async def rewind(self, item_id: str, stage: str, reason: str) -> Item:
        return await self._send(calls.rewind(item_id, stage, reason))

    async def fork(
        self,
        item_id: str,
        stage: str,
        *,
        pipeline_version: int | None = None,
        idempotency_key: str | None = None,
    ) -> Item:
        return await self._send(calls.fork(item_id, stage, pipeline_version, idempotency_key))

    # -- work -----------------------------------------------------------------------------------

    async def claim(self, stage: str, *, wait_seconds: float = 0) -> Claim | None:
        return await self._send(calls.claim(stage, wait_seconds))

    async def heartbeat(self, lease_id: str, *, timeout: float | None = None) -> Heartbeat:
        return await self._send(calls.heartbeat(lease_id, timeout))

    async def complete(
        self,
        lease_id: str,
        *,
        output: Any = None,
        outcome: str | None = None,
        cost_usd: calls.Money = 0,
        tokens_in: int = 0,
        tokens_out: int = 0,
        duration_ms: int = 0,
        trace: Any = None,
        idempotency_key: str | None = None,
        model: str | None = None,
    ) -> StageReport:
        return await self._send(
            calls.complete(
                lease_id,
                output=output,
                outcome=outcome,
                cost_usd=cost_usd,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                duration_ms=duration_ms,
                trace=trace,
                idempotency_key=idempotency_key,
                model=model,
            )
        )

    async def fail(
        self,
        lease_id: str,
        *,
        error: str,
        retryable: bool = True,
        cost_usd: calls.Money = 0,
        tokens_in: int = 0,
        tokens_out: int = 0,
        duration_ms: int = 0,
        trace: Any = None,
        idempotency_key: str | None = None,
        model: str | None = None,
    ) -> StageReport:
        return await self._send(
            calls.fail(
                lease_id,
                error=error,
                retryable=retryable,
                cost_usd=cost_usd,
                tokens_in=tokens_in,
                tokens_out=tokens_out,
                duration_ms=duration_ms,
                trace=trace,
                idempotency_key=idempotency_key,
                model=model,
            )
        )

    # -- topics and budgets ---------------------------------------------------------------------

    async def put_topic(
        self,
        name: str,
        *,
        owner: str | None = None,
        priority: int = 0,
        tags: Sequence[str] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> Topic:
        return await self._send(calls.put_topic(name, owner, priority, tags, metadata))

    async def get_topic(self, name: str) -> Topic:
        return await self._send(calls.get_topic(name))

    async def list_topics(self) -> list[Topic]:
        return await self._send(calls.list_topics())

    async def put_budget(
        self, scope: str, *, alert_usd: calls.Money, halt_usd: calls.Money
    ) -> Budget:
        return await self._send(calls.put_budget(scope, alert_usd, halt_usd))

    async def list_budgets(self) -> list[Budget]:
        return await self._send(calls.list_budgets())

    async def reset_budget(self, scope: str) -> Budget:
        return await self._send(calls.reset_budget(scope))

    # -- webhooks -------------------------------------------------------------------------------

    async def put_webhook(self, name: str, url: str, events: Sequence[str], secret: str) -> Webhook:
        return await self._send(calls.put_webhook(name, url, events, secret))

    async def get_webhook(self, name: str) -> Webhook:
        return await self._send(calls.get_webhook(name))

    async def list_webhooks(self) -> list[Webhook]:
        return await self._send(calls.list_webhooks())

    async def delete_webhook(self, name: str) -> None:
        await self._send(calls.delete_webhook(name))

    def webhook_deliveries(
        self, name: str, *, status: str | None = None, page_size: int | None = None
    ) -> AsyncIterator[Delivery]:
        return self._pages(calls.webhook_deliveries(name, status, page_size))

    async def redrive_delivery(self, name: str, delivery_id: str) -> Delivery:
        return await self._send(calls.redrive_delivery(name, delivery_id))

    # -- audit, the log, the followers, health --------------------------------------------------

    def audit(
        self,
        *,
        actor: str | None = None,
        type: str | None = None,
        item: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        page_size: int = 100,
    ) -> AsyncIterator[AuditEntry]:
        return self._pages(calls.audit(actor, type, item, since, until, page_size))

    async def events(self, *, after: int = 0, limit: int = 100) -> EventPage:
        return await self._send(calls.events(after, limit))

    async def projections(self) -> list[ProjectionStatus]:
        return await self._send(calls.projections())

    async def health(self) -> OperatorHealth:
        return await self._send(calls.health())

    async def healthz(self) -> Health:
        return await self._send(calls.healthz())

    async def readyz(self) -> Readiness:
        return await self._send(calls.readyz())

    async def metrics(self) -> str:
        return await self._send(calls.metrics())

    async def stream_events(
        self,
        *,
        after: int | None = None,
        type: str | None = None,
        item: str | None = None,
        topic: str | None = None,
        reconnect: bool = True,
    ) -> AsyncIterator[Event]:
        """The live feed, as `Client.stream_events`."""
        last_id: str | None = str(after) if after is not None else None
        backoff = Backoff()
        while True:
            retry_after: float | None = None
            try:
                async with self._http.stream(
                    "GET",
                    calls.STREAM_PATH,
                    params=calls.stream_params(
                        int(last_id) if last_id and last_id.isdigit() else after, type, item, topic
                    ),
                    headers=_stream_headers(last_id),
                    timeout=httpx.Timeout(self.timeout, read=STREAM_READ_TIMEOUT),
                ) as response:
                    if response.status_code >= 400:
                        await response.aread()
                        raise problem_from(response)
                    backoff.reset()
                    decoder = Decoder()
                    async for line in response.aiter_lines():
                        message = decoder.feed(line)
                        if message is None:
                            continue
                        last_id = message.id or last_id
                        event = event_of(message)
                        if event is not None:
                            yield event
            except httpx.TransportError as error:
                if not reconnect:
                    raise TransportError(f"GET {calls.STREAM_PATH}: {error!r}") from error
            except (Unavailable, TooManyRequests) as problem:
                if not reconnect:
                    raise
                retry_after = problem.retry_after
            if not reconnect:
                return
            await asyncio.sleep(backoff.next(retry_after))
