"""The messages between the coordinator and a step's worker: the spec it runs, the events it
sends back, and what the fork server and a Dask task report.

Standard library only, and cheap to import: a step's worker imports this before it runs user
code, and so does a Dask worker. A message is a plain dict, the very dict that travels (as a
JSON line, or pickled by Dask). Its type is a TypedDict that exists for the type checker only
(`if TYPE_CHECKING`): a module that names one imports it under TYPE_CHECKING too, and builds
the message as a dict literal, which mypy checks against it. Defined at run time, the ~20
TypedDicts would double what importing this module costs every spawned worker (+0.5 ms), and
dataclasses would cost many times that. What runs is here for real: the enums, and the
functions that write and read the wire form.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Literal, NotRequired, TypedDict

# --- the worker: its spec, and the events it sends --------------------------------------------
#
# The coordinator writes a `WorkerSpec` as a JSON file and starts
# `python -m engine.executor.worker SPEC_PATH EVENTS_FD` (or forks it from the fork server);
# the worker answers with one JSON object per line on the events pipe, `encode_event` and
# `decode_event` below. Every event carries its kind (`e`) and when it was sent (`t`).


class EventKind(StrEnum):
    """What a worker's event says."""

    STARTED = "started"
    LOG = "log"  # a warning or error the step logged
    METADATA = "metadata"  # `context.add_metadata`
    OUTPUT = "output"  # a value stored (one per partition key for a ranged asset)
    CHECK = "check"  # a check's result
    RESULT = "result"  # what a task's return value decides: a branch, a short-circuit, a map
    FINISHED = "finished"  # the step succeeded: always the last event
    ERROR = "error"  # the step failed: always the last event


class FailureKind(StrEnum):
    """Why a worker reports that its step failed (an `ErrorEvent`'s `kind`)."""

    IMPORT = "import"  # the pipeline file did not import, or no longer defines the step
    INPUT = "input"  # an upstream value could not be loaded
    EXIT = "exit"  # the step called sys.exit
    INTERRUPT = "interrupt"  # SIGINT
    EXCEPTION = "exception"  # the step raised
    TYPE = "type"  # the value does not match the asset's return annotation
    OUTPUT = "output"  # the value could not be stored, or a range's values are wrong
    RESOURCE = "resource"  # a resource the step names failed to build
    CONFIG = "config"  # the run's params do not make the step's typed config


if TYPE_CHECKING:

    class SingleInput(TypedDict):
        """An upstream value in one file."""

        mode: Literal["single"]
        path: str
        io: str  # a built-in IO manager's name, or the label of the upstream's own
        file: NotRequired[str]  # where the upstream is defined, to find its own IO manager
        asset: NotRequired[str]

    class PartitionsInput(TypedDict):
        """An upstream's partitions, one file each: the step gets {key: value}."""

        mode: Literal["partitions"]
        items: dict[str, str]  # partition key -> value path
        io: str
        file: str
        asset: str

    class ItemInput(TypedDict):
        """One element of an upstream task's list: a mapped instance's parameter."""

        mode: Literal["item"]
        path: str
        io: str
        index: int

    class ListInput(TypedDict):
        """The values of a mapped task's instances, in order: the step gets a list."""

        mode: Literal["list"]
        paths: list[str]
        io: str

    Input = SingleInput | PartitionsInput | ItemInput | ListInput

    class CheckRef(TypedDict):
        """A check the worker runs on the asset's value, found by name in its file."""

        file: str
        name: str
        blocking: bool

    class ResourceRef(TypedDict):
        """A resource the step names: found by name in its file, built with its settings."""

        file: str
        config: dict[str, Any]

    class _StepSpec(TypedDict):
        key: str  # the asset's name, or the task's id
        root: str  # the pipelines folder
        file: str  # the pipeline file that defines the step, relative to `root`
        run_id: str
        attempt: int
        partition: str | None
        params: dict[str, Any]
        home: str
        inputs: dict[str, Input]
        output_stem: str  # where the value goes, without the IO manager's extension
        shared_dir: NotRequired[str]  # `context.shared_dir`: a folder or an fsspec URL

    class AssetStepSpec(_StepSpec):
        """An asset's attempt."""

        kind: Literal["asset"]
        checks: list[CheckRef]
        # A ranged asset (a backfill policy): the keys it is called with, and where each key's
        # value goes. Absent otherwise.
        partitions: NotRequired[list[str]]
        output_stems: NotRequired[dict[str, str]]
        # The resources its parameters name, by name; absent when none.
        resources: NotRequired[dict[str, ResourceRef]]
        # The parameter that receives the typed config (built from `params`); absent if none.
        config_param: NotRequired[str]

    class TaskStepSpec(_StepSpec):
        """A Python task's attempt."""

        kind: Literal["task"]
        pipeline: str
        # What the coordinator must learn from the return value (a `ResultEvent`), if anything:
        # the ids a branch chose (checked against `downstream`), whether a short-circuit
        # lets its downstream run, or how many elements a list that a task maps over has.
        result: NotRequired[Literal["branch", "short_circuit", "count"]]
        downstream: NotRequired[list[str]]

    WorkerSpec = AssetStepSpec | TaskStepSpec

    class StartedEvent(TypedDict):
        e: Literal[EventKind.STARTED]
        t: float
        pid: int

    class LogEvent(TypedDict):
        e: Literal[EventKind.LOG]
        t: float
        level: str
        message: str

    class MetadataEvent(TypedDict):
        e: Literal[EventKind.METADATA]
        t: float
        data: dict[str, Any]

    class OutputEvent(TypedDict):
        e: Literal[EventKind.OUTPUT]
        t: float
        path: str  # a path, or a URL (values_dir)
        size: int
        partition: NotRequired[str]  # the key of this value, for a ranged asset only

    class CheckEvent(TypedDict):
        e: Literal[EventKind.CHECK]
        t: float
        name: str
        passed: bool
        metadata: dict[str, Any]
        description: str | None
        error: str | None  # the check raised, returned nonsense, or is gone
        blocking: bool

    class ResultEvent(TypedDict):
        """What the return value decides: the ids a branch chose (`list[str]`), whether a
        short-circuit passes (`bool`), or the length of a list mapped over (`int`)."""

        e: Literal[EventKind.RESULT]
        t: float
        value: list[str] | bool | int

    class FinishedEvent(TypedDict):
        e: Literal[EventKind.FINISHED]
        t: float
        peak_rss: int | None
        children: list[int] | None  # the worker's children as it ends; None: it cannot tell

    class ErrorEvent(TypedDict):
        e: Literal[EventKind.ERROR]
        t: float
        kind: FailureKind
        message: str
        traceback: str
        peak_rss: int | None
        children: list[int] | None

    Event = (
        StartedEvent
        | LogEvent
        | MetadataEvent
        | OutputEvent
        | CheckEvent
        | ResultEvent
        | FinishedEvent
        | ErrorEvent
    )
    LastEvent = FinishedEvent | ErrorEvent


_NUMBER = (int, float)
_OPTIONAL_STR = (str, type(None))
_OPTIONAL_INT = (int, type(None))
_OPTIONAL_LIST = (list, type(None))
# Each kind's fields, and the types they must have.
_FIELDS: dict[EventKind, dict[str, tuple[type, ...]]] = {
    EventKind.STARTED: {"pid": (int,)},
    EventKind.LOG: {"level": (str,), "message": (str,)},
    EventKind.METADATA: {"data": (dict,)},
    EventKind.OUTPUT: {"path": (str,), "size": (int,)},
    EventKind.CHECK: {
        "name": (str,), "passed": (bool,), "metadata": (dict,), "description": _OPTIONAL_STR,
        "error": _OPTIONAL_STR, "blocking": (bool,),
    },
    EventKind.RESULT: {"value": (list, bool, int)},
    EventKind.FINISHED: {"peak_rss": _OPTIONAL_INT, "children": _OPTIONAL_LIST},
    EventKind.ERROR: {
        "kind": (str,), "message": (str,), "traceback": (str,), "peak_rss": _OPTIONAL_INT,
        "children": _OPTIONAL_LIST,
    },
}  # fmt: skip
# Fields that may be absent, and their types when present.
_OPTIONAL: dict[EventKind, dict[str, tuple[type, ...]]] = {EventKind.OUTPUT: {"partition": (str,)}}
_KINDS = {kind.value: kind for kind in EventKind}
_FAILURES = {kind.value: kind for kind in FailureKind}


def encode_event(event: Event) -> str:
    """One event's line on the events pipe. A value JSON cannot hold (in metadata, say) is
    sent as its repr."""
    return json.dumps(event, default=repr) + "\n"


def decode_event(line: bytes | str) -> Event | None:
    """The event on one line of the events pipe, or None when it is not one: not JSON, an
    unknown kind, a field missing or of the wrong type. User code shares the worker's process:
    nothing it writes there may break the coordinator."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("e"), str):
        return None
    kind = _KINDS.get(data["e"])
    if kind is None or not isinstance(data.get("t"), _NUMBER):
        return None
    for name, types in _FIELDS[kind].items():
        if name not in data or not isinstance(data[name], types):
            return None
    for name, types in _OPTIONAL.get(kind, {}).items():
        if name in data and not isinstance(data[name], types):
            return None
    data["e"] = kind
    if kind is EventKind.ERROR:
        failure = _FAILURES.get(data["kind"])
        if failure is None:
            return None
        data["kind"] = failure
    return cast("Event", data)


def last_event(events: Sequence[Event]) -> LastEvent | None:
    """The worker's last word, `finished` or `error`; None when it did not get to say it."""
    for event in events[::-1]:
        if event["e"] == EventKind.FINISHED:
            return event
        if event["e"] == EventKind.ERROR:
            return event
    return None


def task_result(events: Sequence[Event]) -> list[str] | bool | int | None:
    """What the task's return value decided (its `result` event), or None when it sent none."""
    for event in events[::-1]:
        if event["e"] == EventKind.RESULT:
            return event["value"]
    return None


def reported_children(events: Sequence[Event]) -> tuple[list[int] | None, float | None]:
    """The children the worker named in its last event, and when it sent it; None when it did
    not say (it died first, or could not tell)."""
    last = last_event(events)
    if last is None or last["children"] is None:
        return None, None
    return [pid for pid in last["children"] if isinstance(pid, int)], last["t"]


# --- the fork server: a request to fork a worker, and its exit report --------------------------
#
# One JSON object per datagram on a SOCK_SEQPACKET socket pair (see executor/forkserver.py).


if TYPE_CHECKING:

    class ForkRequest(TypedDict):
        """Fork a worker; the log file, the events pipe and a reply pipe travel as SCM_RIGHTS."""

        id: int  # the attempt's id
        spec: str  # the path of its `WorkerSpec`
        cwd: str
        env: dict[str, str]

    class ExitReport(TypedDict):
        """A forked worker exited."""

        id: int | None
        exit: int  # its pid
        code: int  # as subprocess reports it: negative for a signal
        cpu: float  # user and system CPU seconds, with the children it waited for


# --- a step attempt on a Dask worker: the task's payload, and the batches it streams back ------
#
# Pickled by Dask: the payload is the task's argument; the batches travel on one
# `distributed.Queue` per executor (see executor/dask_task.py and dask_executor.py).


if TYPE_CHECKING:

    class DaskPayload(TypedDict):
        """What the Dask task needs to run one attempt on its worker."""

        key: str  # the Dask task's key, which names the attempt in every batch
        attempt: int  # the attempt's id
        queue: str  # the distributed.Queue to stream batches on
        cancel: str  # the distributed.Event that asks the task to stop the step
        claim: str  # the distributed.Event the first run of the task sets (see dask_task)
        argv: list[str]
        spec: WorkerSpec | None  # None for a shell command step
        cwd: str
        env: dict[str, str]  # only what the step adds to the worker's own environment
        timeout: float | None
        memory_limit: int | None

    class Placement(TypedDict):
        """Where a Dask worker started the attempt."""

        host: str
        worker: str  # the Dask worker's address
        pid: int
        create_time: float | None

    SampleRow = tuple[float, float, float, int, int, int, int, int]
    """A resource sample as `monitor.Sample`'s fields in order (t, cpu_percent, cpu_seconds,
    rss_bytes, read_bytes, write_bytes, threads, children)."""

    class AttemptEnd(TypedDict):
        """How the attempt's process ended on the Dask worker (or why it never ran)."""

        code: int | None  # its exit status; None when it did not start or was lost
        cpu: NotRequired[float | None]
        stats: NotRequired[dict[str, Any] | None]  # `monitor.TreeStats` as a dict
        error: NotRequired[str]  # why there is no exit status

    class Batch(TypedDict, total=False):
        """One message on the executor's queue: what is new about one attempt, or the pump's own
        `tick` (look at the tasks now) and `stop`."""

        a: str  # the attempt's task key
        placed: Placement  # first
        log: bytes  # new bytes of the step's log
        events: bytes  # new bytes of the events pipe: lines for `decode_event`
        samples: list[SampleRow]  # one a second
        end: AttemptEnd  # last
        tick: bool
        stop: bool

    class TaskResult(TypedDict, total=False):
        """What the Dask task returns: the attempt's end (sent on the queue too, where it may be
        lost with the queue), or, for a rerun of the task after its first worker died,
        `superseded` (it started nothing)."""

        end: AttemptEnd
        superseded: bool
        worker: str  # the address of the worker that ran the superseded rerun
