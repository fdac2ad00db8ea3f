"""The link to an engine embedded in this process (the UI's): its handlers, called directly."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from engine.client.links import Link
from engine.protocol.commands import Command, Stream
from engine.service import commands

if TYPE_CHECKING:
    from engine.service.commands import EngineHandle

Req = TypeVar("Req")
Ans = TypeVar("Ans")
Upd = TypeVar("Upd")


class Embedded(Link):
    where = "embedded"

    def __init__(self, engine: EngineHandle) -> None:
        self.engine = engine

    def call(self, command: Command[Req, Ans], request: Req) -> Ans:
        answer: Ans = commands.command(command.kind).engine(self.engine, request)
        return answer

    def follow(
        self, stream: Stream[Req, Upd], request: Req, on_update: Callable[[Upd], None] | None
    ) -> Upd:
        handler = commands.stream(stream.kind)
        last: Upd | None = None
        for last in handler.engine(self.engine, request):
            if on_update is not None:
                on_update(last)
        if last is None or not self.engine.running:
            # The engine stopped before the end: what it ran is in storage, follow it there.
            watched: Upd = handler.watch(self.engine.db, request, on_update)
            return watched
        return last
