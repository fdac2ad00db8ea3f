"""Every command and stream an engine answers, each in one place: its request and answer types
(engine.protocol), what an engine does with it, and what is done in the caller's process when
no engine runs (where that can be done at all; otherwise the command refuses with NoEngine).

Every link reaches a command through this table (engine.client.links): an embedded engine
calls `engine` here directly, the socket and the database's command table end in `answer` and
`follow` below, and a process with no engine calls `here`. A stream (following a run or a
backfill) also says how to `watch` it in storage, for an engine reachable only through the
database. Adding a command is a request and an answer type in engine.protocol and one entry
here; the client's links carry it as they carry every other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from engine.errors import EngineError
from engine.history.plan import RunRequest
from engine.protocol import commands as protocol
from engine.protocol.commands import (
    BackfillCommand,
    BackfillInfo,
    BackfillRef,
    Done,
    FollowRun,
    KeysChanged,
    NoArguments,
    Reloaded,
    RunWire,
    ToggleCommand,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SAEngine

    from engine.loading.manifest import Manifest
    from engine.service.events import EngineEvent

Req = TypeVar("Req")
Ans = TypeVar("Ans")
Send = Callable[[Ans], None]


class Target(Protocol):
    """What a command asks of whoever does its work: an engine, or this process."""

    @property
    def db(self) -> SAEngine: ...

    def manifest(self) -> Manifest: ...

    def submit(self, request: RunRequest) -> str: ...

    def rerun(self, run_id: str) -> str: ...

    def cancel(self, run_id: str) -> str: ...

    def backfill(self, selection: Sequence[str], keys: Sequence[str], max_parallel: int) -> str: ...

    def cancel_backfill(self, backfill_id: str) -> str: ...

    def resume_backfill(self, backfill_id: str) -> str: ...

    def set_enabled(self, kind: str, name: str, enabled: bool) -> None: ...

    def change_keys(self, op: str, name: str, keys: Sequence[str]) -> KeysChanged: ...


class EngineHandle(Target, Protocol):
    """An engine as its commands and its socket see it (`engine.service.daemon.Engine`)."""

    @property
    def running(self) -> bool: ...

    @property
    def timezone(self) -> str | None:
        """The zone of its schedules (its settings' `timezone`)."""
        ...

    @property
    def database_setting(self) -> str | None:
        """The database its settings name (None: the home's SQLite file)."""
        ...

    def subscribe(self, callback: Callable[[EngineEvent], None]) -> Callable[[], None]: ...

    def reload(self, initial: bool = False) -> Manifest: ...

    def follow_run(self, run_id: str, timeout: float | None = None) -> Iterator[RunWire]: ...

    def follow_backfill(self, backfill_id: str) -> Iterator[BackfillInfo]: ...


class Here(Target, Protocol):
    """This process doing a command's work, no engine being up
    (`engine.service.in_process.InProcess`)."""

    def follow_run(self, request: FollowRun, on_update: Send[RunWire] | None) -> RunWire: ...

    def follow_backfill(
        self, backfill_id: str, on_update: Send[BackfillInfo] | None
    ) -> BackfillInfo: ...


@dataclass(frozen=True, slots=True)
class Handler(Generic[Req, Ans]):
    """A command: what an engine does (`engine`), and what this process does with no engine
    up (`here`; None: it needs an engine)."""

    command: protocol.Command[Req, Ans]
    engine: Callable[[EngineHandle, Req], Ans]
    here: Callable[[Here, Req], Ans] | None = None


@dataclass(frozen=True, slots=True)
class StreamHandler(Generic[Req, Ans]):
    """A stream: its updates from an engine (`engine`, until it ends), followed in storage
    (`watch`), or made here (`here`, with no engine up). `watch` and `here` hand each update
    to their callback and return the last."""

    stream: protocol.Stream[Req, Ans]
    engine: Callable[[EngineHandle, Req], Iterator[Ans]]
    watch: Callable[[SAEngine, Req, Send[Ans] | None], Ans]
    here: Callable[[Here, Req, Send[Ans] | None], Ans]


def _keys(target: Target, cmd: BackfillCommand) -> list[str]:
    from engine.automation.backfill import backfill_keys
    from engine.history.dynamic import bind
    from engine.storage.db import read_scope

    with read_scope(target.db) as session:  # dynamic partitions' keys as stored now
        manifest = bind(session, target.manifest())
    return backfill_keys(manifest, cmd["selection"], cmd["keys"], cmd.get("first"), cmd.get("last"))


def _watch_run(db: SAEngine, request: FollowRun, send: Send[RunWire] | None) -> RunWire:
    from engine.service.watch import watch_run

    watched = watch_run(db, request, send)
    assert watched is not None  # only an orphaned watch stops early
    return watched


def _watch_backfill(
    db: SAEngine, request: BackfillRef, send: Send[BackfillInfo] | None
) -> BackfillInfo:
    from engine.service.watch import watch_backfill

    return watch_backfill(db, request, send)


def _toggle(target: Target, cmd: ToggleCommand) -> Done:
    target.set_enabled(cmd["kind"], cmd["name"], cmd["enabled"])
    return {"ok": True}


def _read_runs(engine: EngineHandle, query: protocol.RunsQuery) -> protocol.RunsFound:
    from engine.service import reads

    views = reads.recent_runs(engine.db, query["limit"], query["offset"])
    return {"runs": [view.to_wire() for view in views]}


def _read_run(engine: EngineHandle, query: protocol.RunQuery) -> protocol.RunFound:
    from engine.service import reads

    view, refs = reads.run_logs(engine.db, query["run_id"], query.get("step"))
    return {"run": view.to_wire(), "logs": [reads.log_wire(ref) for ref in refs]}


def _read_partitions(
    engine: EngineHandle, query: protocol.PartitionsQuery
) -> protocol.PartitionsFound:
    from dataclasses import asdict

    from engine.service import reads

    states = reads.partitions(engine.db, engine.manifest(), query["asset"])
    return {"partitions": [asdict(state) for state in states]}


def _read_definitions(engine: EngineHandle, _: NoArguments) -> protocol.Definitions:
    from engine.service import reads

    return {"definitions": reads.definitions(engine.db, engine.manifest(), engine.timezone)}


def _read_asset(engine: EngineHandle, query: protocol.AssetQuery) -> protocol.AssetFound:
    from engine.service import reads

    page = reads.asset_page(
        engine.db, engine.manifest(), query["asset"], query["partition"], query["limit"]
    )
    return {"page": page.to_wire()}


def _reload(engine: EngineHandle, _: NoArguments) -> Reloaded:
    manifest = engine.reload()
    return {"assets": len(manifest.assets), "errors": len(manifest.errors)}


COMMANDS: dict[str, Handler[Any, Any]] = {
    handler.command.kind: handler
    for handler in (
        Handler(
            protocol.RUN,
            engine=lambda e, cmd: {"run_id": e.submit(RunRequest.from_command(cmd))},
            here=lambda h, cmd: {"run_id": h.submit(RunRequest.from_command(cmd))},
        ),
        Handler(
            protocol.RERUN,
            engine=lambda e, ref: {"run_id": e.rerun(ref["run_id"])},
            here=lambda h, ref: {"run_id": h.rerun(ref["run_id"])},
        ),
        Handler(
            protocol.CANCEL,
            engine=lambda e, ref: {"run_id": e.cancel(ref["run_id"])},
            here=lambda h, ref: {"run_id": h.cancel(ref["run_id"])},
        ),
        Handler(
            protocol.BACKFILL,
            engine=lambda e, cmd: {
                "backfill_id": e.backfill(cmd["selection"], _keys(e, cmd), cmd["max_parallel"])
            },
            here=lambda h, cmd: {
                "backfill_id": h.backfill(cmd["selection"], _keys(h, cmd), cmd["max_parallel"])
            },
        ),
        Handler(
            protocol.BACKFILL_CANCEL,
            engine=lambda e, ref: {"backfill_id": e.cancel_backfill(ref["backfill_id"])},
            here=lambda h, ref: {"backfill_id": h.cancel_backfill(ref["backfill_id"])},
        ),
        Handler(
            protocol.BACKFILL_RESUME,
            engine=lambda e, ref: {"backfill_id": e.resume_backfill(ref["backfill_id"])},
            here=lambda h, ref: {"backfill_id": h.resume_backfill(ref["backfill_id"])},
        ),
        Handler(protocol.TOGGLE, engine=_toggle, here=_toggle),
        Handler(protocol.RELOAD, engine=_reload),  # nothing to reload with no engine up
        Handler(
            protocol.KEYS,
            engine=lambda e, cmd: e.change_keys(cmd["op"], cmd["name"], cmd["keys"]),
            here=lambda h, cmd: h.change_keys(cmd["op"], cmd["name"], cmd["keys"]),
        ),
        # Reads: with no engine up (or none on this machine) the client reads storage itself.
        Handler(protocol.READ_RUNS, engine=_read_runs),
        Handler(protocol.READ_RUN, engine=_read_run),
        Handler(protocol.READ_PARTITIONS, engine=_read_partitions),
        Handler(protocol.READ_DEFINITIONS, engine=_read_definitions),
        Handler(protocol.READ_ASSET, engine=_read_asset),
    )
}

STREAMS: dict[str, StreamHandler[Any, Any]] = {
    handler.stream.kind: handler
    for handler in (
        StreamHandler(
            protocol.FOLLOW_RUN,
            engine=lambda e, req: e.follow_run(req["run_id"], req.get("timeout")),
            watch=_watch_run,
            here=lambda h, req, send: h.follow_run(req, send),
        ),
        StreamHandler(
            protocol.FOLLOW_BACKFILL,
            engine=lambda e, ref: e.follow_backfill(ref["backfill_id"]),
            watch=_watch_backfill,
            here=lambda h, ref, send: h.follow_backfill(ref["backfill_id"], send),
        ),
    )
}


def command(kind: str) -> Handler[Any, Any]:
    """The handler of the command `kind`.

    Raises:
        EngineError: no command has that kind.
    """
    handler = COMMANDS.get(kind)
    if handler is None:
        raise EngineError(f"unknown command {kind!r}")
    return handler


def stream(kind: str) -> StreamHandler[Any, Any]:
    """The handler of the stream `kind`.

    Raises:
        EngineError: no stream has that kind.
    """
    handler = STREAMS.get(kind)
    if handler is None:
        raise EngineError(f"unknown stream {kind!r}")
    return handler


def answer(engine: EngineHandle, kind: str, payload: object) -> Any:
    """An engine's answer to a command that came as data (over the socket, or from the
    database's command table), checked against its request type first.

    Raises:
        EngineError: an unknown kind, a malformed request, or the command's own refusal.
    """
    handler = command(kind)
    return handler.engine(engine, _payload(handler.command, payload))


def follow(engine: EngineHandle, kind: str, payload: object) -> Iterator[Any]:
    """An engine's updates of a stream that came as data (over the socket).

    Raises:
        EngineError: an unknown kind or a malformed request.
    """
    handler = stream(kind)
    return handler.engine(engine, _payload(handler.stream, payload))


def _payload(spec: protocol.Command[Req, Any] | protocol.Stream[Req, Any], payload: object) -> Req:
    try:
        return spec.payload(payload)
    except ValueError as exc:
        raise EngineError(str(exc), title="Malformed request") from None
