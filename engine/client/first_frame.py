"""The UI's first frame, read by a second process while the first one imports the UI.

`dagtop` spends most of its first second importing: the terminal UI (Textual) and storage
(SQLAlchemy and SQLModel), a few tenths of a second of one core each. An import holds the
interpreter's lock, so two threads cannot share that work; two processes can. `FirstReads`
starts `python -m engine.client.first_frame`, which imports storage, checks the database and
reads what the home screen shows first (the newest runs, every asset's and task's status) on
another core while this process imports the UI. The UI draws from that answer and imports
storage itself only after its first frame.

Whatever goes wrong with the helper (it cannot start, dies, or answers nothing usable in
time) costs only the time: the UI then checks and reads storage itself, as it would without
it. The helper writes nothing but its answer, and is gone before the UI closes.

The answer is two JSON lines on the helper's stdout: the database's verdict (`{"ok": true}`
or the error), then the reads (or the error that stopped them).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.errors import NO_PIPELINES, EngineError, StorageError
from engine.history.views import NodeStatus, RunView
from engine.status import PartitionStatus, StepStatus

if TYPE_CHECKING:
    from engine.client import Client

WAIT = 20.0
"""Seconds to wait for each of the helper's two answers before reading storage here."""
FIRST_PAGE = 200
"""The newest runs the helper reads: the UI's runs table's first page."""


@dataclass(frozen=True, slots=True)
class FirstFrame:
    """What the home screen reads first, as the helper read it."""

    since: float
    """When the reads began: a change after it is read again by the next refresh."""
    runs: list[RunView]
    assets: dict[str, NodeStatus] | None
    """Every asset's status; None when the pipelines folder is missing."""
    tasks: dict[str, dict[str, NodeStatus]]
    """Every task pipeline's tasks' statuses."""


class FirstReads:
    """The helper process, started at once; `verdict` and then `result` wait for its answers.

    Args:
        client: The UI's client (the helper opens the same home, pipelines and database).
        page: How many of the newest runs to read.
    """

    def __init__(self, client: Client, page: int) -> None:
        self._client = client
        self._proc: subprocess.Popen[bytes] | None
        command = [sys.executable, "-m", "engine.client.first_frame",
                   str(client.paths.home), str(client.paths.pipelines), str(page)]  # fmt: skip
        try:
            self._proc = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, cwd=client.paths.project,
            )  # fmt: skip
        except OSError:
            self._proc = None

    def verdict(self) -> bool:
        """Wait for the database's check (SQLite's quick check, as an engine's start does);
        True if a daemon runs this home's engine (the UI then attaches to it).

        Raises:
            StorageError: the database is damaged or cannot be opened (the one-line message).
        """
        answer = self._answer()
        if answer is None:  # no verdict from the helper: ask here
            self._client.verify_db()
            return self._client.daemon() is not None
        if "error" in answer:
            self.close()
            raise StorageError(answer["error"], title=answer.get("title"))
        return bool(answer.get("daemon"))

    def result(self) -> FirstFrame | None:
        """The helper's reads, or None (then the caller reads storage itself)."""
        answer = self._answer()
        self.close()
        if answer is None or "error" in answer:
            return None
        try:
            return FirstFrame(
                since=float(answer["since"]),
                runs=[RunView.from_wire(wire) for wire in answer["runs"]],
                assets=None if answer["assets"] is None else _statuses(answer["assets"]),
                tasks={name: _statuses(found) for name, found in answer["tasks"].items()},
            )
        except (KeyError, TypeError, ValueError):
            return None  # not an answer this dagtop understands

    def close(self) -> None:
        """End the helper if it still runs (it never outlives the UI)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

    def _answer(self) -> dict[str, Any] | None:
        """The helper's next line as JSON; None if it ended, or said nothing in WAIT s."""
        proc = self._proc
        if proc is None or proc.stdout is None:
            return None
        ready, _, _ = select.select([proc.stdout], [], [], WAIT)
        line = proc.stdout.readline() if ready else b""
        try:
            answer = json.loads(line)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            self.close()
            return None
        return answer


def _statuses(found: dict[str, dict[str, Any]]) -> dict[str, NodeStatus]:
    return {key: _node_status(wire) for key, wire in found.items()}


def _node_status(wire: dict[str, Any]) -> NodeStatus:
    status = wire["status"]
    return NodeStatus(
        key=wire["key"],
        status=PartitionStatus.STALE if status == PartitionStatus.STALE else StepStatus(status),
        run_id=wire["run_id"],
        partition=wire["partition"],
        at=wire["at"],
        reason=wire["reason"],
    )


def _node_wire(node: NodeStatus) -> dict[str, Any]:
    return {"key": node.key, "status": str(node.status), "run_id": node.run_id,
            "partition": node.partition, "at": node.at, "reason": node.reason}  # fmt: skip


def _error(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, EngineError):
        return {"error": exc.msg, "title": exc.title}
    return {"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}


def _reads(client: Client, page: int) -> dict[str, Any]:
    """What the home screen reads first (tui/screens/home.py), as JSON."""
    since = time.time()
    runs = client.runs(limit=page)
    try:
        manifest = client.load()
        assets = client.node_statuses()
        tasks = {name: client.node_statuses(pipeline=name) for name in sorted(manifest.pipelines)}
    except EngineError as exc:
        if exc.title != NO_PIPELINES:
            raise
        return {"since": since, "runs": [r.to_wire() for r in runs], "assets": None, "tasks": {}}
    return {
        "since": since,
        "runs": [r.to_wire() for r in runs],
        "assets": {key: _node_wire(node) for key, node in assets.items()},
        "tasks": {
            name: {k: _node_wire(n) for k, n in found.items()} for name, found in tasks.items()
        },
    }


def main(argv: list[str]) -> int:
    """The helper: `python -m engine.client.first_frame HOME PIPELINES PAGE`."""
    from engine.client import Client

    home, pipelines, page = argv
    out = sys.stdout
    client = Client(home=home, pipelines=pipelines)
    try:
        client.verify_db()
        daemon = client.daemon() is not None
    except Exception as exc:  # noqa: BLE001 - every failure is the answer
        out.write(json.dumps(_error(exc)) + "\n")
        return 0
    out.write(json.dumps({"ok": True, "daemon": daemon}) + "\n")
    out.flush()
    try:
        answer = _reads(client, int(page))
    except Exception as exc:  # noqa: BLE001 - the UI reads storage itself, and says it
        answer = _error(exc)
    out.write(json.dumps(answer) + "\n")
    out.flush()
    client.close()
    return 0


if __name__ == "__main__":
    sys.stdout.flush()
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)  # nothing to tear down: a short helper (as the CLI ends)
