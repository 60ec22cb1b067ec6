"""The `stateowner` command line."""

from __future__ import annotations

import json
import signal
import sys
import threading
import tomllib
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from api import terminal
from api.auth import new_token
from api.container import EVENTS_CHANNEL, Container
from api.logs import configure_logging
from api.settings import Settings
from domain.agent import Agent, hash_token
from domain.errors import DomainError
from domain.values import By, Registration
from projections import maintenance
from projections.base import View
from projections.follower import notify
from projections.poison import SKIPPED, NotDeadLettered
from store import ledger

cli = typer.Typer(
    help="stateowner: the event-sourced owner of shared agent state.", no_args_is_help=True
)
projections_cli = typer.Typer(
    help="Rebuild, verify and inspect the projections.", no_args_is_help=True
)
agents_cli = typer.Typer(help="Manage agent identities.", no_args_is_help=True)
pipelines_cli = typer.Typer(help="Define pipelines.", no_args_is_help=True)
cli.add_typer(projections_cli, name="projections")
cli.add_typer(agents_cli, name="agents")
items_cli = typer.Typer(
    help="Read items: list, show, history, the item at a version (locally, or --url/--token).",
    no_args_is_help=True,
)
cli.add_typer(pipelines_cli, name="pipelines")
cli.add_typer(items_cli, name="items")
log_cli = typer.Typer(
    help="Check the log's hash chain, export a range of it, check an export offline.",
    no_args_is_help=True,
)
cli.add_typer(log_cli, name="log")

console = Console()
errors = Console(stderr=True)
CLI_ACTOR = "operator:cli"


def _container() -> Container:
    return Container(Settings()).start()


def _by() -> By:
    return By(CLI_ACTOR, f"cli-{uuid.uuid4().hex[:12]}")


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    processes: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            envvar="STATEOWNER_PROCESSES",
            help="server processes on the one port (one per core uses every core)",
        ),
    ] = 1,
) -> None:
    """Run the API, the projection followers and the bus (one active instance of each follower
    across processes; the others stand by)."""
    from api.app import create_app
    from api.server import serve as run_server
    from api.server import serve_processes

    settings = Settings()
    if processes == 1:
        run_server(create_app(settings), settings, host, port)
    else:
        serve_processes(create_app, settings, host, port, processes)


@cli.command()
def worker(
    projections: Annotated[
        bool, typer.Option("--projections", help="run the projection followers")
    ] = False,
    bus: Annotated[bool, typer.Option("--bus", help="run the bus")] = False,
) -> None:
    """Run followers alone, without the API, for scale-out."""
    if not projections and not bus:
        errors.print("say which: --projections, --bus, or both")
        raise typer.Exit(2)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    container = Container(Settings()).start(projections=projections, bus=bus)
    console.print(f"worker running: {', '.join(f.name for f in container.followers)}")
    stop.wait()
    container.close()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
    )


def _view_classes(name: str | None) -> list[type[View]]:
    try:
        return maintenance.views_named(name)
    except KeyError as error:
        errors.print(str(error.args[0]))
        raise typer.Exit(2) from None


def _progress_callback(progress: Progress, description: str, total: int) -> Callable[[int], None]:
    task = progress.add_task(description, total=total or 1, rate="")
    done = 0

    def advance(count: int) -> None:
        nonlocal done
        done += count
        elapsed = progress.tasks[task].elapsed or 1e-9
        progress.update(task, completed=done, rate=f"{done / elapsed:,.0f} ev/s")

    return advance


@projections_cli.command("rebuild")
def rebuild(
    name: Annotated[str | None, typer.Argument(help="one projection; all when omitted")] = None,
) -> None:
    """Replay the log from position 0 into fresh tables (one pass for all), then swap them in."""
    view_classes = _view_classes(name)
    container = _container()
    app = container.app
    try:
        with _progress() as progress:
            names = ", ".join(view.name for view in view_classes)
            advance = _progress_callback(progress, f"rebuild {names}", app.position())
            positions = maintenance.rebuild_many(
                view_classes, container.database, app.recorder, app.mapper, advance
            )
    finally:
        container.close()
    for view_name, position in positions.items():
        console.print(f"rebuilt {view_name} to position {position}")


@projections_cli.command("verify")
def verify(
    name: Annotated[str | None, typer.Argument(help="one projection; all when omitted")] = None,
) -> None:
    """Rebuild into shadow tables and diff them against the live ones; exit 1 on drift."""
    view_classes = _view_classes(name)
    container = _container()
    app = container.app
    results = []
    try:
        with _progress() as progress:
            for view_class in view_classes:
                advance = _progress_callback(progress, f"verify {view_class.name}", app.position())
                verified = maintenance.verify(
                    view_class, container.database, app.recorder, app.mapper, advance
                )
                letters = container.dead_letters.all(view_class.name)
                results.append((view_class.name, verified, letters))
    finally:
        container.close()
    drift = 0
    for view_name, (position, differences), letters in results:
        for letter in letters:
            console.print(
                f"{view_name}: position {letter.position} {letter.status}"
                + (f" by {letter.skipped_by}: {letter.reason}" if letter.status == SKIPPED else "")
                + f" ({letter.event_type}: {letter.error})"
            )
        if differences:
            for difference in differences:
                console.print(f"[red]drift[/red] {difference.describe()}")
            drift += len(differences)
        else:
            console.print(
                f"{view_name}: identical to a replay of the log up to position {position}"
            )
    if drift:
        console.print(f"[red]{drift} difference(s) found[/red]")
        raise typer.Exit(1)


@projections_cli.command("skip")
def skip(
    name: Annotated[str, typer.Argument(help="the projection stopped at an event")],
    position: Annotated[int, typer.Argument(help="the dead-lettered event's position")],
    reason: Annotated[str, typer.Option(help="why it is safe to pass over (recorded)")],
) -> None:
    """Let a projection stopped at an event it cannot apply go on past it; the decision is
    recorded with the reason. Refused unless the position is its open dead letter."""
    _view_classes(name)
    container = _container()
    try:
        maintenance.skip(container.database, name, position, reason, CLI_ACTOR)
        notify(container.pool, EVENTS_CHANNEL)  # running followers go on now
    except NotDeadLettered as error:
        errors.print(f"refused: {error}")
        raise typer.Exit(2) from None
    finally:
        container.close()
    console.print(f"{name} goes on past position {position}")


@projections_cli.command("status")
def status() -> None:
    """Each follower's position, the log head and the lag."""
    container = _container()
    try:
        table = Table("projection", "position", "head", "lag")
        positions, head = container.queries.positions(list(container.views))
        for view_name, position in positions.items():
            table.add_row(view_name, str(position), str(head), str(max(head - position, 0)))
        console.print(table)
        for letter in container.dead_letters.all():
            console.print(
                f"{letter.view}: {letter.status} dead letter at position {letter.position} "
                f"({letter.event_type}): {letter.error}"
                + (f"; skipped by {letter.skipped_by}: {letter.reason}" if letter.reason else "")
            )
    finally:
        container.close()


@agents_cli.command("add")
def add_agent(
    name: Annotated[str, typer.Argument(help="the agent's unique name")],
    role: Annotated[str, typer.Option(help="admin, operator, auditor or agent")] = "agent",
    stage: Annotated[
        list[str] | None, typer.Option(help="a stage in its scope; repeat for more")
    ] = None,
) -> None:
    """Register an identity and print its token (shown this once)."""
    container = _container()
    try:
        token = new_token(Agent.create_id(name))
        registration = Registration(name, role, tuple(stage or []), hash_token(token))
        container.app.register_agent(registration, _by())
    except DomainError as error:
        errors.print(f"refused: {error}")
        raise typer.Exit(1) from None
    finally:
        container.close()
    print(token)


@pipelines_cli.command("apply")
def apply_pipeline(
    file: Annotated[Path, typer.Argument(help="a JSON or TOML spec", exists=True, dir_okay=False)],
    name: Annotated[
        str | None, typer.Option(help="pipeline name; default: the file's stem")
    ] = None,
) -> None:
    """Define or revise a pipeline from a file."""
    text = file.read_text()
    try:
        spec = tomllib.loads(text) if file.suffix == ".toml" else json.loads(text)
    except ValueError as error:
        errors.print(f"{file}: {error}")
        raise typer.Exit(1) from None
    container = _container()
    try:
        pipeline, position = container.app.put_pipeline(name or file.stem, spec, _by())
    except DomainError as error:
        errors.print(f"refused: {error}")
        raise typer.Exit(1) from None
    finally:
        container.close()
    console.print(
        f"pipeline {pipeline.name} is at version {pipeline.version} (position {position})"
    )


@log_cli.command("verify")
def log_verify(
    after: Annotated[int, typer.Option(help="start after this position, trusting its hash")] = 0,
) -> None:
    """Recompute the hash chain to the head; exit 1 naming the first position that breaks it."""
    container = _container()  # its start chains any events an earlier release appended
    try:
        result = ledger.verify(container.database.conninfo, after)
    finally:
        container.close()
    if result.broken is not None:
        errors.print(f"[red]{result.broken.describe()}[/red]")
        raise typer.Exit(1)
    console.print(
        f"chain intact: {result.events} events after position {after}, up to {result.last}"
    )


@log_cli.command("export")
def log_export(
    after: Annotated[int, typer.Option(help="export the events after this position")] = 0,
    until: Annotated[int | None, typer.Option(help="and up to this one")] = None,
    out: Annotated[
        Path | None, typer.Option(help="write here (JSON Lines); default: standard output")
    ] = None,
) -> None:
    """Write a range of the log as JSON Lines, each event with its hash, after its anchor."""
    container = _container()
    try:
        with out.open("w") if out is not None else nullcontext(sys.stdout) as stream:
            written = ledger.export(container.database.conninfo, stream, after, until)
    finally:
        container.close()
    if out is not None:
        console.print(f"exported {written} events after position {after} to {out}")


@log_cli.command("check")
def log_check(
    file: Annotated[Path, typer.Argument(help="an export", exists=True, dir_okay=False)],
) -> None:
    """Verify an export offline, without the database; exit 1 naming the first bad line."""
    with file.open() as lines:
        result = ledger.check(line.rstrip("\n") for line in lines)
    if result.problem is not None:
        errors.print(f"[red]{file}: {result.problem}[/red]")
        raise typer.Exit(1)
    console.print(
        f"{file}: chain intact, {result.events} events up to position {result.last_position}"
    )


# -- terminal views: a remote server with --url and --token, else this machine's database ----------

Url = Annotated[
    str | None,
    typer.Option("--url", envvar="STATEOWNER_URL", help="a remote server; default: local database"),
]
Token = Annotated[
    str | None,
    typer.Option(
        "--token", envvar="STATEOWNER_TOKEN", help="bearer token for --url", show_default=False
    ),
]


@contextmanager
def _source(url: str | None, token: str | None) -> Iterator[terminal.Source]:
    if url:
        if not token:
            errors.print("--url needs --token (or STATEOWNER_TOKEN)")
            raise typer.Exit(2)
        yield terminal.Remote(url, token)
        return
    container = _container()
    try:
        yield terminal.Local(container)
    finally:
        container.close()


@contextmanager
def _refusals() -> Iterator[None]:
    try:
        yield
    except terminal.Refused as error:
        errors.print(f"refused: {error}")
        raise typer.Exit(1) from None


@items_cli.command("list")
def items_list(
    pipeline: Annotated[str | None, typer.Option(help="only this pipeline")] = None,
    topic: Annotated[str | None, typer.Option(help="only this topic")] = None,
    stage: Annotated[str | None, typer.Option(help="only items at this stage")] = None,
    status: Annotated[str | None, typer.Option(help="ready, claimed, parked, halted, …")] = None,
    agent: Annotated[str | None, typer.Option(help="only items this agent holds")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="items per page")] = 50,
    cursor: Annotated[str | None, typer.Option(help="the next page's cursor")] = None,
    url: Url = None,
    token: Token = None,
) -> None:
    """Items, oldest first, filtered; prints the cursor of the next page."""
    filters = {
        "pipeline": pipeline,
        "topic": topic,
        "stage": stage,
        "status": status,
        "agent": agent,
    }
    with _refusals(), _source(url, token) as source:
        items, next_cursor = source.items(filters, limit, cursor)
    if not items:
        console.print("no items match")
        return
    console.print(terminal.items_table(items))
    if next_cursor:
        console.print(f"next page: --cursor {next_cursor}")


@items_cli.command("show")
def items_show(
    item_id: Annotated[str, typer.Argument(help="the item's id")],
    url: Url = None,
    token: Token = None,
) -> None:
    """Where an item stands now."""
    with _refusals(), _source(url, token) as source:
        item = source.item(item_id)
    console.print(terminal.item_table(item, title=item["title"]))


@items_cli.command("history")
def items_history(
    item_id: Annotated[str, typer.Argument(help="the item's id")],
    url: Url = None,
    token: Token = None,
) -> None:
    """Every event of an item: position, time, type, actor, cause, cost."""
    with _refusals(), _source(url, token) as source:
        events = source.history(item_id)
    console.print(terminal.history_table(events, title=f"item {item_id}"))


@items_cli.command("at")
def items_at(
    item_id: Annotated[str, typer.Argument(help="the item's id")],
    version: Annotated[int, typer.Argument(min=1, help="how many of its events to fold")],
    url: Url = None,
    token: Token = None,
) -> None:
    """The item as it stood at a version."""
    with _refusals(), _source(url, token) as source:
        item = source.at(item_id, version)
    console.print(terminal.item_table(item, title=f"{item['title']} at version {version}"))


@cli.command()
def tail(
    type: Annotated[
        list[str] | None, typer.Option("--type", help="only events of this type; repeat for more")
    ] = None,
    item: Annotated[str | None, typer.Option(help="only this item's events")] = None,
    topic: Annotated[str | None, typer.Option(help="only events of this topic's items")] = None,
    after: Annotated[
        int | None, typer.Option(min=0, help="start after this position; default: from now")
    ] = None,
    count: Annotated[int | None, typer.Option(min=1, help="stop after this many events")] = None,
    json_lines: Annotated[bool, typer.Option("--json", help="one JSON event per line")] = False,
    url: Url = None,
    token: Token = None,
) -> None:
    """Follow the log as it grows (the live feed, /v1/stream, when --url is given)."""
    with _refusals(), _source(url, token) as source, suppress(KeyboardInterrupt):
        events = source.tail(after, list(type or []), item, topic)
        terminal.render_tail(console, events, count, json_lines)


def main() -> None:
    settings = Settings()
    configure_logging(settings.log_json, settings.log_level)
    cli(prog_name="stateowner")


if __name__ == "__main__":
    main()
    sys.exit(0)
