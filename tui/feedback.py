"""How the UI keeps people told: errors as toasts, times as people say them, the app's clock,
and the screens that re-read the engine on a timer while they are shown."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, ClassVar, Generic, TypeVar

from textual import on, work
from textual.app import App
from textual.dom import DOMNode
from textual.screen import ModalScreen, Screen
from textual.timer import Timer
from textual.widget import Widget
from textual.worker import Worker, WorkerState

from engine.client_api import ClientAPI
from engine.errors import EngineError
from tui.host import host_of

log = logging.getLogger(__name__)

T = TypeVar("T")


def error_text(exc: BaseException) -> str:
    """An error in one line: an EngineError's own message, else the exception's (or its name)."""
    return exc.msg if isinstance(exc, EngineError) else (str(exc) or type(exc).__name__)


def report_error(node: Widget | App[Any], exc: BaseException) -> None:
    """Show an error as a toast: an EngineError's own title and message, or the exception."""
    if isinstance(exc, EngineError):
        node.notify(exc.msg, title=exc.title, severity="error")
    else:
        node.notify(str(exc) or type(exc).__name__, title=type(exc).__name__, severity="error")


async def ask(
    node: Widget, command: Callable[[], T], refused: type[Exception] = EngineError
) -> T | None:
    """Run `command`, a call to the engine, in a thread; an error of the `refused` kind is
    shown as a toast, and the answer is None (others fail the worker, see
    `report_worker_failure`)."""
    try:
        return await asyncio.to_thread(command)
    except refused as exc:
        report_error(node, exc)
        return None


def report_worker_failure(node: Widget | App[Any], event: Worker.StateChanged) -> None:
    """Log and show a worker's unexpected failure (a toast, never a crash); other states pass."""
    error = event.worker.error
    if event.state != WorkerState.ERROR or error is None:
        return
    log.error("worker %s failed", event.worker.name, exc_info=error)
    report_error(node, error)


def span(seconds: float) -> str:
    """A duration as people say it: "45s", "11h 17m", "3d 4h"."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    if hours == 0:
        return f"{minutes}m"
    days, hours = divmod(hours, 24)
    if days == 0:
        return f"{hours}h {minutes}m"
    return f"{days}d {hours}h"


def clock_now(node: DOMNode) -> float:
    """The app's clock: the wall clock, or the frozen one of a test."""
    return host_of(node.app).clock()


class PolledScreen(Screen[None], Generic[T]):
    """A screen that re-reads the engine every `POLL_SECONDS` while it is shown (alone, or
    under a dialog): `poll_read` says what to read, a thread reads it, `poll_apply` shows it.

    Each poll arms the next one when it has finished, so a slow read never piles up reads; a
    read that fails is shown once as a toast, and retried at the next poll.
    """

    POLL_SECONDS: ClassVar[float] = 1.0
    """Seconds between the end of one read and the start of the next."""

    def __init__(self) -> None:
        super().__init__()
        self.polls = 0
        """How many reads have been shown (tests wait on it)."""
        self._poll_timer: Timer | None = None
        self._last_poll_error: str | None = None

    @property
    def client(self) -> ClientAPI:
        return host_of(self.app).client

    def poll_read(self) -> Callable[[], T] | None:
        """What to read (called on the event loop, run in a thread), or None: nothing yet."""
        raise NotImplementedError

    def poll_apply(self, data: T) -> None:
        """Show what a read returned (on the event loop)."""
        raise NotImplementedError

    def poll_delay(self) -> float:
        """Seconds until the next read (`POLL_SECONDS`, unless a screen knows better)."""
        return self.POLL_SECONDS

    def poll_wanted(self) -> bool:
        # A modal (a dialog, a confirmation) leaves the screen in view; another screen hides it.
        top = self.app.screen
        return top is self or isinstance(top, ModalScreen)

    @work(exclusive=True, group="poll", exit_on_error=False)
    async def poll(self) -> None:
        """Read and show; re-arms itself so reads never pile up."""
        try:
            read = self.poll_read() if self.poll_wanted() else None
            if read is not None:
                data = await asyncio.to_thread(read)
                self.poll_apply(data)
                self.polls += 1
                self._last_poll_error = None
        except Exception as exc:  # noqa: BLE001 - every failure is shown, none crashes the UI
            # One toast per distinct error: a poll that keeps failing must not flood the screen.
            if error_text(exc) != self._last_poll_error:
                self._last_poll_error = error_text(exc)
                report_error(self, exc)
        finally:
            # One timer at a time, however often poll() is also called directly.
            if self._poll_timer is not None:
                self._poll_timer.stop()
            if self.is_attached:
                self._poll_timer = self.set_timer(self.poll_delay(), self.poll)

    def action_back(self) -> None:
        self.dismiss()

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        report_worker_failure(self, event)


__all__ = [
    "PolledScreen",
    "ask",
    "clock_now",
    "error_text",
    "report_error",
    "report_worker_failure",
    "span",
]
