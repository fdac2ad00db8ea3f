"""The commands the CLI and the UI send an engine, over any link, and what it answers.

Standard library only. The types are TypedDicts defined at run time (a `Command` reads its
request's required keys), so a message is the very dict that travels (as JSON) and building or
reading one costs nothing beyond the dict. (Nor does this module import annotations from
__future__: a TypedDict turns string annotations into ForwardRefs, compiling each, which doubles
what its classes cost to define.) A step's worker never imports it.
"""

from typing import Any, Generic, Literal, NotRequired, TypedDict, TypeVar

# --- commands: what the CLI and the UI ask of an engine, and what it answers ------------------
#
# A command is one request and one answer (`Command`); a stream is one request and the updates
# that follow until it ends (`Stream`: following a run, following a backfill). Each link to an
# engine carries the same wire form (see engine/client/links): a kind, a request as a JSON
# object (the payload) and an answer as JSON (the result). Every command and stream is
# handled in one table, engine/service/commands.py: by an engine, and where it can be, by the
# caller itself when no engine runs.
#
# On an engine's local socket a request is one JSON line, `SocketRequest`, and the engine
# answers with lines (`SocketAnswer`): `{"result": ...}` for a command, then, if the request
# named a stream to `follow` (with the command's answer as its request), one
# `{"update": ...}` per update; or only updates, for a stream; `{"error": ..., "refused":
# true}` when the engine refuses; `{"end": true}` last. A connection that closes before `end`
# means the engine stopped. In the database a command is a row of the command table (kind,
# payload, result or error), which the engine holding the lease takes every 0.2 s: the way
# in for an engine on another host sharing PostgreSQL. Streams never go through the table.

Req = TypeVar("Req")
Ans = TypeVar("Ans")


class _Kind(Generic[Req, Ans]):
    # A plain class, not a dataclass: every worker imports this module, and a dataclass costs
    # a few hundred microseconds to define.
    __slots__ = ("kind", "required")

    def __init__(self, kind: str, request: type[Req], answer: type[Ans]) -> None:
        self.kind = kind
        self.required: frozenset[str] = getattr(request, "__required_keys__", frozenset())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.kind!r})"

    def payload(self, data: object) -> Req:
        """`data` as this kind's request, checked for its required fields.

        Raises:
            ValueError: not a JSON object, or a required field is missing (a sender of another
                dagtop version, say).
        """
        if not isinstance(data, dict):
            raise ValueError(f"a {self.kind} request is a JSON object")
        missing = sorted(self.required - data.keys())
        if missing:
            raise ValueError(f"a {self.kind} request needs {', '.join(missing)}")
        return data  # type: ignore[return-value]  # checked above, as far as JSON can be


class Command(_Kind[Req, Ans]):
    """A command: its kind on the wire, its request type and its answer type."""


class Stream(_Kind[Req, Ans]):
    """A stream: its kind on the wire, its request type and the type of each update."""


class RunCommand(TypedDict):
    """Start a run of assets (`selection`) or of a task pipeline (`pipeline`)."""

    selection: list[str]
    pipeline: str | None
    partition: str | None
    params: dict[str, Any]
    trigger: str


class RunRef(TypedDict):
    """A run: what `run`, `rerun` and `cancel` answer, and what `rerun` and `cancel` ask."""

    run_id: str  # an answer's id is the full id; a request's may be a prefix


class FollowRun(TypedDict):
    """Follow a run until it ends, or for `timeout` seconds."""

    run_id: str
    timeout: NotRequired[float]


RunWire = dict[str, Any]
"""A run as `engine.history.views.RunView.to_wire()` writes it: `follow_run`'s update."""


class BackfillCommand(TypedDict):
    """Record a backfill of `selection` over `keys`, or over the range `first`..`last`."""

    selection: list[str]
    keys: list[str] | None
    first: NotRequired[str | None]
    last: NotRequired[str | None]
    max_parallel: int


class BackfillRef(TypedDict):
    """A backfill: what `backfill` and its cancel and resume answer, and what they ask."""

    backfill_id: str


BackfillInfo = dict[str, Any]
"""A backfill's progress as `engine.automation.backfill.progress` says it: `follow_backfill`'s
update (the last one also carries its key list, `partitions`)."""


class ToggleCommand(TypedDict):
    """Turn a schedule or a sensor on or off."""

    kind: str  # "schedule" or "sensor"
    name: str
    enabled: bool


class KeysCommand(TypedDict):
    """Add keys to, or remove keys from, dynamic partitions."""

    op: Literal["add", "remove"]
    name: str  # the DynamicPartitions' name
    keys: list[str]


class KeysChanged(TypedDict):
    """What `keys` changed: the keys added (or removed), and every key there now."""

    changed: list[str]
    keys: list[str]


class Done(TypedDict):
    ok: bool


class NoArguments(TypedDict):
    pass


class Reloaded(TypedDict):
    """What a reload found: how many assets, how many broken files."""

    assets: int
    errors: int


class RunsQuery(TypedDict):
    """The newest runs first: `limit` of them after the `offset` newest."""

    limit: int
    offset: int


class RunsFound(TypedDict):
    runs: list[RunWire]


class RunQuery(TypedDict):
    """One run, by its id or a unique prefix, with the log files of its attempts (of `step`'s
    only, when it is given)."""

    run_id: str
    step: NotRequired[str | None]


class RunFound(TypedDict):
    run: RunWire
    logs: list[dict[str, Any]]  # key, attempt, status, path: `engine.history.views.LogRef`


class PartitionsQuery(TypedDict):
    asset: str


class PartitionsFound(TypedDict):
    partitions: list[dict[str, Any]]  # `engine.history.partition_status.PartitionState` fields


class AssetQuery(TypedDict):
    """One asset's page: its newest `limit` materializations, of `partition` only if given."""

    asset: str
    partition: str | None
    limit: int


class AssetFound(TypedDict):
    page: dict[str, Any]  # `engine.history.asset_page.AssetPage.to_wire`


class Definitions(TypedDict):
    definitions: dict[str, Any]  # what `dagtop list --json` prints


RUN = Command("run", RunCommand, RunRef)
RERUN = Command("rerun", RunRef, RunRef)  # the failed, skipped and canceled steps, again
CANCEL = Command("cancel", RunRef, RunRef)
BACKFILL = Command("backfill", BackfillCommand, BackfillRef)
BACKFILL_CANCEL = Command("backfill_cancel", BackfillRef, BackfillRef)
BACKFILL_RESUME = Command("backfill_resume", BackfillRef, BackfillRef)
TOGGLE = Command("toggle", ToggleCommand, Done)
RELOAD = Command("reload", NoArguments, Reloaded)
KEYS = Command("keys", KeysCommand, KeysChanged)
# Reads, answered over the socket so that `dagtop runs` and its like import no storage.
READ_RUNS = Command("read_runs", RunsQuery, RunsFound)
READ_RUN = Command("read_run", RunQuery, RunFound)
READ_PARTITIONS = Command("read_partitions", PartitionsQuery, PartitionsFound)
READ_DEFINITIONS = Command("read_definitions", NoArguments, Definitions)
READ_ASSET = Command("read_asset", AssetQuery, AssetFound)
FOLLOW_RUN: Stream[FollowRun, RunWire] = Stream("follow_run", FollowRun, dict)
FOLLOW_BACKFILL: Stream[BackfillRef, BackfillInfo] = Stream("follow_backfill", BackfillRef, dict)


class SocketRequest(TypedDict):
    """One request on an engine's local socket."""

    op: Literal["command", "stream"]
    kind: str
    payload: dict[str, Any]
    follow: NotRequired[str]  # a command's: the stream to follow next, asked with its answer
    # The database the caller's settings name (None: the home's SQLite file). An engine of the
    # same home on another one (`DAGTOP_DATABASE_URL` set for one command) refuses.
    database: NotRequired[str | None]


class SocketAnswer(TypedDict, total=False):
    """One line of what an engine answers on its local socket."""

    result: Any
    update: Any
    error: str
    refused: bool
    end: bool


def socket_request(
    spec: Command[Req, Any] | Stream[Req, Any],
    payload: Req,
    follow: Stream[Any, Any] | None = None,
    database: str | None = None,
) -> SocketRequest:
    """The line that asks an engine for `spec` with `payload` (and to `follow` a stream next),
    on the database the caller's settings name."""
    request = SocketRequest(
        op="stream" if isinstance(spec, Stream) else "command",
        kind=spec.kind,
        payload=payload,  # type: ignore[typeddict-item]  # a TypedDict is this JSON object
        database=database,
    )
    if follow is not None:
        request["follow"] = follow.kind
    return request


def read_socket_request(message: object) -> SocketRequest:
    """A request line read from the socket, checked for its shape (not yet its payload).

    Raises:
        ValueError: it is not a request.
    """
    if not isinstance(message, dict) or message.get("op") not in ("command", "stream"):
        raise ValueError("expected {'op': 'command' or 'stream', 'kind': ..., 'payload': ...}")
    if not isinstance(message.get("kind"), str) or not isinstance(message.get("payload"), dict):
        raise ValueError("a request names its kind and carries its payload as an object")
    follow = message.get("follow")
    if follow is not None and not isinstance(follow, str):
        raise ValueError("`follow` names a stream")
    return message  # type: ignore[return-value]  # checked above
