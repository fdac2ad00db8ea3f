"""How a client reaches the engine of its home: one `Link`, chosen once per client.

There are four, in the order they are tried:

- `Embedded`: an engine in this process (the UI's), called directly;
- `LocalSocket`: the engine of this machine that holds the home's lease, on its Unix socket:
  a command is answered at once and a run or backfill pushed back at every change, and this
  process imports no storage;
- `Database`: an engine reachable only through the database (another host sharing
  PostgreSQL, or one whose socket is gone): commands are rows of the command table, and
  what it runs is followed in storage;
- `InProcess`: no engine runs; each command does its own work here (`materialize` runs its
  own coordinator, a toggle writes storage), or refuses with NoEngine.

Every link carries the same commands and streams (engine.protocol, handled in
engine.service.commands), in the same wire form. A link that finds its engine gone before
it sent anything raises `EngineGone`, and the client chooses again. One whose engine stops
in the middle of a stream raises `EngineStopped`, and the client follows the stream again on
the link it chooses then: the next engine's, or this process, which finishes the run itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from engine.errors import EngineError
from engine.protocol.commands import Command, Stream

Req = TypeVar("Req")
Ans = TypeVar("Ans")
Upd = TypeVar("Upd")


class EngineGone(EngineError):
    """The engine this link reached is gone, and nothing was sent: choose a link again."""

    title = "No engine"


class EngineStopped(EngineError, Generic[Req, Upd]):
    """The engine stopped in the middle of `stream` (asked with `request`), which had not
    ended: what it ran is in storage, maybe unfinished, and no engine of that link runs it
    any more. Follow the stream again on another link.

    Args:
        stream: The stream that stopped.
        request: What it was asked with.
        on_update: Who saw its updates, to see the rest.
    """

    title = "Engine stopped"

    def __init__(
        self,
        stream: Stream[Req, Upd],
        request: Req,
        on_update: Callable[[Upd], None] | None,
    ) -> None:
        fields = request.items() if isinstance(request, dict) else ()
        about = ", ".join(f"{k} {v}" for k, v in fields)
        super().__init__(
            f"the engine stopped in the middle of {stream.kind} ({about}): the next engine "
            "resumes it; see `dagtop runs`"
        )
        self.stream, self.request, self.on_update = stream, request, on_update

    def follow_on(self, link: Link) -> Upd:
        """The rest of the stream, followed on `link`."""
        return link.follow(self.stream, self.request, self.on_update)


class Link(ABC):
    """One way to reach an engine (or to do without one)."""

    where: ClassVar[str]
    """What it reaches, for logs and errors: embedded, socket, database or in-process."""
    runs_here: ClassVar[bool] = False
    """True when no engine runs and the commands work in this process."""

    @abstractmethod
    def call(self, command: Command[Req, Ans], request: Req) -> Ans:
        """The answer to `command`.

        Raises:
            EngineGone: the engine is gone and nothing was sent.
            EngineError: the engine refused (its message), or did not answer.
        """

    @abstractmethod
    def follow(
        self, stream: Stream[Req, Upd], request: Req, on_update: Callable[[Upd], None] | None
    ) -> Upd:
        """Hand each update of `stream` to `on_update` until it ends; returns the last.

        Raises:
            EngineGone: the engine is gone and nothing was sent.
            EngineStopped: the engine stopped before the stream ended.
            EngineError: the engine refused.
        """

    def call_and_follow(
        self,
        command: Command[Req, Any],
        request: Req,
        stream: Stream[Any, Upd],
        on_update: Callable[[Upd], None] | None,
    ) -> Upd:
        """`command`, then `stream` asked with its answer (`run`, then `follow_run`); returns
        the stream's last update. One exchange where the link allows it."""
        return self.follow(stream, self.call(command, request), on_update)


__all__ = ["EngineGone", "EngineStopped", "Link"]
