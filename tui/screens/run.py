"""One run: its steps, a timeline of their attempts, and the live log of one attempt.

The screen polls the facade off the event loop (`client.run`, `client.attempts` and the shown
attempt's `client.samples`) every `POLL_ACTIVE` seconds while the run is queued or running, and
stops once it has finished (a re-run from here starts it again). Each poll re-arms itself after
it has been applied, so a slow database never stacks up polls. The log itself is tailed by
`LogView`, which needs no help from the engine: it reads the attempt's log file.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.reactive import Reactive
from textual.screen import Screen
from textual.timer import Timer
from textual.visual import VisualType
from textual.widget import Widget
from textual.widgets import DataTable, Input, Label, Static
from textual.worker import Worker, WorkerState

from engine.client import AttemptView, RunView, SampleView, StepView
from engine.client_api import ClientAPI
from engine.errors import EngineError, RunNotFound
from engine.status import RunStatus, StepStatus
from engine.units import format_bytes, format_duration, one_line
from tui.host import host_of
from tui.screens.confirm import ConfirmScreen
from tui.widgets import STYLES, glyph
from tui.widgets.footer import KeyFooter
from tui.widgets.log_view import LogView
from tui.widgets.resources import ResourceGauge
from tui.widgets.table import Table
from tui.widgets.timeline import Lane, Segment, Timeline

POLL_ACTIVE = 0.5  # seconds between reads of the run while it is active
REASON_WIDTH = 60  # a failure reason longer than this is cut in the table (shown in full below)
FOOTER_DEPENDS_ON = (
    "cancel_run", "rerun", "prev_attempt", "next_attempt", "next_match", "prev_match"
)  # fmt: skip
"""The actions `check_action` may hide or dim; the footer changes only when one of them does."""


def fmt_clock(ts: float | None) -> str:
    return "–" if ts is None else time.strftime("%H:%M:%S", time.localtime(ts))


def short_reason(reason: str | None, width: int = REASON_WIDTH) -> str:
    if not reason:
        return ""
    first = reason.strip().splitlines()[0] if reason.strip() else ""
    return first if len(first) <= width else first[: width - 1] + "…"


def placement(attempt: AttemptView) -> str:
    """Where an attempt ran: "on HOST (WORKER)", the worker being "local" or a Dask worker's
    address; "" when that was not recorded."""
    if not attempt.host:
        return ""
    return f"on {attempt.host} ({attempt.worker})" if attempt.worker else f"on {attempt.host}"


def default_step(run: RunView, wanted: str | None) -> str | None:
    """The step to show first: the asked one, else the first failed, else running, else last."""
    keys = [s.key for s in run.steps]
    if wanted in keys:
        return wanted
    for statuses in ((StepStatus.FAILED,), (StepStatus.RUNNING, StepStatus.RETRYING)):
        for s in run.steps:
            if s.status in statuses:
                return s.key
    started = [s for s in run.steps if s.attempts > 0]
    if started:
        return started[-1].key
    return keys[-1] if keys else None


@dataclass
class _Snapshot:
    """What one poll read from the facade."""

    run: RunView
    attempts: list[AttemptView]
    samples: dict[int, list[SampleView]] = field(default_factory=dict)


class RunCommands(Provider):
    """The run screen's actions in the command palette."""

    def _commands(self) -> list[tuple[str, str, str]]:
        return [
            ("Follow log on/off", "Keep the newest log line in view", "toggle_follow"),
            ("Search log", "Find text in the log (n/N: next/previous)", "search"),
            ("Log top", "Jump to the first log line", "log_top"),
            ("Log bottom", "Jump to the last log line and follow", "log_bottom"),
            ("Wrap log lines", "Wrap long log lines on/off", "toggle_wrap"),
            ("Previous attempt", "Show the step's previous attempt", "prev_attempt"),
            ("Next attempt", "Show the step's next attempt", "next_attempt"),
            ("Cancel run", "Stop this run's steps", "cancel_run"),
            ("Re-run failed steps", "Run the failed, skipped and canceled steps again", "rerun"),
        ]

    def _available(self) -> Iterable[tuple[str, str, Callable[[], Any]]]:
        screen = self.screen
        if not isinstance(screen, RunScreen):
            return
        for name, help_text, action in self._commands():
            if screen.check_action(action, ()) is True:
                yield name, help_text, getattr(screen, f"action_{action}")

    async def discover(self) -> Hits:
        for name, help_text, callback in self._available():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._available():
            if (score := matcher.match(name)) > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)


class RunScreen(Screen[None]):
    """A run: steps, timeline, and a live log with the attempt's CPU and memory."""

    CSS_PATH = "run.tcss"
    COMMANDS = {RunCommands}
    focused: Reactive[Widget | None] = Reactive(None, repaint=False)
    """Textual's, except that a focus change does not repaint the whole screen: the widgets
    whose style depends on the focus repaint themselves, and `tab` is answered sooner."""
    BINDINGS = [
        Binding("escape", "back", "Back", show=True),
        Binding("f", "toggle_follow", "Follow", show=True),
        # Priority, like the home screen's filter: the keys typed right after "/" in one burst
        # go to the search box, never to this screen's keys (r re-runs, c cancels).
        Binding("slash", "search", "Search", show=True, key_display="/", priority=True),
        Binding("n", "next_match", "Next", show=True),
        Binding("N", "prev_match", "Prev", show=True, key_display="N"),
        Binding("g", "log_top", "Top", show=True),
        Binding("G", "log_bottom", "Bottom", show=True, key_display="G"),
        Binding("w", "toggle_wrap", "Wrap", show=True),
        Binding("left_square_bracket", "prev_attempt", "Prev try", show=True, key_display="["),
        Binding("right_square_bracket", "next_attempt", "Next try", show=True, key_display="]"),
        Binding("c", "cancel_run", "Cancel", show=True),
        Binding("r", "rerun", "Re-run failed", show=True),
        Binding("tab", "switch_focus", "Steps/Log", show=True),
    ]

    def __init__(self, run_id: str, step: str | None = None) -> None:
        """
        Args:
            run_id: The run (an id or a unique prefix).
            step: Show this step's log first (default: the first failed step, else the running
                one, else the last).
        """
        super().__init__()
        self.run_id = run_id
        self.wanted_step = step
        self.run: RunView | None = None
        """The run as last read."""
        self.attempts: list[AttemptView] = []
        self.step: str | None = None
        """The step whose log is shown."""
        self.attempt_no: int | None = None
        """The attempt shown, or None for the step's latest (which follows retries)."""
        self.auto_step = step is None
        """Nobody chose a step yet: keep showing the most telling one (the first failed, else
        the running one) as the run moves on, until the user selects, scrolls or searches."""
        self._samples: dict[int, list[SampleView]] = {}
        self._samples_final: set[int] = set()
        self._timer: Timer | None = None
        self._error: str | None = None
        self._last_error_note: str | None = None
        self._bindings_state: tuple[bool | None, ...] | None = None

    # --- wiring ---------------------------------------------------------------------------------

    @property
    def client(self) -> ClientAPI:
        return host_of(self.app).client

    def now(self) -> float:
        return host_of(self.app).clock()

    def compose(self) -> ComposeResult:
        with Horizontal(id="run-header"):
            yield Static(id="run-title")
            yield Static(id="run-hints")
        with Horizontal(id="run-top"):
            table: DataTable[Any] = Table(id="steps", cursor_type="row", zebra_stripes=False)
            table.border_title = "Steps"
            yield table
            with VerticalScroll(id="timeline-box") as box:
                box.border_title = "Timeline"
                box.can_focus = False
                yield Timeline(id="timeline")
        with Vertical(id="log-panel"):
            with Horizontal(id="log-header"):
                yield Label("", id="log-info")
                yield ResourceGauge("CPU", "percent", id="cpu")
                yield ResourceGauge("RSS", "bytes", id="rss")
            yield LogView(id="log")
            yield Input(placeholder="search the log (enter: find, esc: close)", id="search")
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one("#steps", DataTable)
        for key, label in (
            ("glyph", " "),
            ("step", "step"),
            ("try", "try"),
            ("time", "time"),
            ("rss", "peak RSS"),
            ("cpu", "CPU"),
            ("reason", "reason"),
        ):
            table.add_column(label, key=key)
        self.query_one("#search", Input).display = False
        self._render_header()
        self.query_one("#log", LogView).focus()
        self.load()

    def on_unmount(self) -> None:
        if self._timer is not None:
            self._timer.stop()

    def on_screen_resume(self) -> None:
        if self.run is not None:
            self.load()

    # --- polling --------------------------------------------------------------------------------

    def _fetch(self, step: str | None, attempt_no: int | None) -> _Snapshot:
        """Read the run, its attempts and the shown attempt's samples (runs in a thread)."""
        client = self.client
        run = client.run(self.run_id)
        attempts = list(client.attempts(run.id))
        snap = _Snapshot(run, attempts)
        if step is None or self.auto_step:
            step = default_step(run, self.wanted_step if step is None else None)
        shown = _pick_attempt(attempts, step, attempt_no)
        if shown is not None and shown.id not in self._samples_final:
            snap.samples[shown.id] = list(client.samples(shown.id))
        return snap

    @work(exclusive=True, group="run-load", exit_on_error=False)
    async def load(self) -> None:
        """Read the run once and show it; re-arm while the run is active."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        try:
            snap = await asyncio.to_thread(self._fetch, self.step, self.attempt_no)
        except RunNotFound as exc:
            self._error = str(exc) or f"run {self.run_id} not found"
            self._render_header()
            return  # nothing will ever show up: stop polling
        except EngineError as exc:
            self._note_error(exc.title, exc.msg)
            self._rearm(POLL_ACTIVE * 4)
            return
        self._error = None
        self._apply(snap)
        if not snap.run.finished or any(_active(s.status) for s in snap.run.steps):
            self._rearm(POLL_ACTIVE)

    def _rearm(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_timer(delay, self.load)

    def _note_error(self, title: str, message: str) -> None:
        if message != self._last_error_note:  # a failing poll reports once, not twice a second
            self._last_error_note = message
            self.notify(message, title=title, severity="error")

    @on(Worker.StateChanged)
    def _worker_failed(self, event: Worker.StateChanged) -> None:
        if event.state == WorkerState.ERROR and event.worker.error is not None:
            error = event.worker.error
            title = error.title if isinstance(error, EngineError) else type(error).__name__
            self._note_error(title, str(error))
            if event.worker.group == "run-load":
                self._rearm(POLL_ACTIVE * 4)

    # --- applying a snapshot --------------------------------------------------------------------

    def _apply(self, snap: _Snapshot) -> None:
        self.run, self.attempts = snap.run, snap.attempts
        for attempt_id, samples in snap.samples.items():
            self._samples[attempt_id] = samples
            finished = next((a for a in snap.attempts if a.id == attempt_id), None)
            if finished is not None and not _active(finished.status):
                self._samples_final.add(attempt_id)  # read once after it ended: complete
        if self.step is None or self.step not in {s.key for s in snap.run.steps}:
            self.step = default_step(snap.run, self.wanted_step)
        elif self.auto_step:
            best = default_step(snap.run, None)
            if best != self.step:
                self.step, self.attempt_no = best, None
        self._render_header()
        self._render_steps()
        self._render_timeline()
        self._render_log()
        self._refresh_bindings_if_changed()

    def _refresh_bindings_if_changed(self) -> None:
        """Refresh the footer only when an action's availability changed: Textual rebuilds the
        whole footer on every `refresh_bindings`, and an active run is re-read twice a second."""
        state = tuple(self.check_action(action, ()) for action in FOOTER_DEPENDS_ON)
        if state != self._bindings_state:
            self._bindings_state = state
            self.refresh_bindings()

    def _render_header(self) -> None:
        title = self.query_one("#run-title", Static)
        hints = self.query_one("#run-hints", Static)
        run = self.run
        if self._error is not None:
            _update(title, Text(f" Run {self.run_id}  {self._error}", style="bold red"))
            _update(hints, "")
            return
        if run is None:
            _update(title, Text(f" Run {self.run_id}  loading…", style="dim"))
            _update(hints, "")
            return
        out = Text(" ")
        out.append(f"Run {run.id[:8]}", "bold")
        out.append(f"  {run.target}")
        if run.partition:
            out.append(f" [{run.partition}]", "cyan")
        out.append(f"  {run.trigger}", "dim")
        out.append(f"  started {fmt_clock(run.started_at or run.created_at)}")
        out.append("  ")
        status = run.status
        out.append(f"{glyph(status)} {status}", STYLES.get(status, ""))
        start = run.started_at or run.created_at
        if not run.finished:
            out.append(f" {format_duration(self.now() - start)}")
        elif run.ended_at is not None:
            out.append(f" in {format_duration(run.ended_at - start)}")
        if run.reason:  # why automation asked for it: last, so that the status is never cut
            out.append(f"  ({one_line(run.reason)})", "dim")
        _update(title, out)
        parts = Text()
        if not run.finished:
            parts.append("c", "bold")
            parts.append(" Cancel  ")
        if status in (RunStatus.FAILED, RunStatus.CANCELED):
            parts.append("r", "bold")
            parts.append(" Re-run failed ")
        _update(hints, parts)

    def _step_cells(self, s: StepView, reason_width: int = REASON_WIDTH) -> dict[str, Any]:
        now = self.now()
        elapsed = None
        if s.started_at is not None:
            elapsed = (s.ended_at if s.ended_at is not None else now) - s.started_at
        failed = (StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED)
        reason = s.error if s.status in failed else None
        if s.kind == "map" and not s.status.finished:
            # A mapped task before its list is known: it becomes one row per element.
            up = ", ".join(s.upstream)
            reason = f"mapped: one step per element of {up}'s list" if up else "mapped"
        peak_rss = s.peak_rss_bytes
        if peak_rss is None and s.key == self.step and (shown := self.shown_attempt()):
            # recorded when the attempt ends; meanwhile the samples we have say as much
            peak_rss = max((x.rss_bytes for x in self._samples.get(shown.id, [])), default=None)
        return {
            "glyph": Text(glyph(s.status), style=STYLES.get(s.status, "")),
            "step": s.key,
            "try": f"{s.attempts}/{s.max_attempts}" if s.attempts else "–",
            "time": format_duration(elapsed) if elapsed is not None else "",
            "rss": format_bytes(peak_rss) if peak_rss else "",
            "cpu": f"{s.cpu_seconds:.1f} s" if s.cpu_seconds is not None else "",
            "reason": Text(
                short_reason(reason, reason_width),
                style="red" if s.status == StepStatus.FAILED else "dim",
            ),
        }

    def _render_steps(self) -> None:
        run = self.run
        assert run is not None
        table = self.query_one("#steps", DataTable)
        keys = [s.key for s in run.steps]
        existing = [str(k.value) for k in table.rows]
        rows = {s.key: self._step_cells(s) for s in run.steps}
        reason_width = self._reason_width(table, list(rows.values()))
        rows = {s.key: self._step_cells(s, reason_width) for s in run.steps}
        if existing != keys:
            # Steps never change within a run in practice; rebuild if they do.
            table.clear()
            for key, cells in rows.items():
                table.add_row(*cells.values(), key=key)
        else:
            for s in run.steps:
                for column, value in rows[s.key].items():
                    if _cell_text(table.get_cell(s.key, column)) != _cell_text(value):
                        table.update_cell(s.key, column, value, update_width=True)
        if self.step in keys:
            row = keys.index(self.step)
            if table.cursor_row != row:
                table.move_cursor(row=row, animate=False, scroll=True)

    @staticmethod
    def _reason_width(table: DataTable[Any], rows: list[dict[str, Any]]) -> int:
        """Cut failure reasons to what is left of the table's width (the full reason shows
        above the log), so the table needs no horizontal scrollbar."""
        width = table.scrollable_content_region.width
        if width <= 0 or not rows:
            return REASON_WIDTH
        used = 0
        for column in table.columns.values():
            if column.key.value == "reason":
                continue
            cells = [_cell_text(row[str(column.key.value)]) for row in rows]
            used += max(len(column.label.plain), *map(len, cells)) + 2 * table.cell_padding
        return max(8, width - used - 2 * table.cell_padding)

    def on_resize(self) -> None:
        # After the layout, when the table knows its new width (reasons are cut to fit it).
        self.call_after_refresh(self._rerender_steps)

    def _rerender_steps(self) -> None:
        if self.run is not None:
            self._render_steps()

    def _render_timeline(self) -> None:
        run = self.run
        assert run is not None
        by_key: dict[str, list[Segment]] = {s.key: [] for s in run.steps}
        for a in self.attempts:
            end = a.ended_at if not _active(a.status) else None
            by_key.setdefault(a.key, []).append(Segment(a.started_at, end, a.status))
        lanes = [Lane(key, tuple(segs)) for key, segs in by_key.items()]
        start = run.started_at or run.created_at
        self.query_one("#timeline", Timeline).update_lanes(lanes, self.now(), start, self.step)

    def shown_attempt(self) -> AttemptView | None:
        return _pick_attempt(self.attempts, self.step, self.attempt_no)

    def _step_view(self) -> StepView | None:
        if self.run is None:
            return None
        return next((s for s in self.run.steps if s.key == self.step), None)

    def _render_log(self) -> None:
        log = self.query_one("#log", LogView)
        attempt = self.shown_attempt()
        step = self._step_view()
        if attempt is None:
            status = step.status if step is not None else "unknown"
            placeholder = f"{self.step} has not started ({status})"
            if step is not None and step.error:
                placeholder = f"{self.step} {status}: {step.error}"
            log.show_file(None, live=False, placeholder=placeholder)
        else:
            log.show_file(attempt.log_path, live=_active(attempt.status))
        self._render_log_titles()
        self._render_resources(attempt)

    def _render_log_titles(self) -> None:
        panel = self.query_one("#log-panel", Vertical)
        log = self.query_one("#log", LogView)
        attempt = self.shown_attempt()
        step = self._step_view()
        info = self.query_one("#log-info", Label)
        if self.step is None:
            panel.border_title = "Log"
            panel.border_subtitle = ""
            _update(info, "")
            return
        parts = [self.step]
        if attempt is not None:
            total = max(a.attempt for a in self.attempts if a.key == self.step)
            parts.append(f"attempt {attempt.attempt}" + (f" of {total}" if total > 1 else ""))
            if _active(attempt.status):
                parts.append("following" if log.follow else "paused")
            else:
                parts.append(attempt.status)
        panel.border_title = " · ".join(parts)
        sub: list[str] = []
        if log.indexing is not None:
            sub.append(f"indexing {log.indexing:.0%}")
        if log.search_term:
            sub.append(f"/{log.search_term}")
        if log.wrap:
            sub.append("wrap")
        if attempt is not None and _active(attempt.status):
            if log.follow:
                sub.append("▼ live")
            else:
                new = log.new_lines_while_paused
                sub.append(f"⏸ {new:,} new lines · G follows" if new else "⏸ paused · f follows")
        panel.border_subtitle = "  ".join(sub)
        error = attempt.error if attempt is not None else (step.error if step else None)
        if error and (attempt is None or attempt.status != StepStatus.SUCCESS):
            _update(
                info, Text(f"{glyph(StepStatus.FAILED)} {short_reason(error, 200)}", style="red")
            )
        elif attempt is not None and attempt.pid is not None and _active(attempt.status):
            _update(info, Text(f"pid {attempt.pid} {placement(attempt)}".rstrip(), style="dim"))
        elif attempt is not None and placement(attempt):
            _update(info, Text(f"ran {placement(attempt)}", style="dim"))
        else:
            _update(info, "")

    def _render_resources(self, attempt: AttemptView | None) -> None:
        samples = self._samples.get(attempt.id, []) if attempt is not None else []
        self.query_one("#cpu", ResourceGauge).update_values([s.cpu_percent for s in samples])
        self.query_one("#rss", ResourceGauge).update_values([float(s.rss_bytes) for s in samples])

    # --- events ---------------------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#steps")
    def _step_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.cursor_row != event.data_table.cursor_row or event.row_key.value is None:
            return  # a stale event from a rebuild: the cursor has moved on since
        key = str(event.row_key.value)
        if key != self.step:
            self.auto_step = False
            self.select_step(key)

    def select_step(self, key: str) -> None:
        """Show `key`'s latest attempt."""
        self.step, self.attempt_no = key, None
        if self.run is not None:
            self._render_timeline()
            self._render_log()
            self.refresh_bindings()
            self.load()  # fetch its samples now rather than at the next tick

    @on(LogView.StatusChanged)
    def _log_status(self, event: LogView.StatusChanged) -> None:
        if not event.log_view.follow:
            self.auto_step = False  # the user is reading: don't switch the log under them
        self._render_log_titles()

    @on(LogView.SearchFinished)
    def _search_finished(self, event: LogView.SearchFinished) -> None:
        if event.line is None:
            self.notify(f"Not found: {event.term}", severity="warning", timeout=2)
        elif event.wrapped:
            self.notify("Search wrapped around the log", timeout=1.5)
        self._render_log_titles()
        self.refresh_bindings()  # n/N apply now

    @on(Input.Submitted, "#search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        log = self.query_one("#log", LogView)
        self._close_search()
        log.search(event.value)
        self._render_log_titles()

    def _close_search(self) -> None:
        search = self.query_one("#search", Input)
        search.display = False
        self.query_one("#log", LogView).focus()

    # --- actions --------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Hide what cannot apply to this run (the footer has room for ~10 keys at 100 columns);
        dim `[`/`]` at the first or last attempt."""
        run = self.run
        if action == "cancel_run":
            return run is not None and not run.finished
        if action == "rerun":
            return run is not None and run.status in (RunStatus.FAILED, RunStatus.CANCELED)
        if action in ("prev_attempt", "next_attempt"):
            tries = [a.attempt for a in self.attempts if a.key == self.step]
            shown = self.shown_attempt()
            if shown is None or len(tries) < 2:
                return False
            if action == "prev_attempt":
                return True if shown.attempt > min(tries) else None
            return True if shown.attempt < max(tries) else None
        if action in ("next_match", "prev_match"):
            return bool(self.query_one("#log", LogView).search_term)
        if action == "search":
            return not self.query_one("#search", Input).has_focus  # there "/" is text
        return True

    def action_back(self) -> None:
        search = self.query_one("#search", Input)
        if search.display:
            self._close_search()
            return
        self.app.pop_screen()

    def action_toggle_follow(self) -> None:
        self.query_one("#log", LogView).action_toggle_follow()

    def action_search(self) -> None:
        search = self.query_one("#search", Input)
        search.display = True
        search.value = self.query_one("#log", LogView).search_term
        self.set_focus(search)  # now, not after the keys already queued

    def action_next_match(self) -> None:
        self.query_one("#log", LogView).next_match()

    def action_prev_match(self) -> None:
        self.query_one("#log", LogView).previous_match()

    def action_log_top(self) -> None:
        self.query_one("#log", LogView).action_top()

    def action_log_bottom(self) -> None:
        self.query_one("#log", LogView).action_bottom()

    def action_toggle_wrap(self) -> None:
        self.query_one("#log", LogView).action_toggle_wrap()

    def _step_attempts(self) -> list[int]:
        return sorted(a.attempt for a in self.attempts if a.key == self.step)

    def _show_attempt(self, delta: int) -> None:
        tries = self._step_attempts()
        shown = self.shown_attempt()
        if shown is None or not tries:
            return
        at = tries.index(shown.attempt) + delta
        self.auto_step = False
        if 0 <= at < len(tries):
            # Pinning the latest attempt would stop following retries: unpin it instead.
            self.attempt_no = None if at == len(tries) - 1 else tries[at]
            self._render_log()
            self._render_timeline()
            self.refresh_bindings()
            self.load()

    def action_prev_attempt(self) -> None:
        self._show_attempt(-1)

    def action_next_attempt(self) -> None:
        self._show_attempt(+1)

    def action_switch_focus(self) -> None:
        table = self.query_one("#steps", DataTable)
        log = self.query_one("#log", LogView)
        (log if table.has_focus else table).focus()

    def action_cancel_run(self) -> None:
        if self.run is None:
            return
        run_id = self.run.id

        def answered(yes: bool | None) -> None:
            if yes:
                self._cancel(run_id)

        question = (
            f"Cancel run {run_id[:8]}? Queued steps are canceled and running ones stopped "
            "(SIGTERM, then SIGKILL)."
        )
        self.app.push_screen(
            ConfirmScreen("Cancel run", question, yes="Cancel run", no="Keep running"), answered
        )

    @work(exclusive=True, group="run-command", exit_on_error=False)
    async def _cancel(self, run_id: str) -> None:
        await asyncio.to_thread(self.client.request_cancel, run_id)
        self.notify(f"Cancel requested for run {run_id[:8]}", timeout=2)
        self.load()

    def action_rerun(self) -> None:
        if self.run is not None:
            self._rerun(self.run.id)

    @work(exclusive=True, group="run-command", exit_on_error=False)
    async def _rerun(self, run_id: str) -> None:
        await asyncio.to_thread(self.client.rerun, run_id)
        self.attempt_no = None  # show the new attempts as they start
        self.notify(f"Re-running the failed steps of run {run_id[:8]}", timeout=2)
        self.load()


def _update(widget: Static, content: VisualType) -> None:
    """Show `content` in `widget` only if it changed: an `update` lays the whole screen out
    again, and the log titles are re-rendered several times a second while a log streams.
    A widget whose size the CSS fixes (no `auto` width or height) is only repainted."""
    if widget.content != content:
        widget.update(content, layout=widget.styles.auto_dimensions)


def _pick_attempt(
    attempts: Sequence[AttemptView], step: str | None, attempt_no: int | None
) -> AttemptView | None:
    """The step's attempt number `attempt_no`, or its latest."""
    mine = [a for a in attempts if a.key == step]
    if not mine:
        return None
    if attempt_no is not None:
        for a in mine:
            if a.attempt == attempt_no:
                return a
    return max(mine, key=lambda a: a.attempt)


def _active(status: str) -> bool:
    """Whether a step (or an attempt) in `status` may still change: queued, running, retrying."""
    return not StepStatus(status).finished


def _cell_text(value: object) -> str:
    return value.plain if isinstance(value, Text) else str(value)


__all__ = ["RunScreen", "default_step"]
