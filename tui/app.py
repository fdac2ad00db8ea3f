"""The dagtop terminal UI: wiring only. Screens live in tui/screens, widgets in tui/widgets.

The app talks to the engine only through the facade, typed as `engine.client_api.ClientAPI`
(`engine.client.Client` in use, a fake in the tests). With no daemon running `run_app`
embeds an engine (schedules, sensors, hot reload and runs live as long as the UI); with a
daemon up it attaches to it and reads the same storage.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.worker import Worker

from engine.client import Client, RunView
from engine.client_api import ClientAPI
from engine.errors import EngineError
from engine.redact import RedactingFormatter
from engine.status import RunStatus, StepStatus
from engine.units import plural
from tui.commands import DagtopCommands, JumpCommands
from tui.feedback import report_worker_failure
from tui.messages import EngineChanged

if TYPE_CHECKING:
    from engine.client.first_frame import FirstReads
    from engine.client_api import EngineEvent

log = logging.getLogger(__name__)

POLL_INTERVAL = 0.5
"""Seconds between change polls when no engine runs in this process (attached or offline)."""
ENGINE_START_AT_LATEST = 2.0
"""Seconds after opening by which the embedded engine begins to start, first frame or not."""
STOP_WAIT = 5.0
"""Seconds to wait for canceled runs to settle before quitting."""
HANDOFF_GRACE = 0.5
"""Seconds the embedded engine gives running steps when they are handed to a daemon."""


class DagtopApp(App[None]):
    """dagtop's UI for one project (a home folder and a pipelines folder)."""

    CSS_PATH = "app.tcss"
    TITLE = "dagtop"
    COMMANDS = App.COMMANDS | {DagtopCommands, JumpCommands}
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit", show=True),
        # What a terminal user presses first. Textual's own ctrl+c only says to press ctrl+q;
        # in a text box with a selection it still copies (the box's binding comes first).
        Binding("ctrl+c", "quit", "Quit", show=False),
        Binding("question_mark", "help", "Help", show=True, key_display="?"),
        Binding("B", "backfills", "Backfills", show=True),
        Binding("S", "automation", "Schedules", show=True, tooltip="Schedules & sensors"),
        Binding("escape", "back", "Back", show=True),
        Binding("exclamation_mark", "open_failure", "Last failure", show=False, key_display="!"),
    ]

    def __init__(
        self,
        client: ClientAPI,
        mode: str = "embedded",
        clock: Callable[[], float] | None = None,
        engine_starting: Future[Any] | None = None,
        first_reads: FirstReads | None = None,
    ) -> None:
        """
        Args:
            client: The engine facade.
            mode: "embedded", "attached" (to a daemon) or "offline" (read-only, for tests);
                "stopped" once an embedded engine stopped itself.
            clock: Returns the current epoch seconds (tests freeze it for stable snapshots).
            engine_starting: The embedded engine, still starting (in `run_app`): the first
                frame is read from storage meanwhile; None if it did not start.
            first_reads: The first frame's reads, under way in another process (the home
                screen takes them; see engine.client.first_frame).
        """
        super().__init__()
        self.engine_starting = engine_starting
        self.first_reads = first_reads
        self.client: ClientAPI = client
        self.mode = mode
        self.clock: Callable[[], float] = clock or time.time
        self.stop_grace = 3.0
        self.engine_start_at_latest = ENGINE_START_AT_LATEST
        """Seconds `run_app` gives running steps when it stops the embedded engine."""
        self._unsubscribe: Callable[[], None] | None = None
        self._since = time.time()
        self._stamps: dict[str, tuple[object, ...]] = {}
        self.opened_at = time.time()
        self.bell_on_failure = os.environ.get("DAGTOP_BELL", "1") != "0"
        """Ring the terminal bell when a run fails (DAGTOP_BELL=0 turns it off)."""
        self.last_failure: tuple[str, str | None] | None = None
        """The newest failed run seen while the UI is open, and its failed step."""
        self._announced: set[str] = set()

    def on_mount(self) -> None:
        from tui.screens.home import HomeScreen

        self.push_screen(HomeScreen())
        if self.engine_starting is not None:
            self._engine_started(self.engine_starting)
            # The home begins it once its first frame is drawn; this, if that never comes.
            self.set_timer(self.engine_start_at_latest, self.client.begin_engine)
            return
        engine = self.client.engine
        if engine is not None:
            self._unsubscribe = engine.subscribe(self._engine_changed)
        else:
            self.set_interval(POLL_INTERVAL, self.poll_changes)

    @work(group="engine-start", exit_on_error=False)
    async def _engine_started(self, starting: Future[Any]) -> None:
        """Listen to the embedded engine once it has started (it starts while the first frame
        is read and drawn); without one, poll storage as an attached UI does."""
        try:
            engine = await asyncio.wrap_future(starting)
        except EngineError as exc:
            self.notify(exc.msg, title=exc.title, severity="error")
            engine = None
        if engine is None:
            self.mode = "attached"
            self.post_message(EngineChanged("mode", None))  # the status bar says so
            self.set_interval(POLL_INTERVAL, self.poll_changes)
            return
        self._unsubscribe = engine.subscribe(self._engine_changed)
        # Whatever it did between the first reads and now: read it (every open screen).
        self.post_message(EngineChanged("reload", None))

    def first_frame_drawn(self) -> None:
        """The home has drawn its first full frame: the embedded engine starts now."""
        if self.engine_starting is not None:
            self.client.begin_engine()

    def _engine_changed(self, event: EngineEvent) -> None:
        # On an engine thread: post_message is the thread-safe way onto the event loop.
        self.post_message(EngineChanged(event.kind, event.ref))

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()

    def on_engine_changed(self, message: EngineChanged) -> None:
        """Hand the change to every open screen: covered ones stay current too."""
        if message.forwarded:
            return  # one of ours, bubbling back up from a screen
        if message.kind == "run" and message.ref:
            self.check_failure(message.ref)
        elif message.kind == "stopped":
            self._engine_stopped(message.ref or "it failed")
        for screen in self.screen_stack[1:]:
            screen.post_message(EngineChanged(message.kind, message.ref, forwarded=True))

    def _engine_stopped(self, why: str) -> None:
        """The embedded engine stopped itself (its coordinator failed: a full disk, say). Say
        so until dagtop is restarted, and keep showing storage as an attached UI does."""
        self.mode = "stopped"
        self.post_message(EngineChanged("mode", why))  # the status bar says so, and why
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.set_interval(POLL_INTERVAL, self.poll_changes)
        self.notify(
            f"{why}\nnothing runs until dagtop is started again, which recovers its runs",
            title="The engine stopped",
            severity="error",
            timeout=60,
        )
        self.bell()

    @work(exclusive=True, group="poll", exit_on_error=False)
    async def poll_changes(self) -> None:
        """Without an engine in this process, watch storage for runs that changed."""
        started = time.time()
        try:
            runs = await asyncio.to_thread(self.client.runs_since, self._since - 2.0)
        except Exception as exc:  # noqa: BLE001 - the next poll retries; screens show it
            log.debug("poll failed: %s", exc)
            return
        self._since = started
        changed = [run for run in runs if self._stamps.get(run.id) != _stamp(run)]
        for run in changed:
            self._stamps[run.id] = _stamp(run)
            self._announce_failure(run)
        if changed:
            self.post_message(EngineChanged("run", changed[-1].id))

    # --- failures -----------------------------------------------------------------------------

    @work(group="failures", exit_on_error=False)
    async def check_failure(self, run_id: str) -> None:
        run = await asyncio.to_thread(self.client.run, run_id)
        self._announce_failure(run)

    def _announce_failure(self, run: RunView) -> None:
        """A toast and the bell for a run that failed while the UI is open; `!` opens it."""
        if run.status != RunStatus.FAILED or run.id in self._announced:
            return
        if (run.ended_at or 0) < self.opened_at:
            return  # history, not news
        self._announced.add(run.id)
        step = next((s for s in run.steps if s.status == StepStatus.FAILED), None)
        self.last_failure = (run.id, step.key if step else None)
        what = f"{step.key}: {step.error}" if step and step.error else run.target
        self.notify(f"{what}\npress ! to open it", title=f"run {run.id[:6]} failed",
                    severity="error", timeout=10)  # fmt: skip
        if self.bell_on_failure:
            self.bell()

    def action_open_failure(self) -> None:
        if self.last_failure is None:
            self.notify("no run has failed since dagtop opened")
            return
        from tui.screens.run import RunScreen

        run_id, step = self.last_failure
        self.push_screen(RunScreen(run_id, step=step))

    # --- navigation ---------------------------------------------------------------------------

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "back":
            return len(self.screen_stack) > 2  # hidden where there is nowhere to go back to
        return True

    async def action_back(self) -> None:
        if len(self.screen_stack) > 2:
            self.pop_screen()

    def action_backfills(self) -> None:
        from tui.screens.backfills import BackfillsScreen

        self.push_screen(BackfillsScreen())

    def action_automation(self) -> None:
        from tui.screens.automation import AutomationScreen

        self.push_screen(AutomationScreen())

    # --- quitting -----------------------------------------------------------------------------

    async def action_quit(self) -> None:
        if self.mode != "embedded" or self.client.engine is None:
            self.exit()
            return
        self._confirm_quit()

    @work(exclusive=True, group="quit", exit_on_error=False)
    async def _confirm_quit(self) -> None:
        from tui.screens.confirm import QuitScreen

        runs = await asyncio.to_thread(self.client.runs, 500)
        live = [run.id for run in runs if not run.finished]
        if not live:
            self.exit()
            return
        choice = await self.push_screen_wait(QuitScreen(len(live)))
        if choice == "stop":
            self.notify(f"stopping {plural(len(live), 'run')}…", title="Quit")
            await asyncio.to_thread(self._stop_runs, live)
            self.exit()
        elif choice == "handoff":
            # Queued runs stay queued; steps still running get a short grace, then the next
            # engine (a daemon, or this UI reopened) recovers them: none stays "running".
            self.stop_grace = HANDOFF_GRACE
            self.exit()

    def _stop_runs(self, run_ids: list[str]) -> None:
        for run_id in run_ids:
            try:
                self.client.request_cancel(run_id)
            except EngineError as exc:
                log.warning("cancel %s failed: %s", run_id, exc.msg)
        deadline = time.monotonic() + STOP_WAIT
        pending = set(run_ids)
        while pending and time.monotonic() < deadline:
            for run_id in list(pending):
                try:
                    if self.client.run(run_id).finished:
                        pending.discard(run_id)
                except EngineError:
                    pending.discard(run_id)
            time.sleep(0.1)

    # --- errors -------------------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Report a failed app-level worker (screens report their own the same way)."""
        report_worker_failure(self, event)


def _stamp(run: RunView) -> tuple[object, ...]:
    return (run.status, tuple((st.status, st.attempts) for st in run.steps))


def _log_to_file(path: Path) -> Callable[[], None]:
    """Send logging to a file while the UI owns the terminal; returns the undo."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)  # the home, the user's only
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # the user's only
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    except OSError:
        handler = logging.NullHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root.handlers = [handler]
    root.setLevel(logging.INFO)

    def restore() -> None:
        handler.close()
        root.handlers, root.level = saved_handlers, saved_level

    return restore


def run_app(client: Client, first_reads: FirstReads | None = None) -> None:
    """`dagtop` with no command: embed an engine (or attach to the daemon) and open the UI.

    `first_reads`, started before the UI was imported, checks the database and reads the first
    frame in another process (engine.client.first_frame); without it, both happen here.
    """
    restore_logging = _log_to_file(client.paths.home / "ui.log")
    try:
        # A damaged history is refused before the screen opens (the error is one line on the
        # terminal): the UI would show what its damaged pages say, and its engine act on it.
        if first_reads is not None:
            daemon = first_reads.verdict()
        else:
            client.verify_db()
            daemon = client.daemon() is not None
        starting: Future[Any] | None = None
        mode = "attached" if daemon else "embedded"
        if mode == "embedded":
            # The first frame is read from storage; the engine starts once it is drawn (its
            # start would share the interpreter with it), or at the first command, which waits.
            starting = client.start_engine_soon(kind="tui")
        app = DagtopApp(client, mode=mode, engine_starting=starting, first_reads=first_reads)
        try:
            app.run()
        finally:
            if first_reads is not None:
                first_reads.close()
            engine = None
            # A start never begun (the UI closed at once) is called off; one under way is
            # waited for, and stopped.
            if starting is not None and not starting.cancel() and starting.exception() is None:
                engine = starting.result()
            if engine is not None:
                engine.stop(grace=app.stop_grace)
    finally:
        restore_logging()


__all__ = ["DagtopApp", "run_app"]
