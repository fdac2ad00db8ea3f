"""LogView: a log file of any size, tailed live, searched, coloured by level.

Nothing of the file is held in memory but an index: `array('Q')` of the offset where each line
ends (8 bytes a line), built in a thread by scanning chunks with `bytes.split` (C speed, no
Python loop per line). Rendering reads only the visible lines with `os.pread` and keeps a small
LRU cache of rendered lines, as toolong does.

* **Opening a big file is instant.** A file larger than `SMALL_FILE` first gets a *preview*
  index of its last few hundred lines, read backwards from the end, so the last screen shows at
  once; the full index is built in the background and swapped in when it reaches the end
  (keeping the bottom pinned, or the same line in view if the user scrolled).
* **Following** re-scans from the last indexed offset every `POLL_INTERVAL` while the file is
  live, adds only complete lines (a trailing partial line waits for its newline, unless the file
  is sealed as finished), and publishes one batch per tick: thousands of lines a second cost one
  refresh. Scrolling up stops following; `f` or `G` resume it.
* **Wrap** needs to know how many rows each line takes. Rows are estimated from the byte length
  in the index (exact for ASCII), so no line is read to lay out; past `WRAP_MAX_LINES` lines wrap
  is refused (the layout pass would take too long on the event loop) and the view stays unwrapped.
* **Search** runs in a thread over big blocks of the file (`bytes.find`), maps the hit back to a
  line with a bisect of the index, and jumps there. Smart case: case-sensitive only if the term
  has an upper-case letter.
* One line shows at most `MAX_LINE_BYTES`; longer lines end with a note of their size.
* Holes of a sparse file (a writer that kept its offset across a copy-truncate rotation) hold
  no newline: the indexer skips them with `SEEK_DATA` instead of reading gigabytes of NULs.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import os
import re
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import on, work
from textual.binding import Binding
from textual.cache import LRUCache
from textual.geometry import Size
from textual.message import Message
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.worker import get_current_worker

from engine.units import format_bytes
from tui.widgets.log_index import Kind, LineIndex, clean, preview_index

CHUNK = 4 << 20  # bytes read per step of the indexer (each step holds the GIL ~5 ms at most)
SMALL_FILE = 8 << 20  # files up to this size are indexed before the first paint
MAX_LINE_BYTES = 16 << 10  # bytes of one line read for display
SEARCH_BLOCK = 4 << 20
WRAP_MAX_LINES = 200_000
POLL_INTERVAL = 0.15  # seconds between tail reads while the file is live
PUBLISH_INTERVAL = 0.1  # a long scan publishes its progress this often
KIND_LOOKBACK = 200  # lines looked back to find whether a line is inside a traceback

_LEVEL = re.compile(
    r"^(?P<prefix>(?:[\d:.,\-/T+Z]+\s+){0,3}\[?)(?P<level>CRITICAL|FATAL|ERROR|WARNING|WARN|"
    r"INFO|DEBUG|TRACE)\b"
)
_TRACEBACK = "Traceback (most recent call last):"
_CHAINED = ("During handling of the above exception", "The above exception was the direct cause")
# Lines dagtop itself writes into a step's log (engine.executor.leftovers.LINE_PREFIX): how the
# attempt ended and why, and what was left running that it ended.
_ENGINE = "dagtop: "
_FAILED = ("dagtop: step failed:", "dagtop: step not started:")


class _Call(Message, bubble=False):
    """Run `callback` on the event loop: how the scan thread hands over results.

    `post_message` is thread-safe and never blocks, unlike `call_from_thread`, which would hang
    a worker forever if the app stopped before answering.
    """

    def __init__(self, callback: Callable[[], object]) -> None:
        super().__init__()
        self.callback = callback


@dataclass(eq=False)
class _Source:
    """One opened file. The scan worker writes `index`; the event loop reads what is published."""

    path: Path | None
    fd: int | None = None
    index: LineIndex = field(default_factory=LineIndex)
    preview: LineIndex | None = None
    published: int = 0  # lines of `index` the view may show
    ready: bool = False  # the full index has reached the end of the file once
    scanning: bool = False
    closed: bool = False
    progress: float | None = None  # fraction of the file indexed while a preview shows
    error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def close(self) -> None:
        """Stop using the file (event loop). A scan in flight closes it when it ends."""
        with self.lock:
            self.closed = True
            busy = self.scanning
        if not busy:
            self.release()

    def scan_ended(self) -> None:
        """The scan worker is done with the file (its thread)."""
        with self.lock:
            self.scanning = False
            closed = self.closed
        if closed:
            self.release()

    def release(self) -> None:
        with self.lock:
            fd, self.fd = self.fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class LogView(ScrollView, can_focus=True):
    """A file-backed log viewer; see the module docstring."""

    COMPONENT_CLASSES = {
        "log-view--error",
        "log-view--warning",
        "log-view--debug",
        "log-view--dim",
        "log-view--traceback",
        "log-view--exception",
        "log-view--failed",
        "log-view--engine",
        "log-view--match",
        "log-view--current",
        "log-view--notice",
    }
    DEFAULT_CSS = """
    LogView { background: $surface; color: $foreground; overflow: auto auto; }
    LogView > .log-view--error { color: $text-error; }
    LogView > .log-view--warning { color: $text-warning; }
    LogView > .log-view--debug, LogView > .log-view--dim { color: $foreground 50%; }
    LogView > .log-view--traceback { color: $text-error 80%; }
    LogView > .log-view--exception { color: $text-error; text-style: bold; }
    LogView > .log-view--failed { background: $error 30%; color: $text-error; text-style: bold; }
    LogView > .log-view--engine { background: $accent 20%; color: $text-accent; text-style: bold; }
    LogView > .log-view--match { background: $warning 40%; }
    LogView > .log-view--current { background: $accent 60%; text-style: bold; }
    LogView > .log-view--notice { color: $foreground 50%; text-style: italic; }
    """

    BINDINGS = [
        Binding("end", "bottom", "Bottom", show=False),
        Binding("home", "top", "Top", show=False),
    ]

    follow: reactive[bool] = reactive(True, init=False)
    """Keep the newest line in view as lines arrive."""
    wrap: reactive[bool] = reactive(False, init=False)
    """Wrap long lines (refused for huge files; see the module docstring)."""

    class StatusChanged(Message):
        """Following, line count, indexing progress or file presence changed."""

        def __init__(self, log_view: LogView) -> None:
            super().__init__()
            self.log_view = log_view

        @property
        def control(self) -> LogView:
            return self.log_view

        def can_replace(self, message: Message) -> bool:
            return isinstance(message, LogView.StatusChanged) and message.log_view is self.log_view

    class SearchFinished(Message):
        """A search ended: `line` is the match (None if there is none); `wrapped` past an end."""

        def __init__(self, log_view: LogView, term: str, line: int | None, wrapped: bool) -> None:
            super().__init__()
            self.log_view = log_view
            self.term = term
            self.line = line
            self.wrapped = wrapped

        @property
        def control(self) -> LogView:
            return self.log_view

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        live: bool = True,
        name: str | None = None,
        id: str | None = None,  # noqa: A002 - Textual's own keyword
        classes: str | None = None,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self._source = _Source(Path(path) if path is not None else None)
        self.live = live
        """The file may still grow: keep tailing it."""
        self.placeholder = "no log"
        """Shown when there is no file to show (`path` is None)."""
        self._strips: LRUCache[int, Strip] = LRUCache(2048)
        self._texts: LRUCache[int, Text] = LRUCache(4096)
        self._kinds: LRUCache[int, Kind] = LRUCache(8192)
        self._blended: dict[str, Style] = {}
        self._term = ""
        self._match: int | None = None
        self._wrap_rows = array("Q")  # cumulative display rows per line, in wrap mode
        self._wrap_width = 0
        self._pinning = False
        self._paused_at = 0  # the line count when following stopped
        self.lines_published = 0
        """Lines added by tail reads since opening (for throughput measurements)."""

    # --- public API -----------------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        return self._source.path

    @property
    def line_count(self) -> int:
        """Lines that can be shown now (of the preview while a big file is being indexed)."""
        src = self._source
        return len(src.preview) if src.preview is not None else src.published

    @property
    def missing(self) -> bool:
        """There is a path but no file (yet)."""
        return self._source.path is not None and self._source.fd is None

    @property
    def indexing(self) -> float | None:
        """The fraction of a big file indexed so far, while only its end is shown."""
        return self._source.progress if self._source.preview is not None else None

    @property
    def new_lines_while_paused(self) -> int:
        return max(0, self.line_count - self._paused_at) if not self.follow else 0

    def show_file(
        self, path: str | Path | None, *, live: bool, placeholder: str = "no log"
    ) -> None:
        """Show another file (or the same one, updating whether it may still grow)."""
        new = Path(path) if path is not None else None
        self.placeholder = placeholder
        if new == self._source.path and new is not None:
            was_live, self.live = self.live, live
            if was_live and not live:
                self._poll()  # one last read, which seals a trailing partial line
            return
        self._source.close()
        self._source = _Source(new)
        self.live = live
        self._reset_view()
        self.follow = True
        if self.is_mounted:
            self._poll()

    def line_text(self, i: int) -> str:
        """The text of line i as displayed (without styles)."""
        return self._text(i).plain

    def visible_text(self) -> list[str]:
        """The text of the lines in view, top to bottom (for tests and screenshots)."""
        if self.wrap:
            top = self._wrap_locate(round(self.scroll_y))[0]
            bottom = self._wrap_locate(round(self.scroll_y) + self.size.height - 1)[0]
        else:
            top = round(self.scroll_y)
            bottom = top + self.size.height - 1
        return [self.line_text(i) for i in range(top, min(bottom + 1, self.line_count))]

    def kind(self, i: int) -> Kind:
        """Plain, traceback, exception or failure line (see `Kind`)."""
        cached = self._kinds.get(i)
        if cached is not None:
            return cached
        # Walk back over lines whose kind depends on the line before (indented or blank ones)
        # to one that starts a run: from there, classify forwards and cache.
        first = i
        while first > 0 and i - first < KIND_LOOKBACK and self._kinds.get(first - 1) is None:
            text = self._text(first).plain
            if first < i and text and not text.startswith((" ", "\t")):
                break
            first -= 1
        known = first == 0 or self._kinds.get(first - 1) is not None
        prev = self._kinds.get(first - 1) or Kind.PLAIN if first > 0 else Kind.PLAIN
        kind = Kind.PLAIN
        for j in range(first, i + 1):
            kind = self._classify(self._text(j).plain, prev)
            # Without the line before, an anchor line may be an exception line that we took for
            # plain: either way the lines after it are not in a traceback, but don't cache it.
            if known or j > first:
                self._kinds[j] = kind
            prev = kind
        return kind

    def search(self, term: str, *, backwards: bool | None = None) -> None:
        """Find `term` after the current match (or from the top line in view) and jump to it.

        Following (at the bottom), the search goes backwards from the end: the newest match.
        """
        if not term:
            self.clear_search()
            return
        if backwards is None:
            backwards = self.follow
        if term != self._term:
            self._term = term
            self._match = None
            self._strips.clear()
            self.refresh()
        if self._match is not None:
            origin = self._match + (-1 if backwards else 1)
        elif backwards:
            origin = self.line_count - 1
        else:
            origin = self._top_line()
        self._start_search(term, origin, backwards)

    def next_match(self) -> None:
        if self._term:
            self.search(self._term, backwards=False)

    def previous_match(self) -> None:
        if self._term:
            self.search(self._term, backwards=True)

    def clear_search(self) -> None:
        self._term, self._match = "", None
        self._strips.clear()
        self.refresh()

    @property
    def search_term(self) -> str:
        return self._term

    @property
    def match_line(self) -> int | None:
        return self._match

    # --- actions --------------------------------------------------------------------------------

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow

    def action_top(self) -> None:
        self.follow = False
        self.scroll_to(y=0, animate=False, force=True)

    def action_bottom(self) -> None:
        self.follow = True
        self._pin_bottom()

    def action_toggle_wrap(self) -> None:
        top = self._top_line()
        self.wrap = not self.wrap
        if not self.follow:
            self._scroll_to_line(top, margin=0)  # the same line stays at the top

    def action_next_match(self) -> None:
        self.next_match()

    def action_previous_match(self) -> None:
        self.previous_match()

    # --- reactives ------------------------------------------------------------------------------

    def watch_follow(self, follow: bool) -> None:
        if follow:
            self._follow_bottom()
        else:
            self._paused_at = self.line_count
        self.post_message(self.StatusChanged(self))

    def validate_wrap(self, wrap: bool) -> bool:
        if wrap and self.line_count > WRAP_MAX_LINES:
            self.notify(f"Wrap is off for logs over {WRAP_MAX_LINES:,} lines", severity="warning")
            return False
        return wrap

    def watch_wrap(self) -> None:
        self._wrap_rows = array("Q")
        self._wrap_width = 0
        self._strips.clear()
        self._update_virtual_size()
        self._follow_bottom()
        self.refresh()
        self.post_message(self.StatusChanged(self))

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        # The user scrolled up (wheel, keys, scrollbar): stop following. A scroll that only
        # clamps to a new bottom (a resize) leaves us at the bottom and keeps following.
        if (
            self.follow
            and not self._pinning
            and new_value < old_value
            and round(new_value) < self.max_scroll_y
        ):
            self.follow = False

    # --- lifecycle ------------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.set_interval(POLL_INTERVAL, self._poll)
        self._poll()

    def on_unmount(self) -> None:
        self._source.close()

    def on_resize(self) -> None:
        if self.wrap:
            self._wrap_rows = array("Q")
            self._update_virtual_size()
            self._strips.clear()
        self._follow_bottom()

    # --- reading the file (thread) ---------------------------------------------------------------

    def _poll(self) -> None:
        src = self._source
        if src.scanning or src.closed:
            return
        if src.fd is None and src.path is None:
            return
        if src.ready and not self.live and src.index.sealed:
            return  # a finished file, fully read: nothing will change
        with src.lock:
            src.scanning = True
        self._scan(src, self.live)

    def _call(self, callback: Callable[..., object], *args: object) -> None:
        """From a thread: run `callback(*args)` on the event loop, in order, without waiting."""
        self.post_message(_Call(partial(callback, *args)))

    @on(_Call)
    def _run_call(self, message: _Call) -> None:
        message.stop()
        message.callback()

    # Not `exclusive`: cancelling a thread worker doesn't stop it, and two scans of one index
    # must never overlap. `_Source.scanning` allows one at a time; a new file gets a new source.
    @work(thread=True, group="log-scan", exit_on_error=False)
    def _scan(self, src: _Source, live: bool) -> None:
        """Index what the file gained since the last scan; publish in batches."""
        try:
            self._scan_file(src, live)
            src.error = None
        except OSError as exc:
            src.error = exc.strerror or str(exc)
        finally:
            src.scan_ended()
            self._call(self._scan_done, src)

    def _scan_file(self, src: _Source, live: bool) -> None:
        fd = src.fd
        if fd is None:
            assert src.path is not None
            try:
                fd = os.open(src.path, os.O_RDONLY)
            except FileNotFoundError:
                return
            with src.lock:
                src.fd = fd
        size = os.fstat(fd).st_size
        index = src.index
        if size < index.scanned or (index.sealed and size > index.scanned):
            # Truncated or rewritten (or grew after we sealed it): start over, on the loop,
            # which may be reading the old index right now.
            self._call(self._restart, src, index)
            return
        previewing = not src.ready and size - index.scanned > SMALL_FILE
        if previewing and src.preview is None:
            self._call(self._show_preview, src, index, preview_index(fd, size))
        last_publish = time.monotonic()
        worker = get_current_worker()
        while index.scanned < size:
            if src.closed or worker.is_cancelled:
                return
            hole = _hole_at(fd, index.scanned, size)
            if hole:
                index.skip(hole)
                continue
            data = os.pread(fd, min(CHUNK, size - index.scanned), index.scanned)
            if not data:
                break
            index.feed(data)
            now = time.monotonic()
            if now - last_publish >= PUBLISH_INTERVAL:
                last_publish = now
                if previewing:
                    src.progress = index.scanned / size
                    self.post_message(self.StatusChanged(self))
                else:
                    self._call(self._publish, src, index, len(index))
        if not live and index.scanned >= size:
            index.seal()
        if index is src.index:
            src.ready = True

    def _scan_done(self, src: _Source) -> None:
        if src is not self._source:
            src.close()
            return
        self._publish(src, src.index, len(src.index))

    def _restart(self, src: _Source, index: LineIndex) -> None:
        if src is self._source and src.index is index:
            src.index, src.preview, src.progress = LineIndex(), None, None
            src.published, src.ready = 0, False
            self._reset_view()

    def _show_preview(self, src: _Source, index: LineIndex, preview: LineIndex) -> None:
        """Show the end of a big file while its full index is built."""
        if src is not self._source or index is not src.index:
            return
        src.preview, src.progress = preview, 0.0
        self._strips.clear()
        self._texts.clear()
        self._kinds.clear()
        self._update_virtual_size()
        self._follow_bottom()
        self.refresh()
        self.post_message(self.StatusChanged(self))

    def _publish(self, src: _Source, index: LineIndex, lines: int) -> None:
        """Show the lines indexed so far (on the event loop: the one place the view grows).

        Args:
            src: The file the lines belong to (ignored if another file is shown now).
            index: The index they are counted in (ignored if the file was re-indexed since).
            lines: How many lines of `index` are complete.
        """
        if src is not self._source or index is not src.index:
            return
        changed = False
        if src.preview is not None:
            if not src.ready:
                return
            self._swap_preview(src)
            changed = True
        elif lines > src.published:
            self.lines_published += lines - src.published
            src.published = lines
            changed = True
        if changed:
            self._update_virtual_size()
            self._follow_bottom()
        if changed or self.line_count == 0:
            self.refresh()  # with no lines, the placeholder may have changed (missing -> empty)
        self.post_message(self.StatusChanged(self))

    def _swap_preview(self, src: _Source) -> None:
        """The full index reached the end: show it instead of the preview, same line in view."""
        preview = src.preview
        assert preview is not None
        top_offset = preview.span(min(self._top_line(), len(preview) - 1))[0] if preview else 0
        src.preview = None
        src.progress = None
        src.published = len(src.index)
        self._strips.clear()
        self._texts.clear()
        self._kinds.clear()
        self._wrap_rows = array("Q")
        self._match = None
        self._update_virtual_size()
        if not self.follow:
            self.scroll_to(y=src.index.line_of(top_offset), animate=False, force=True)

    # --- layout ---------------------------------------------------------------------------------

    def _view_index(self) -> LineIndex:
        src = self._source
        return src.preview if src.preview is not None else src.index

    def _reset_view(self) -> None:
        self._strips.clear()
        self._texts.clear()
        self._kinds.clear()
        self._wrap_rows = array("Q")
        self._match = None
        self._set_virtual_size(Size(0, 0))
        self._pinning = True
        try:
            self.scroll_to(0, 0, animate=False, force=True)
        finally:
            self._pinning = False
        self.refresh()

    def _update_virtual_size(self) -> None:
        index = self._view_index()
        lines = self.line_count
        if self.wrap:
            self._extend_wrap_rows()
            rows = self._wrap_rows[-1] if self._wrap_rows else 0
            self._set_virtual_size(Size(self.scrollable_content_region.width, rows))
        else:
            width = index.longest
            if width > MAX_LINE_BYTES:
                width = MAX_LINE_BYTES + 24  # room for "… (1.2 GiB line)"
            self._set_virtual_size(Size(width, lines))

    def _set_virtual_size(self, size: Size) -> None:
        """Grow (or shrink) the scrollable area without laying the screen out again.

        Setting `virtual_size` makes Textual re-lay out the whole screen, several times a
        second while a log streams in. Unless the view sizes itself to its content (an `auto`
        width or height), only its scrollbars depend on it: update them (which asks for a
        layout by itself if one appears or goes) and repaint the view.
        """
        if size == self.virtual_size:
            return
        if self.styles.auto_dimensions or not self.is_mounted:
            self.virtual_size = size
            return
        self.set_reactive(LogView.virtual_size, size)
        self._scroll_update(size)
        self.refresh()

    def _extend_wrap_rows(self) -> None:
        width = max(1, self.scrollable_content_region.width)
        if width != self._wrap_width:
            self._wrap_rows = array("Q")
            self._wrap_width = width
        index = self._view_index()
        rows = self._wrap_rows
        total = rows[-1] if rows else 0
        new = []
        for i in range(len(rows), self.line_count):
            start, stop = index.span(i)
            total += max(1, -(-min(stop - start, MAX_LINE_BYTES) // width))
            new.append(total)
        rows.extend(new)

    def _wrap_locate(self, row: int) -> tuple[int, int]:
        """The line shown at display row `row`, and which of its rows it is."""
        if not self._wrap_rows:
            return row, 0
        line = bisect.bisect_right(self._wrap_rows, row)
        first = self._wrap_rows[line - 1] if line else 0
        return line, row - first

    def _top_line(self) -> int:
        y = round(self.scroll_y)
        return self._wrap_locate(y)[0] if self.wrap else y

    def _pin_bottom(self) -> None:
        self._pinning = True
        try:
            self.scroll_to(y=self.max_scroll_y, animate=False, force=True)
        finally:
            self._pinning = False

    def _follow_bottom(self) -> None:
        """Pin to the bottom now and again after the next layout, which may add a scrollbar
        (one row less of content) or give the widget its first size."""
        if self.follow:
            self._pin_bottom()
            self.call_after_refresh(self._pin_if_following)

    def _pin_if_following(self) -> None:
        if self.follow:
            self._pin_bottom()

    def _scroll_to_line(self, line: int, margin: int | None = None) -> None:
        """Bring `line` into view, `margin` rows below the top (default: a third down)."""
        if self.wrap:
            self._extend_wrap_rows()
            y = self._wrap_rows[line - 1] if line and self._wrap_rows else 0
        else:
            y = line
        if margin is None:
            margin = self.scrollable_content_region.height // 3
        self.scroll_to(y=max(0, y - margin), animate=False, force=True)

    # --- rendering ------------------------------------------------------------------------------

    def _raw(self, i: int) -> tuple[bytes, int]:
        """Line i's bytes (at most MAX_LINE_BYTES) and its full length."""
        fd = self._source.fd
        if fd is None:
            return b"", 0
        try:
            start, stop = self._view_index().span(i)
            length = stop - start
            return os.pread(fd, min(length, MAX_LINE_BYTES), start), length
        except (OSError, IndexError):
            return b"", 0

    def _text(self, i: int) -> Text:
        cached = self._texts.get(i)
        if cached is not None:
            return cached
        raw, length = self._raw(i)
        plain = clean(raw)
        # Colours a program printed itself (ANSI escapes) are kept.
        text = Text.from_ansi(plain, no_wrap=True) if "\x1b" in plain else Text(plain, no_wrap=True)
        if length > len(raw):
            text.append(f" … ({format_bytes(length)} line)", "italic")
        self._texts[i] = text
        return text

    @staticmethod
    def _classify(text: str, prev: Kind) -> Kind:
        if text.startswith(_TRACEBACK) or text.startswith(_CHAINED):
            return Kind.TRACEBACK
        if text.startswith(_FAILED):
            return Kind.FAILED
        if text.startswith(_ENGINE):
            return Kind.ENGINE
        if prev == Kind.TRACEBACK:
            if text.startswith((" ", "\t")) or not text:
                return Kind.TRACEBACK
            return Kind.EXCEPTION
        return Kind.PLAIN

    def _style(self, name: str) -> Style:
        """A component style with its colours blended over the background (Textual's partial
        styles drop the alpha of `$foreground 50%`)."""
        style = self._blended.get(name)
        if style is None:
            styles = self.get_component_styles(f"log-view--{name}")
            _, background = self.background_colors
            color = background + styles.color if styles.has_rule("color") else None
            bgcolor = background + styles.background if styles.has_rule("background") else None
            style = Style(
                color=color.rich_color if color is not None else None,
                bgcolor=bgcolor.rich_color if bgcolor is not None else None,
            ) + (styles.text_style if styles.has_rule("text_style") else Style())
            self._blended[name] = style
        return style

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._blended.clear()
        self._strips.clear()

    def _render_full(self, i: int) -> Strip:
        cached = self._strips.get(i)
        if cached is not None:
            return cached
        text = self._text(i).copy()
        plain = text.plain
        kind = self.kind(i)
        if kind == Kind.PLAIN:
            level = _LEVEL.match(plain)
            if level is not None:
                name = level["level"]
                end = level.end("level")
                text.stylize(self._style("dim"), 0, len(level["prefix"]))
                if name in ("ERROR", "CRITICAL", "FATAL"):
                    text.stylize(self._style("error"), len(level["prefix"]))
                    text.stylize(Style(bold=True), len(level["prefix"]), end)
                elif name in ("WARNING", "WARN"):
                    text.stylize(self._style("warning"), len(level["prefix"]))
                    text.stylize(Style(bold=True), len(level["prefix"]), end)
                elif name in ("DEBUG", "TRACE"):
                    text.stylize(self._style("debug"))
        elif kind == Kind.TRACEBACK:
            text.stylize(self._style("traceback"))
        elif kind == Kind.EXCEPTION:
            text.stylize(self._style("exception"))
        elif kind == Kind.FAILED:
            text.stylize(self._style("failed"))
        elif kind == Kind.ENGINE:
            text.stylize(self._style("engine"))
        if self._term:
            self._highlight(text, plain, i == self._match)
        segments = list(text.render(self.app.console))
        strip = Strip(segments, text.cell_len)
        self._strips[i] = strip
        return strip

    def _highlight(self, text: Text, plain: str, current: bool) -> None:
        term = self._term
        sensitive = term != term.lower()
        haystack = plain if sensitive else plain.lower()
        needle = term if sensitive else term.lower()
        style = self._style("current" if current else "match")
        at = haystack.find(needle)
        while at >= 0:
            text.stylize(style, at, at + len(needle))
            at = haystack.find(needle, at + len(needle))

    def _notice(self, message: str, width: int) -> Strip:
        style = self.rich_style + self._style("notice")
        return Strip([Segment(message[:width], style)]).extend_cell_length(width, self.rich_style)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        base = self.rich_style
        if self.line_count == 0:
            if y != 0:
                return Strip.blank(width, base)
            src = self._source
            if src.path is None:
                message = self.placeholder
            elif src.error is not None:
                message = f"cannot read {src.path.name}: {src.error}"
            elif src.fd is None:
                message = f"log not written yet: {src.path.name}"
            elif src.preview is not None:
                message = "indexing…"
            else:
                message = "(no output yet)" if self.live else "(no output)"
            return self._notice(message, width)
        if self.wrap:
            line, sub = self._wrap_locate(scroll_y + y)
            if line >= self.line_count:
                return Strip.blank(width, base)
            strip = self._render_full(line).crop(sub * width, (sub + 1) * width)
            return strip.extend_cell_length(width, base).apply_style(base)
        line = scroll_y + y
        if line >= self.line_count:
            return Strip.blank(width, base)
        strip = self._render_full(line)
        return strip.crop_extend(scroll_x, scroll_x + width, base).apply_style(base)

    # --- search (thread) ------------------------------------------------------------------------

    def _start_search(self, term: str, origin: int, backwards: bool) -> None:
        src = self._source
        index = src.preview if src.preview is not None else src.index
        # The search reads its own descriptor: the view may close the file in the meantime.
        fd = os.dup(src.fd) if src.fd is not None else None
        self._search(src, index, fd, term, origin, backwards, self.line_count)

    @work(thread=True, exclusive=True, group="log-search", exit_on_error=False)
    def _search(
        self,
        src: _Source,
        index: LineIndex,
        fd: int | None,
        term: str,
        origin: int,
        backwards: bool,
        lines: int,
    ) -> None:
        try:
            line, wrapped = self._search_file(index, fd, term, origin, backwards, lines)
        except OSError:
            line, wrapped = None, False
        finally:
            if fd is not None:
                os.close(fd)
        if not get_current_worker().is_cancelled:  # a newer search replaced this one
            self._call(self._search_done, src, index, term, line, wrapped)

    @staticmethod
    def _search_file(
        index: LineIndex, fd: int | None, term: str, origin: int, backwards: bool, lines: int
    ) -> tuple[int | None, bool]:
        if fd is None or lines == 0:
            return None, False
        sensitive = term != term.lower()
        needle = term.encode() if sensitive else term.lower().encode()
        origin = min(max(origin, 0), lines - 1)
        first, last_end = index.base, index.ends[lines - 1]
        at = index.span(origin)[0] if not backwards else index.ends[origin]
        if backwards:
            hit = _find(fd, needle, first, at, sensitive, backwards=True)
            wrapped = False
            if hit is None:
                hit, wrapped = _find(fd, needle, at, last_end, sensitive, backwards=True), True
        else:
            hit = _find(fd, needle, at, last_end, sensitive, backwards=False)
            wrapped = False
            if hit is None:
                hit, wrapped = _find(fd, needle, first, at, sensitive, backwards=False), True
        line = index.line_of(hit) if hit is not None else None
        if line is not None and line >= lines:
            line = None
        return line, wrapped

    def _search_done(
        self, src: _Source, index: LineIndex, term: str, line: int | None, wrapped: bool
    ) -> None:
        if src is not self._source or index is not self._view_index() or term != self._term:
            return
        if line is not None:
            previous, self._match = self._match, line
            self._strips.discard(line)
            if previous is not None:
                self._strips.discard(previous)
            self.follow = False
            self._scroll_to_line(line)
            self.refresh()
        self.post_message(self.SearchFinished(self, term, line, wrapped and line is not None))


def _hole_at(fd: int, pos: int, size: int) -> int:
    """How many bytes from `pos` are a hole (unwritten, all NULs, so no newline): a file whose
    writer kept its offset across a copy-truncate rotation starts with one. 0 if data."""
    try:
        data = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError as exc:
        return size - pos if exc.errno == errno.ENXIO else 0  # ENXIO: a hole to the end
    return max(0, min(data, size) - pos)


def _find(fd: int, needle: bytes, lo: int, hi: int, sensitive: bool, backwards: bool) -> int | None:
    """The offset of the first (or last) `needle` in bytes [lo, hi) of a file, read in blocks."""
    worker = get_current_worker()
    overlap = max(0, len(needle) - 1)
    if backwards:
        end = hi
        while end > lo:
            if worker.is_cancelled:
                return None
            start = max(lo, end - SEARCH_BLOCK)
            block = os.pread(fd, end - start, start)
            if not sensitive:
                block = block.lower()
            k = block.rfind(needle)
            if k >= 0:
                return start + k
            if start == lo:
                return None
            end = start + overlap
        return None
    pos = lo
    while pos < hi:
        if worker.is_cancelled:
            return None
        n = min(SEARCH_BLOCK, hi - pos)
        block = os.pread(fd, n, pos)
        if not block:
            return None
        if not sensitive:
            block = block.lower()
        k = block.find(needle)
        if k >= 0:
            return pos + k
        if pos + n >= hi:
            return None
        pos += n - overlap
    return None


__all__ = ["Kind", "LineIndex", "LogView", "clean", "preview_index"]
