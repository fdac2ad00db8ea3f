"""The worker's events on the wire: each kind round-trips, and nothing else is taken for one."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from engine.protocol.worker import (
    EventKind,
    FailureKind,
    decode_event,
    encode_event,
    reported_children,
)
from tests.engine.test_executor import log_text, make_project, materializations, stored_value

if TYPE_CHECKING:
    from engine.protocol.worker import ErrorEvent, Event, FinishedEvent, MetadataEvent

T = 1_700_000_000.25

EVENTS: list[Event] = [
    {"e": EventKind.STARTED, "t": T, "pid": 4121},
    {"e": EventKind.LOG, "t": T, "level": "WARNING", "message": "low on disk"},
    {"e": EventKind.METADATA, "t": T, "data": {"rows": 3, "nested": {"a": [1, 2]}}},
    {"e": EventKind.OUTPUT, "t": T, "path": "/v/a/_/r.1.pickle", "size": 17},
    {"e": EventKind.OUTPUT, "t": T, "path": "/v/a/2025-01-05/r.1.pickle", "size": 17,
     "partition": "2025-01-05"},
    {"e": EventKind.CHECK, "t": T, "name": "positive", "passed": False, "metadata": {"min": -1},
     "description": None, "error": None, "blocking": True},
    {"e": EventKind.FINISHED, "t": T, "peak_rss": 52_428_800, "children": []},
    {"e": EventKind.ERROR, "t": T, "kind": FailureKind.TYPE, "message": "ValueError: no",
     "traceback": "Traceback ...", "peak_rss": None, "children": None},
    {"e": EventKind.RESULT, "t": T, "value": ["train", "baseline"]},  # a branch's choice
    {"e": EventKind.RESULT, "t": T, "value": False},  # a short-circuit's verdict
    {"e": EventKind.RESULT, "t": T, "value": 3},  # the length of a list mapped over
]  # fmt: skip


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: str(e["e"]))
def test_every_event_kind_round_trips(event: Event) -> None:
    line = encode_event(event)
    assert line.endswith("\n") and "\n" not in line[:-1]
    assert decode_event(line.encode()) == event


def test_the_wire_form_is_plain_json_with_the_kind_and_time_first() -> None:
    line = encode_event(EVENTS[3])
    assert json.loads(line) == {
        "e": "output", "t": T, "path": "/v/a/_/r.1.pickle", "size": 17,
    }  # fmt: skip
    assert list(json.loads(line))[:2] == ["e", "t"]


def test_a_value_json_cannot_hold_travels_as_its_repr() -> None:
    event: MetadataEvent = {"e": EventKind.METADATA, "t": T, "data": {"when": {1, 2}}}
    decoded = decode_event(encode_event(event))
    assert decoded is not None and decoded["e"] == EventKind.METADATA
    assert decoded["data"] == {"when": "{1, 2}"}


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1, 2]",
        b'"output"',
        b'{"t": 1.0, "path": "p", "size": 1}',  # no kind
        b'{"e": ["output"], "t": 1.0}',  # a kind that is not a string
        b'{"e": "exploded", "t": 1.0}',  # an unknown kind
        b'{"e": "output", "path": "p", "size": 1}',  # no time
        b'{"e": "output", "t": "now", "path": "p", "size": 1}',
        b'{"e": "output", "t": 1.0}',  # no path
        b'{"e": "output", "t": 1.0, "path": "p", "size": "big"}',
        b'{"e": "output", "t": 1.0, "path": "p", "size": 1, "partition": 5}',
        b'{"e": "check", "t": 1.0, "name": "c"}',
        b'{"e": "error", "t": 1.0, "kind": "exception", "message": "m"}',
        b'{"e": "error", "t": 1.0, "kind": "gremlins", "message": "m", "traceback": "",'
        b' "peak_rss": null, "children": null}',
        b'{"e": "finished", "t": 1.0, "peak_rss": null, "children": 7}',
        b'{"e": "result", "t": 1.0, "value": "train"}',  # a branch's ids come as a list
        b'{"e": "result", "t": 1.0}',
    ],
)
def test_anything_else_is_not_an_event(line: bytes) -> None:
    assert decode_event(line) is None


def test_the_children_come_from_the_last_word() -> None:
    assert reported_children(EVENTS[:6]) == (None, None)  # it did not get to say
    assert reported_children(EVENTS[:7]) == ([], T)
    unknown: FinishedEvent = {"e": EventKind.FINISHED, "t": T, "peak_rss": None, "children": None}
    assert reported_children([*EVENTS[:6], unknown]) == (None, None)
    named: ErrorEvent = {
        "e": EventKind.ERROR, "t": T + 1, "kind": FailureKind.EXCEPTION, "message": "m",
        "traceback": "", "peak_rss": None, "children": [12, 13],
    }  # fmt: skip
    assert reported_children([*EVENTS[:6], named]) == ([12, 13], T + 1)


FORGER = """
import gc

from engine import asset


@asset
def forger():
    # User code shares the worker's process: it can reach the events pipe.
    from engine.executor.worker import Reporter

    reporter = next(o for o in gc.get_objects() if isinstance(o, Reporter))
    reporter._fh.write(
        '{"e": "output", "t": 1.0}\\n'
        '{"e": "check", "t": 1.0, "passed": false, "blocking": true}\\n'
        '{"e": ["started"], "t": 1.0}\\n'
        '{"e": "finished", "t": 1.0, "peak_rss": "lots", "children": null}\\n'
    )
    return 42
"""


@pytest.mark.serial
@pytest.mark.timeout(60)
def test_events_forged_by_the_step_are_ignored(tmp_path: Path) -> None:
    client = make_project(tmp_path)
    (tmp_path / "project" / "pipelines" / "forger.py").write_text(textwrap.dedent(FORGER))

    view = client.materialize(["forger"])

    assert view.status == "success"
    assert [m.value_path is not None for m in materializations(client, "forger")] == [True]
    assert stored_value(client, "forger") == 42
    assert log_text(view, "forger").rstrip().endswith("dagtop: step succeeded")
