"""The link to an engine reachable only through the database: one on another host sharing a
PostgreSQL home, or one of this machine whose socket cannot be reached.

A command is a row of the command table, which the engine holding the lease takes within
0.2 s (`Engine._serve_commands`) and answers in the same row; this process waits for the
answer with a backoff. Streams never go through the table: what the engine runs is followed
in storage.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from engine.client.links import EngineGone, Link
from engine.errors import EngineError
from engine.protocol.commands import Command, Stream
from engine.service import commands, lease
from engine.status import CommandStatus
from engine.storage import repo
from engine.storage.db import read_scope, session_scope

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SAEngine

Req = TypeVar("Req")
Ans = TypeVar("Ans")
Upd = TypeVar("Upd")

TIMEOUT = 15.0
"""Seconds a command waits for the engine's answer before it is withdrawn."""


class Database(Link):
    where = "database"

    def __init__(self, db: SAEngine, timeout: float = TIMEOUT) -> None:
        self.db = db
        self.timeout = timeout

    def call(self, command: Command[Req, Ans], request: Req) -> Ans:
        if lease.live_holder(self.db) is None:
            raise EngineGone("the engine holding this home's lease is gone")
        with session_scope(self.db) as s:
            cmd_id = repo.add_command(s, command.kind, request, time.time()).id or 0  # type: ignore[arg-type]
        deadline = time.monotonic() + self.timeout
        delay = 0.005
        while time.monotonic() < deadline:
            with read_scope(self.db) as s:
                cmd = repo.get_command(s, cmd_id)
            if cmd is not None and cmd.status == CommandStatus.DONE:
                answer: Ans = json.loads(cmd.result or "null")
                return answer
            if cmd is not None and cmd.status == CommandStatus.FAILED:
                raise EngineError(cmd.error or f"{command.kind} failed", title="Engine refused")
            time.sleep(delay)
            delay = min(delay * 2, 0.1)
        # Withdraw it, so an engine that wakes up later does not act on a request whose
        # sender has given up (and told its user so).
        with session_scope(self.db) as s:
            # Locked, so an engine taking it right now either finishes first or skips it.
            cmd = repo.get_command(s, cmd_id, for_update=True)
            if cmd is not None and cmd.status == CommandStatus.PENDING:
                cmd.status = CommandStatus.ABANDONED
                s.add(cmd)
            elif cmd is not None and cmd.status == CommandStatus.DONE:
                answer = json.loads(cmd.result or "null")
                return answer
        raise EngineError(f"the engine did not answer within {self.timeout:g} s", title="No answer")

    def follow(
        self, stream: Stream[Req, Upd], request: Req, on_update: Callable[[Upd], None] | None
    ) -> Upd:
        watched: Upd = commands.stream(stream.kind).watch(self.db, request, on_update)
        return watched
