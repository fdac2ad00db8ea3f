"""`dagtop logs`: a run's step logs, streamed byte for byte however big they are.

A log is copied from its file to stdout in chunks (`os.sendfile`, or reads and writes of
1 MiB), so memory stays flat whatever its size, and every write is completed: one `write()`
to a pipe or file may write less than it was given (Linux writes at most 0x7ffff000 bytes a
call), and with `PYTHONUNBUFFERED=1` stdout has no buffer that would finish the job for us.
The bytes go out as they are in the file, as `cat` copies them: no decoding, no re-encoding.

`--tail N` finds where the last N lines start by reading backwards from the end, a block at
a time (as the UI's log view does), so the tail of a 2 GiB log costs what the tail is.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import time
from pathlib import Path

import click

from engine.client import Client

CHUNK = 1 << 20  # bytes a read/write or sendfile call moves: big enough to be cat's speed
BLOCK = 64 << 10  # bytes read at a time backwards from the end, looking for newlines


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of `data` to `fd`, however many calls it takes."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:  # stdout left non-blocking by whoever gave it to us
            select.select([], [fd], [])
            continue
        view = view[n:]


def copy_range(src: int, dst: int, start: int, end: int) -> None:
    """Copy bytes [start, end) of the file `src` to `dst`, completing every write."""
    offset = start
    try:
        while offset < end:
            try:
                sent = os.sendfile(dst, src, offset, min(end - offset, CHUNK << 4))
            except BlockingIOError:
                select.select([], [dst], [])
                continue
            if sent == 0:  # the file shrank under us: nothing more to send
                return
            offset += sent
        return
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) or offset > start:
            raise
        # sendfile() refuses some destinations (EINVAL, say): read and write instead.
    while offset < end:
        data = os.pread(src, min(end - offset, CHUNK), offset)
        if not data:
            return
        write_all(dst, data)
        offset += len(data)


def tail_offset(fd: int, size: int, lines: int) -> int:
    """Where the last `lines` lines of a file of `size` bytes start (a last line without its
    newline counts as a line)."""
    if lines <= 0:
        return size
    # A newline that ends the file ends the last line; it does not start one.
    end = size - 1 if size and os.pread(fd, 1, size - 1) == b"\n" else size
    pos = end
    while pos > 0:
        step = min(BLOCK, pos)
        block = os.pread(fd, step, pos - step)
        cut = len(block)
        for _ in range(lines):
            cut = block.rfind(b"\n", 0, cut)
            if cut < 0:
                break
            lines -= 1
        if lines == 0:
            return pos - step + cut + 1
        pos -= step
    return 0


def complete_end(fd: int, start: int, end: int) -> int:
    """The offset just past the last newline in [start, end): only whole lines, for --follow
    (a line still being written is printed once it is finished)."""
    pos = end
    while pos > start:
        step = min(BLOCK, pos - start)
        cut = os.pread(fd, step, pos - step).rfind(b"\n")
        if cut >= 0:
            return pos - step + cut + 1
        pos -= step
    return start


def print_log(path: Path, offset: int | None, tail: int | None, whole_lines: bool) -> int:
    """Copy `path` from `offset` (None: its start, or its last `tail` lines) to stdout;
    returns the offset printed up to. A log not written yet prints nothing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return offset or 0
    try:
        size = os.fstat(fd).st_size
        if offset is None:
            offset = tail_offset(fd, size, tail) if tail is not None else 0
        end = complete_end(fd, offset, size) if whole_lines else size
        if end > offset:
            copy_range(fd, sys.stdout.fileno(), offset, end)
        return max(offset, end)
    finally:
        os.close(fd)


def _say(text: str) -> None:
    sys.stdout.flush()  # whatever went through sys.stdout comes before the raw bytes
    write_all(sys.stdout.fileno(), text.encode())


@click.command()
@click.argument("run_id")
@click.argument("step", required=False)
@click.option("--follow", "-f", is_flag=True, help="Keep printing as lines arrive")
@click.option(
    "--tail",
    "-n",
    type=click.IntRange(min=0),
    metavar="N",
    help="Start at the last N lines of each log",
)
@click.pass_obj
def logs(client: Client, run_id: str, step: str | None, follow: bool, tail: int | None) -> None:
    """Print a run's step logs (every attempt, in order); STEP: one asset or task."""
    printed: dict[Path, int] = {}
    sys.stdout.flush()
    try:
        while True:
            # Asked before the logs are listed: once the run has finished, this pass prints
            # every attempt to its last byte, a last line without a newline included.
            done = not follow or client.run(run_id).finished
            refs = client.logs(run_id, step)
            several = step is None or len(refs) > 1
            for ref in refs:
                offset = printed.get(ref.path)
                if offset is None and several:
                    _say(f"==> {ref.key} (attempt {ref.attempt}, {ref.status}) <==\n")
                printed[ref.path] = print_log(ref.path, offset, tail, whole_lines=not done)
            if done:
                break
            time.sleep(0.25)
    except BrokenPipeError:
        # The reader went away (`dagtop logs RUN | head`): nothing more to say, and nothing
        # left in a buffer to fail again when the process exits.
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return
