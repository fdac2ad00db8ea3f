"""`dagtop logs` as a user runs it: real runs, real `dagtop` processes, logs of any size.

Big logs are made cheaply: the real log of a real run is grown with a hole (`truncate`), which
costs no disk, and real lines are appended after it, so the end of the file is what a reader
must see intact.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))
PIPELINE = textwrap.dedent(
    """
    import sys
    import time

    from engine import asset


    @asset
    def chatty():
        for i in range(5):
            print("line", i)
        return 1


    @asset
    def slow():
        for i in range(6):
            print("tick", i, flush=True)
            time.sleep(0.25)
        sys.stdout.write("no newline at the end")
        return 1
    """
)
LAST = b"the very last line of the log\n"
LONG = b"x" * 200_000 + b"\n" + b"y" * 70_000 + b"\n"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "steps.py").write_text(PIPELINE)
    return tmp_path


def dagtop(project: Path, *args: str) -> list[str]:
    return [DAGTOP, "--home", str(project / "home"), "--pipelines", str(project / "pipelines"),
            *args]  # fmt: skip


def materialized(project: Path, asset: str) -> tuple[str, Path]:
    """A real run of `asset`: its id and its step's log file."""
    done = subprocess.run(dagtop(project, "materialize", asset, "--json"), capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    run_id = json.loads(done.stdout)["id"]
    (log,) = (project / "home" / "logs" / run_id).glob(f"{asset}.*.log")
    return run_id, log


def grow(log: Path, hole: int, lines: bytes) -> int:
    """Make `log` a sparse file: its own bytes, a hole up to `hole` bytes, then `lines`."""
    with log.open("r+b") as fh:
        fh.truncate(hole)
        fh.seek(0, os.SEEK_END)
        fh.write(lines)
    return log.stat().st_size


def stream(argv: list[str], env: dict[str, str]) -> tuple[int, bytes, int, int]:
    """Run `argv`, reading its stdout as it comes: (bytes read, the last 4 KiB, exit code,
    peak RSS of the process while it wrote, sampled with psutil every 10 ms)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    out = proc.stdout
    assert isinstance(out, io.BufferedReader)  # what Popen makes of a pipe (it has read1)
    watched = psutil.Process(proc.pid)
    total, tail, peak, sampled = 0, b"", 0, 0.0
    while chunk := out.read1(1 << 20):
        total += len(chunk)
        tail = (tail + chunk)[-4096:]
        # Sampled once it writes, so surely after its exec: a forked child shows the memory
        # of the process that forked it until then (and so would its rusage's peak).
        if time.monotonic() - sampled > 0.01:
            sampled = time.monotonic()
            with contextlib.suppress(psutil.Error):
                peak = max(peak, watched.memory_info().rss)
    return total, tail, proc.wait(), peak


def test_a_log_over_2_gib_comes_out_whole_to_its_last_byte_with_unbuffered_stdout(
    project: Path,
) -> None:
    # Linux writes at most 0x7ffff000 bytes in one write(): a log printed in one call lost
    # its last 4 KiB, and with them its last line.
    run_id, log = materialized(project, "chatty")
    size = grow(log, (2 << 30) + 4096, b"\none before the last\n" + LAST)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    total, tail, code, peak = stream(dagtop(project, "logs", run_id, "chatty"), env)
    assert code == 0
    assert total == size
    assert tail.endswith(b"\none before the last\n" + LAST)
    assert peak < 150 << 20, f"peak RSS {peak >> 20} MiB"


def test_streaming_a_big_log_keeps_memory_flat(project: Path) -> None:
    run_id, log = materialized(project, "chatty")
    head = log.read_bytes()
    size = grow(log, 300 << 20, b"x" * 100 + b"\n" + LAST)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    total, tail, code, peak = stream(dagtop(project, "logs", run_id, "chatty"), env)
    assert (code, total) == (0, size) and tail.endswith(LAST)
    # The interpreter and the engine's imports are most of it; the log adds a buffer at most.
    assert peak < 100 << 20, f"peak RSS {peak >> 20} MiB for a {size >> 20} MiB log"
    assert head.startswith(b"line 0\n")


def test_tail_prints_the_last_lines_of_each_attempt(project: Path) -> None:
    run_id, log = materialized(project, "chatty")
    out = subprocess.run(dagtop(project, "logs", run_id, "chatty", "--tail", "2"),
                         capture_output=True, timeout=30, check=True).stdout  # fmt: skip
    # Every log ends with dagtop's own line on how the attempt ended.
    assert out == b"line 4\ndagtop: step succeeded\n"
    every = subprocess.run(dagtop(project, "logs", run_id, "-n", "1"),
                           capture_output=True, timeout=30, check=True).stdout  # fmt: skip
    assert every.splitlines()[1:] == [b"dagtop: step succeeded"] and b"==> chatty" in every
    # Seeking from the end: the tail of a 2 GiB log costs what the tail is.
    grow(log, 2 << 30, b"\nsecond to last\n" + LAST)
    started = time.monotonic()
    out = subprocess.run(dagtop(project, "logs", run_id, "chatty", "-n", "2"),
                         capture_output=True, timeout=30, check=True).stdout  # fmt: skip
    assert out == b"second to last\n" + LAST
    assert time.monotonic() - started < 5


def test_follow_prints_lines_as_they_come_and_the_last_one_when_the_run_ends(
    project: Path,
) -> None:
    runner = subprocess.Popen(dagtop(project, "materialize", "slow"), stdout=subprocess.DEVNULL)
    try:
        runs: list[dict[str, object]] = []
        deadline = time.monotonic() + 30
        while not runs:
            assert time.monotonic() < deadline
            time.sleep(0.1)
            got = subprocess.run(dagtop(project, "runs", "--json"), capture_output=True)
            runs = json.loads(got.stdout or b"[]") if got.returncode == 0 else []
        follow = subprocess.run(dagtop(project, "logs", str(runs[0]["id"]), "slow", "--follow"),
                                capture_output=True, timeout=60)  # fmt: skip
    finally:
        runner.wait(timeout=60)
    assert follow.returncode == 0, follow.stderr
    lines = follow.stdout.split(b"\n")
    assert [line for line in lines if line.startswith(b"tick")] == [
        f"tick {i}".encode() for i in range(6)
    ]
    # The step's last line had no newline; dagtop's end line still starts a line of its own.
    assert follow.stdout.endswith(b"no newline at the end\ndagtop: step succeeded\n")


@pytest.mark.parametrize(
    ("data", "lines", "expected"),
    [
        (b"a\nb\nc\n", 2, b"b\nc\n"),
        (b"a\nb\nc", 2, b"b\nc"),  # a last line without its newline is a line
        (b"a\nb\nc\n", 5, b"a\nb\nc\n"),
        (b"a\nb\nc\n", 0, b""),
        (b"", 3, b""),
        (b"\n\n\n", 2, b"\n\n"),
        (LONG, 1, b"y" * 70_000 + b"\n"),  # lines longer than the block read backwards
        (LONG, 2, LONG),
    ],
    ids=["two", "no-newline", "more-than-all", "none", "empty", "blank", "long", "long-two"],
)  # fmt: skip
def test_tail_offset_finds_where_the_last_lines_start(
    tmp_path: Path, data: bytes, lines: int, expected: bytes
) -> None:
    from engine.cli.logs import complete_end, tail_offset

    path = tmp_path / "log"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert data[tail_offset(fd, len(data), lines) :] == expected
        # --follow prints whole lines only: up to the last newline.
        assert data[: complete_end(fd, 0, len(data))] == data[: data.rfind(b"\n") + 1]
    finally:
        os.close(fd)
