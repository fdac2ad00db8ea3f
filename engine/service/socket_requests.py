"""What a running engine answers on its local socket (see `engine.service.ipc` for the transport
and `engine.protocol` for the wire form).

A request is a command or a stream of the command table (engine.service.commands), the same
ones the database's command table carries. A command is answered `{"result": ...}`; with
`follow`, the engine then pushes the stream it names, asked with that result (a run it started
at every change until it finishes, a backfill at most four times a second, the last update with
its key list), so the caller waits on the engine's own change events instead of polling the
database. A refusal is `{"error": ..., "refused": true}`. Every exchange ends with
`{"end": true}`; a connection that closes before it means the engine stopped, and the caller
falls back to reading the database.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from engine.errors import EngineError
from engine.protocol.commands import SocketAnswer, read_socket_request
from engine.service.commands import answer, follow
from engine.service.ipc import Send

if TYPE_CHECKING:
    from engine.service.commands import EngineHandle


OTHER_DATABASE = (
    "this home's engine uses another database than the one this command names "
    "(DAGTOP_DATABASE_URL or database_url differ): stop it, or use the same setting"
)


class SocketRequests:
    def __init__(self, engine: EngineHandle) -> None:
        self.engine = engine

    def handle(self, message: dict[str, Any], send: Send) -> None:
        """Answer one request; a malformed one raises ValueError, which the transport
        answers as an error."""
        request = read_socket_request(message)
        kind, payload = request["kind"], request["payload"]
        then = request.get("follow")
        if "database" in request and request["database"] != self.engine.database_setting:
            # The caller means another database than this engine's (its settings differ, as
            # with DAGTOP_DATABASE_URL set for one command): answering would be about the
            # wrong history.
            send(SocketAnswer(error=OTHER_DATABASE, refused=True))
            send(SocketAnswer(end=True))
            return
        try:
            updates: Iterable[Any] = ()
            if request["op"] == "stream":
                updates = follow(self.engine, kind, payload)
            else:
                result = answer(self.engine, kind, payload)
                send(SocketAnswer(result=result))
                if then is not None:
                    updates = follow(self.engine, then, result)
            for update in updates:
                send(SocketAnswer(update=update))
        except EngineError as exc:
            send(SocketAnswer(error=exc.msg, refused=True))
            send(SocketAnswer(end=True))
            return
        if self.engine.running:  # else it stopped mid-stream: the caller reads the database
            send(SocketAnswer(end=True))


__all__ = ["SocketRequests"]
