"""The link when no engine runs for the home: each command's in-process handler does its work
here (engine.service.in_process), or the command refuses with NoEngine."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from engine.client.links import Link
from engine.errors import NoEngine
from engine.protocol.commands import Command, Stream
from engine.service import commands

if TYPE_CHECKING:
    from engine.service.in_process import InProcess as Here

Req = TypeVar("Req")
Ans = TypeVar("Ans")
Upd = TypeVar("Upd")

NO_ENGINE = "no engine is running: start `dagtop daemon` or `dagtop`"


class InProcess(Link):
    where = "in-process"
    runs_here = True

    def __init__(self, here: Here) -> None:
        self.here = here

    def call(self, command: Command[Req, Ans], request: Req) -> Ans:
        handler = commands.command(command.kind).here
        if handler is None:
            raise NoEngine(NO_ENGINE)
        answer: Ans = handler(self.here, request)
        return answer

    def follow(
        self, stream: Stream[Req, Upd], request: Req, on_update: Callable[[Upd], None] | None
    ) -> Upd:
        last: Upd = commands.stream(stream.kind).here(self.here, request, on_update)
        return last
