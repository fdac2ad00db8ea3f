"""The link to the engine on this home's Unix socket (engine.service.ipc).

A command is one exchange; following a run or a backfill is the engine pushing it at every
change. Nothing here imports storage: with an engine up, `dagtop materialize` starts, sends,
prints and exits. An engine that stops in the middle of a stream raises `EngineStopped`: the
client follows the rest on the link it chooses then (the next engine's, or this process,
which finishes a run that nobody runs any more).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, TypeVar

from engine.client.links import EngineGone, EngineStopped, Link
from engine.errors import EngineError
from engine.protocol.commands import Command, SocketRequest, Stream, socket_request
from engine.service import ipc

Req = TypeVar("Req")
Ans = TypeVar("Ans")
Upd = TypeVar("Upd")


class _WentAway(EngineError):
    """The engine closed the connection before its first answer: a command may or may not
    have been carried out; a stream can simply be followed again."""


class LocalSocket(Link):
    """Args:
    home: The home folder whose engine listens on its socket.
    """

    where = "socket"

    def __init__(self, home: Path, database: str | None = None) -> None:
        self.home = home
        self.database = database  # the database the caller's settings name

    def call(self, command: Command[Req, Ans], request: Req) -> Ans:
        first, answers = self._ask(socket_request(command, request, database=self.database))
        answers.close()
        result: Ans = first["result"]
        return result

    def follow(
        self, stream: Stream[Req, Upd], request: Req, on_update: Callable[[Upd], None] | None
    ) -> Upd:
        try:
            first, answers = self._ask(socket_request(stream, request, database=self.database))
        except _WentAway:
            # Following changes nothing: asked again, the next engine (or this process) goes on.
            raise EngineStopped(stream, request, on_update) from None
        return self._updates(stream, request, first, answers, on_update)

    def call_and_follow(
        self,
        command: Command[Req, Any],
        request: Req,
        stream: Stream[Any, Upd],
        on_update: Callable[[Upd], None] | None,
    ) -> Upd:
        first, answers = self._ask(
            socket_request(command, request, follow=stream, database=self.database)
        )
        result = first["result"]
        try:
            first = next(answers)
        except (ipc.Closed, StopIteration, OSError, ValueError):
            first = {}  # it stopped right after answering: follow the stream elsewhere
        return self._updates(stream, result, first, answers, on_update)

    def _ask(
        self, message: SocketRequest
    ) -> tuple[dict[str, Any], Generator[dict[str, Any], None, None]]:
        """Send `message`; the engine's first answer, and the rest to come.

        Raises:
            EngineGone: no engine listens (a dead engine's socket file): nothing was sent.
            EngineError: the engine refused, or went away before answering.
        """
        answers = ipc.request(self.home, message)
        try:
            first = next(answers)
        except ipc.Unavailable:
            raise EngineGone(f"no engine answers on {ipc.socket_path(self.home)}") from None
        except (ipc.Closed, StopIteration, OSError, ValueError):
            raise _WentAway(
                f"the engine went away before answering {message['kind']!r}; check `dagtop runs`",
                title="No answer",
            ) from None
        if "error" in first:
            raise EngineError(first["error"], title="Engine refused")
        return first, answers

    def _updates(
        self,
        stream: Stream[Any, Upd],
        request: object,
        first: dict[str, Any],
        answers: Generator[dict[str, Any], None, None],
        on_update: Callable[[Upd], None] | None,
    ) -> Upd:
        last: Upd | None = None
        answer = first
        try:
            while "update" in answer:
                last = answer["update"]
                if on_update is not None:
                    on_update(last)
                answer = next(answers)
        except StopIteration:  # the stream ended, and the engine said so
            assert last is not None  # every stream starts with the state it follows
            return last
        except (ipc.Closed, OSError, ValueError):
            pass  # the engine stopped in the middle
        if "error" in answer:
            raise EngineError(answer["error"], title="Engine refused")
        # The engine stopped before the stream ended. Following it in storage here would
        # wait forever for a run that nobody runs any more, should no engine come next.
        raise EngineStopped(stream, request, on_update)
