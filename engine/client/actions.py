"""What a user asks an engine to do: runs, cancels, backfills, toggles. Each is a command
(engine.protocol) sent over the client's one link, chosen once (engine.client.links)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from engine.client.links import EngineGone, EngineStopped, Link
from engine.client.project import Project
from engine.errors import EngineError, NoEngine
from engine.history.plan import RunRequest
from engine.history.views import RunView
from engine.loading.config import database_setting
from engine.protocol import commands as protocol
from engine.protocol.commands import BackfillInfo, Command, Stream
from engine.service import ipc

if TYPE_CHECKING:
    from engine.executor.forkserver import ForkServer
    from engine.service.daemon import Engine

log = logging.getLogger(__name__)

Req = TypeVar("Req")
Ans = TypeVar("Ans")
Upd = TypeVar("Upd")


# How many times a stream whose engine stopped is followed again before the command gives up.
_REFOLLOWS = 5


class Actions(Project):
    """The commands a client sends, and the engine they go to."""

    _link: Link | None = None
    _warm_server: ForkServer | None = None
    _starting: Future[Engine | None] | None = None
    _start_kind = "tui"
    _start_lock = threading.Lock()  # guards the promise's creation and its one start

    # --- which engine runs things -------------------------------------------------------------

    def attach(self, engine: Engine) -> None:
        """Route runs and commands to an engine embedded in this process (the UI's)."""
        from engine.client.links.embedded import Embedded

        self.engine = engine
        self._link = Embedded(engine)

    def start_engine(self, kind: str = "tui") -> Engine:
        """Start an engine embedded in this process and attach to it.

        Raises:
            EngineBusy: another live engine (a daemon) holds this home folder.
        """
        from engine.service.daemon import Engine

        engine = Engine(self.paths, self.config, kind=kind, db=self.db)
        engine.start()
        self.attach(engine)
        return engine

    def start_engine_soon(self, kind: str = "tui") -> Future[Engine | None]:
        """An engine embedded in this process, started on a thread by `begin_engine` (the UI
        calls it once its first frame is drawn: the engine's start would otherwise share the
        interpreter with that frame) or by the first command, which waits for it.

        The future's result is the engine, or None when a daemon took the home meanwhile
        (commands then go to it); its exception is the start's error (EngineError).
        """
        with self._start_lock:
            if self._starting is None:
                self._starting = Future()
                self._start_kind = kind
            return self._starting

    def begin_engine(self) -> None:
        """Start the engine `start_engine_soon` promised, now (once; a no-op without one)."""
        with self._start_lock:
            starting = self._starting
            if starting is None or starting.running() or starting.done():
                return  # none promised, or already begun
            starting.set_running_or_notify_cancel()
        threading.Thread(
            target=self._start_promised, args=(starting,), name="dagtop-start", daemon=True
        ).start()

    def _start_promised(self, starting: Future[Engine | None]) -> None:
        from engine.errors import EngineBusy

        try:
            starting.set_result(self.start_engine(kind=self._start_kind))
        except EngineBusy:
            starting.set_result(None)  # a daemon took the home meanwhile: commands go to it
        except BaseException as exc:  # noqa: BLE001 - the future hands it to whoever waits
            starting.set_exception(exc)

    def _await_promised_engine(self) -> None:
        """Before a command chooses its link: the promised engine, begun now if it was not."""
        starting = self._starting
        if starting is None or self.engine is not None or starting.cancelled():
            return
        self.begin_engine()
        starting.exception()  # waits; a failed start leaves the choice to `_choose`

    def serve_forever(self, standby: bool = False) -> int:
        """Run this project's engine headless until SIGINT or SIGTERM (`dagtop daemon`); with
        `standby`, wait for the running engine's lease and take over when it stops."""
        from engine.service.daemon import run_daemon

        return run_daemon(self.paths, self.config, standby=standby)

    def prewarm(self) -> None:
        """Start the step fork server now, so it warms up on another core while this process
        imports storage and plans (a cold `dagtop materialize` saves the server's start-up)."""
        if self.engine is not None or ipc.available(self.paths.home):
            return  # an engine runs the steps with its own server
        if self._warm_server is None and os.environ.get("DAGTOP_FORKSERVER", "1") != "0":
            from engine.executor.forkserver import ForkServer

            try:
                self._warm_server = ForkServer(cwd=str(self.paths.project))
            except OSError:
                self._warm_server = None

    def _take_warm_server(self) -> ForkServer | None:
        server, self._warm_server = self._warm_server, None
        return server

    def _choose(self, socket: bool = True) -> Link:
        """The link to this home's engine: the embedded one, the socket of this machine's,
        the database for one elsewhere, or none (in-process); see engine.client.links."""
        link: Link
        if self.engine is not None:
            from engine.client.links.embedded import Embedded

            link = Embedded(self.engine)
        elif socket and ipc.available(self.paths.home):
            from engine.client.links.local_socket import LocalSocket

            link = LocalSocket(self.paths.home, database_setting(self.config))
        elif self.daemon() is not None:
            from engine.client.links.database import Database

            link = Database(self.db)
        else:
            from engine.client.links.in_process import InProcess
            from engine.service.in_process import InProcess as Here

            here = Here(self.paths, self.config, self.db, self.load, self._take_warm_server)
            link = InProcess(here)
        if not link.runs_here and self._warm_server is not None:
            self._warm_server.close()  # an engine runs the steps, with its own server
            self._warm_server = None
        return link

    def _ask(self, use: Callable[[Link], Ans], needs_engine: bool = False) -> Ans:
        """`use(link)` on the link in use, chosen on first use, and chosen again (once) when
        the engine it reached is gone. A stream whose engine stopped before it ended is
        followed again on the link chosen then: the next engine's, or this process, which
        executes a run that no live process runs any more.

        Raises:
            NoEngine: `needs_engine`, and no engine runs.
            EngineStopped: the engine stopped in the middle of a stream, and so did the
                next ones, `_REFOLLOWS` times.
        """
        try:
            return self._ask_once(use, needs_engine)
        except EngineStopped as stopped:
            again = stopped
        # Engines may keep dying (a crash loop, a supervisor restarting them): follow on, a few
        # times, and in this process at the last when no engine runs any more.
        for _ in range(_REFOLLOWS):
            log.info("%s; following it again", again.msg)
            self._link = None
            try:
                rest: Ans = self._ask_once(again.follow_on)
                return rest
            except EngineStopped as stopped:
                again = stopped
        raise again

    def _ask_once(self, use: Callable[[Link], Ans], needs_engine: bool = False) -> Ans:
        self._await_promised_engine()
        link = self._link = self._link or self._choose()
        try:
            return use(_engine_link(link) if needs_engine else link)
        except EngineGone as gone:
            log.info("%s link: %s; choosing again", link.where, gone.msg)
            # A socket that refused is a dead engine's file: leave it out.
            link = self._link = self._choose(socket=link.where != "socket")
            return use(_engine_link(link) if needs_engine else link)

    def _call(self, command: Command[Req, Ans], request: Req, needs_engine: bool = False) -> Ans:
        return self._ask(lambda link: link.call(command, request), needs_engine)

    def _follow(
        self, stream: Stream[Req, Upd], request: Req, on_update: Callable[[Upd], None] | None
    ) -> Upd:
        return self._ask(lambda link: link.follow(stream, request, on_update))

    def _run(
        self,
        command: Command[Req, protocol.RunRef],
        request: Req,
        on_change: Callable[[RunView], None] | None,
    ) -> RunView:
        """Send a command that starts a run, and follow the run to its end."""
        pushed = None if on_change is None else (lambda w: on_change(RunView.from_wire(w)))

        def use(link: Link) -> protocol.RunWire:
            self._refuse_executor_override(link)
            return link.call_and_follow(command, request, protocol.FOLLOW_RUN, pushed)

        return RunView.from_wire(self._ask(use))

    def _refuse_executor_override(self, link: Link) -> None:
        """DAGTOP_EXECUTOR chooses the executor of a command that runs its own steps (and of
        an engine as it starts). A run handed to an engine already running elsewhere would
        run on that engine's executor, silently: refuse, saying which engine and what to do.

        Raises:
            EngineError: DAGTOP_EXECUTOR is set and another process's engine would run it.
        """
        override = os.environ.get("DAGTOP_EXECUTOR", "").strip()
        if not override or link.runs_here or link.where == "embedded":
            return
        holder = self.daemon()
        who = f"the {holder.description}" if holder is not None else "another engine"
        raise EngineError(
            f"DAGTOP_EXECUTOR={override} is for a command that runs its own steps, but {who} "
            "runs this database's runs with its own executor: unset DAGTOP_EXECUTOR to hand "
            "it the run, or stop that engine to run it here",
            title="Executor override",
        )

    # --- runs ---------------------------------------------------------------------------------

    def create_run(self, request: RunRequest) -> str:
        """Plan `request` and record its run and steps here; returns the run id (nothing runs
        yet: a test drives its own coordinator)."""
        from engine.history.plan import record

        manifest = self.load()
        with self._write() as s:
            return record(s, manifest, request)

    def submit(self, request: RunRequest) -> str:
        """Start a run on the attached or running engine; returns its id without waiting.

        Raises:
            NoEngine: no engine is running (use `materialize`, which runs in-process).
        """
        return self._call(protocol.RUN, request.to_command(), needs_engine=True)["run_id"]

    def materialize(
        self,
        selection: Sequence[str],
        partition: str | None = None,
        params: dict[str, Any] | None = None,
        on_change: Callable[[RunView], None] | None = None,
    ) -> RunView:
        """Materialize a selection now and wait for the run to finish; `on_change` sees the run
        as it changes (at most four times a second).

        Raises:
            SelectionError: the selection names no asset.
            PartitionError: the partition key is invalid for the selection.
        """
        request = RunRequest(
            selection=tuple(selection), partition=partition, params=dict(params or {})
        )
        return self._run(protocol.RUN, request.to_command(), on_change)

    def run_pipeline(
        self,
        name: str,
        params: dict[str, Any] | None = None,
        on_change: Callable[[RunView], None] | None = None,
    ) -> RunView:
        """Run a task pipeline now and wait for it to finish."""
        request = RunRequest(pipeline=name, params=dict(params or {}))
        return self._run(protocol.RUN, request.to_command(), on_change)

    def rerun_from_failure(
        self, run_id: str, on_change: Callable[[RunView], None] | None = None
    ) -> RunView:
        """Re-execute the failed, skipped and canceled steps of a run, reusing stored values.

        An interrupted run (its engine died) is resumed the same way.
        """
        return self._run(protocol.RERUN, protocol.RunRef(run_id=run_id), on_change)

    def rerun(self, run_id: str) -> str:
        """Queue a run's failed, skipped and canceled steps on the running engine (no wait).

        Raises:
            NoEngine: no engine is running (use `rerun_from_failure`).
        """
        ref = protocol.RunRef(run_id=run_id)
        return self._call(protocol.RERUN, ref, needs_engine=True)["run_id"]

    def request_cancel(self, run_id: str) -> str:
        """Ask for a run to be canceled (whoever executes it stops it); returns its full id."""
        return self._call(protocol.CANCEL, protocol.RunRef(run_id=run_id))["run_id"]

    def cancel(self, run_id: str, wait: float = 10.0) -> RunView:
        """Cancel a run: queued steps are canceled, running ones stopped (SIGTERM, then SIGKILL);
        returns it once it ended, or after `wait` seconds.

        If no live process is running it, the run is settled here and now.
        """
        full_id = self.request_cancel(run_id)
        request = protocol.FollowRun(run_id=full_id, timeout=wait)
        wire = self._follow(protocol.FOLLOW_RUN, request, None)
        return RunView.from_wire(wire)

    # --- backfills ----------------------------------------------------------------------------

    def backfill(
        self,
        selection: Sequence[str],
        keys: Sequence[str] | None = None,
        first: str | None = None,
        last: str | None = None,
        max_parallel: int = 4,
    ) -> str:
        """Record a backfill of `selection` over `keys` (or the range `first`..`last`; with
        neither, every key of static or dynamic partitions).

        Raises:
            SelectionError, PartitionError: nothing is recorded.
        """
        if keys is None and (first is None) != (last is None):
            raise EngineError("give --from and --to, or --partitions k1,k2")
        command: protocol.BackfillCommand = {
            "selection": list(selection),
            "keys": None if keys is None else list(keys),
            "first": first,
            "last": last,
            "max_parallel": max_parallel,
        }

        def use(link: Link) -> protocol.BackfillRef:
            self._refuse_executor_override(link)
            return link.call(protocol.BACKFILL, command)

        return self._ask(use)["backfill_id"]

    def backfill_action(self, action: str, backfill_id: str) -> str:
        """`cancel` or `resume` a backfill; returns its full id."""
        commands = {"cancel": protocol.BACKFILL_CANCEL, "resume": protocol.BACKFILL_RESUME}
        if action not in commands:
            raise EngineError(f"a backfill can be canceled or resumed, not {action!r}")
        ref = protocol.BackfillRef(backfill_id=backfill_id)
        return self._call(commands[action], ref)["backfill_id"]

    def follow_backfill(
        self, backfill_id: str, on_progress: Callable[[BackfillInfo], None] | None = None
    ) -> BackfillInfo:
        """Follow a backfill until it ends: the engine pushes its progress, or one on another
        host is followed in storage; with no engine up, it runs here. Returns its progress with
        its key list."""
        ref = protocol.BackfillRef(backfill_id=backfill_id)
        return self._follow(protocol.FOLLOW_BACKFILL, ref, on_progress)

    # --- schedules and sensors ----------------------------------------------------------------

    def set_enabled(self, kind: str, name: str, enabled: bool) -> None:
        """Turn a schedule or sensor on or off; the state is kept across restarts.

        Raises:
            EngineError: no schedule or sensor has that name.
        """
        if kind not in ("schedule", "sensor"):
            raise EngineError(f"only schedules and sensors are turned on and off, not {kind!r}")
        self._call(protocol.TOGGLE, protocol.ToggleCommand(kind=kind, name=name, enabled=enabled))

    # --- dynamic partitions -------------------------------------------------------------------

    def change_keys(self, op: str, name: str, keys: Sequence[str]) -> protocol.KeysChanged:
        """Add (`op="add"`) or remove keys of DynamicPartitions `name`. Adding a key that
        exists changes nothing; removing one keeps its runs and values.

        Raises:
            PartitionError: no asset uses that name, or a key is empty or holds a control
                character.
        """
        if op not in ("add", "remove"):
            raise EngineError(f"keys are added or removed, not {op!r}")
        cmd = protocol.KeysCommand(
            op="add" if op == "add" else "remove", name=name, keys=list(keys)
        )
        return self._call(protocol.KEYS, cmd)


def _engine_link(link: Link) -> Link:
    """Raises: NoEngine: `link` reaches no engine (what is asked needs one)."""
    if link.runs_here:
        raise NoEngine("no engine is running: start `dagtop daemon` or `dagtop`")
    return link
