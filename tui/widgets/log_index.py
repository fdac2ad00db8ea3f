"""A log file's lines without reading them: the newline index and how one line is shown.

No Textual here: `LogView` (log_view.py) builds on it, and it is what tests and scripts can use
on a file directly. `LineIndex` keeps 8 bytes a line (`array('Q')` of where each line ends),
fed with whole chunks through `bytes.split`, so indexing costs no Python loop per line.
"""

from __future__ import annotations

import bisect
import os
import re
from array import array
from enum import IntEnum
from itertools import accumulate, count
from operator import add

PREVIEW_LINES = 400  # lines of the preview of a big file, read from its end
PREVIEW_BYTES = 1 << 20  # ...but never more than this many bytes

_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f]")


class Kind(IntEnum):
    """What a line is, for colouring (a line's kind may depend on the line before)."""

    PLAIN = 0
    TRACEBACK = 1  # the header and indented frames of a traceback
    EXCEPTION = 2  # the line that ends a traceback (`ValueError: ...`)
    FAILED = 3  # dagtop's own `dagtop: step failed: ...` (or `step not started`)
    ENGINE = 4  # any other line of dagtop's own (`dagtop: step succeeded`, `dagtop: ended ...`)


class LineIndex:
    """Where each line of (part of) a file ends.

    `ends[i]` is the offset just past line i's newline; line 0 starts at `base`. Only complete
    lines are indexed; `scanned` may run ahead of `ends[-1]` by a partial line.
    """

    def __init__(self, base: int = 0) -> None:
        self.base = base
        self.ends = array("Q")
        self.scanned = base
        self.longest = 0
        self.sealed = False

    def __len__(self) -> int:
        return len(self.ends)

    @property
    def end(self) -> int:
        """The offset just past the last complete line."""
        return self.ends[-1] if self.ends else self.base

    def span(self, i: int) -> tuple[int, int]:
        """Line i's bytes: [start, stop), without its newline."""
        start = self.ends[i - 1] if i else self.base
        return start, self.ends[i] - 1

    def line_of(self, offset: int) -> int:
        """The line that holds the byte at `offset`."""
        return bisect.bisect_right(self.ends, offset)

    def feed(self, data: bytes) -> int:
        """Index `data`, the bytes that follow `scanned`; returns the number of new lines."""
        pos = self.scanned
        self.scanned += len(data)
        if data.find(b"\n") < 0:
            return 0
        parts = data.split(b"\n")
        n = len(parts) - 1
        carry = pos - self.end  # the part of the first line that came in earlier chunks
        self.ends.extend(map(add, accumulate(map(len, parts[:n])), count(pos + 1)))
        longest = max(map(len, parts[1:n]), default=0)
        self.longest = max(self.longest, len(parts[0]) + carry, longest)
        return n

    def skip(self, n: int) -> None:
        """Count `n` bytes known to hold no newline (a hole of the file) as scanned."""
        self.scanned += n

    def seal(self) -> bool:
        """Count a trailing partial line as complete (the writer is done); True if one was."""
        if self.sealed or self.scanned <= self.end:
            self.sealed = True
            return False
        self.longest = max(self.longest, self.scanned - self.end)
        self.ends.append(self.scanned + 1)  # as if a newline followed it
        self.sealed = True
        return True


def preview_index(fd: int, size: int, lines: int = PREVIEW_LINES) -> LineIndex:
    """An index of the last `lines` complete lines of a file, read backwards from its end."""
    start = size
    chunks: list[bytes] = []
    newlines = 0
    block = 64 << 10
    while start > 0 and newlines <= lines and size - start < PREVIEW_BYTES:
        step = min(block, start)
        start -= step
        chunk = os.pread(fd, step, start)
        chunks.append(chunk)
        newlines += chunk.count(b"\n")
    data = b"".join(reversed(chunks))
    if start > 0:  # the first line is cut: start after its newline
        cut = data.find(b"\n") + 1
        if cut == 0:  # no newline at all in the probe: nothing complete to show
            index = LineIndex(base=size)
            return index
        start, data = start + cut, data[cut:]
    index = LineIndex(base=start)
    index.feed(data)
    return index


def clean(raw: bytes) -> str:
    """Decode a line as a terminal would show it: the last of its `\\r` rewrites, no controls."""
    text = raw.decode("utf-8", errors="replace")
    if "\r" in text:
        text = text.rstrip("\r")
        text = text[text.rfind("\r") + 1 :]
    if "\t" in text:
        text = text.expandtabs(4)
    return _CONTROL.sub("", text)


__all__ = ["Kind", "LineIndex", "clean", "preview_index"]
