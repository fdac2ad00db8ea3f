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
it sent anything raises `EngineGone`, and the client chooses again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

from engine.errors import EngineError
from engine.protocol.commands import Command, Stream

Req = TypeVar("Req")
Ans = TypeVar("Ans")
Upd = TypeVar("Upd")


class EngineGone(EngineError):
    """The engine this link reached is gone, and nothing was sent: choose a link again."""

    title = "No engine"


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


__all__ = ["EngineGone", "Link"]
