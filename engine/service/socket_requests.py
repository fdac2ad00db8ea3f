"""What a running engine answers on its local socket (see `engine.service.ipc` for the transport).

One request kind: `{"op": "command", "kind": ..., "payload": ..., "follow": bool}` runs the
same commands as the database command table (`Engine._command`) and answers `{"result": ...}`
or `{"error": ..., "refused": true}`; the kind `follow_backfill` only follows one. With
`follow`, the engine then pushes the run it started (`{"view": RunView wire}` at every change,
until it finishes) or the backfill (`{"backfill": progress}` at most four times a second, the
last with its key list), so the caller waits on the
engine's own change events instead of polling the database. Every exchange ends with
`{"end": true}`; a connection that closes before it means the engine stopped, and the caller
falls back to reading the database.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError
from engine.history.views import run_views
from engine.service.ipc import Send
from engine.storage import repo
from engine.storage.db import read_scope

if TYPE_CHECKING:
    from engine.service.events import EngineEvent, EngineHandle

# A follower re-reads at least this often, should a change event ever be missed.
REFRESH = 1.0
COALESCE = 0.1  # seconds of further changes gathered before the run is read again


class SocketRequests:
    def __init__(self, engine: EngineHandle) -> None:
        self.engine = engine

    def handle(self, request: dict[str, Any], send: Send) -> None:
        if request.get("op") != "command" or not isinstance(request.get("kind"), str):
            raise ValueError("expected {'op': 'command', 'kind': ...}")
        kind, payload = request["kind"], request.get("payload") or {}
        try:
            if kind == "follow_backfill":  # only follows: nothing to do first
                result = {"backfill_id": str(payload["backfill_id"])}
            else:
                result = self.engine._command(kind, payload)
        except EngineError as exc:
            send({"error": exc.msg, "refused": True})
            send({"end": True})
            return
        send({"result": result})
        if request.get("follow") and isinstance(result, dict):
            if "run_id" in result:
                self._follow_run(result["run_id"], send)
            elif "backfill_id" in result:
                self._follow_backfill(result["backfill_id"], send)
        if self.engine.running:
            send({"end": True})

    def _follow_run(self, run_id: str, send: Send) -> None:
        changed, ended = threading.Event(), threading.Event()

        def on_event(event: EngineEvent) -> None:
            if event.kind == "run" and event.ref == run_id:
                if event.ended:
                    ended.set()
                changed.set()

        unsubscribe = self.engine.subscribe(on_event)
        try:
            last = None
            while self.engine.running:
                with read_scope(self.engine.db) as s:
                    view = run_views(s, [repo.find_run(s, run_id)])[0]
                wire = view.to_wire()
                if wire != last:
                    send({"view": wire})
                    last = wire
                if view.finished:
                    return
                changed.wait(REFRESH)
                # A run changes a few times per step: reading the whole run at each change would
                # cost n² for n steps. Gather a burst, unless the change ended the run.
                ended.wait(COALESCE)
                changed.clear()
        finally:
            unsubscribe()

    def _follow_backfill(self, backfill_id: str, send: Send) -> None:
        # Pushed from the engine's memory of the backfill, never read from its every run; the
        # key list travels once, in the last update.
        for info in self.engine.follow_backfill(backfill_id):
            send({"backfill": info})


__all__ = ["SocketRequests"]
