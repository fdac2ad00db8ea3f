"""Soak: drive a real `dagtop daemon` for minutes under everything at once, then audit it.

    python -m tests.soak.soak --minutes 10          # from the repository root
    python -m tests.soak.soak --seconds 60 --seed 7 --keep

What runs at the same time, against a throw-away project (tests/soak/soak_pipeline.py):

- a `* * * * *` schedule with catchup (`every_minute` -> `ticker`). Cron has a resolution of one
  minute, so frequent runs come from a second source: a submitter starts `dagtop materialize`
  (or `dagtop run`) in a new process every second (`--submit-every`), each one handed to the
  daemon through the command table, or run in-process by the CLI when the daemon is down at that
  moment (both paths are what users do);
- bursts of files dropped into the `drops` sensor's folder (50 at once by default, random names
  with spaces, unicode and punctuation), plus files written slowly (in place, pausing less than
  the sensor's settle time between writes) or written as `.part` and renamed;
- `chaos` runs that succeed, fail every attempt, fail once then succeed (retries), time out
  (`timeout=`), blow their memory limit (`memory_limit=`), exit without reporting, or print a lot;
  or succeed leaving helper processes in their group, in a new session and orphaned, or time out
  with children that ignore SIGTERM;
- backfills of daily partitions started with `--no-wait`, canceled with `--cancel`, some resumed;
- waves of job files (`.job`, each written under a temporary name and renamed) in the queue of
  the `jobs` custom sensor, which requests one run per file with the file's name as run key;
- kill -9 of the daemon's pid only (as a crash would: its workers and fork server are orphaned),
  at random moments during the first part of the soak (`--kill-until`), some while it starts,
  each followed by a restart; the rest of the soak runs on one daemon, whose memory is measured;
- a damaged copy of the database a few times (`_damager`): the live database copied with
  `dagtop db backup` while the daemon writes (the copy must pass `dagtop db check`), then
  damaged (pages overwritten, cut short, a bad header, zero bytes), and `db check`, `runs` and
  a `daemon` pointed at it with the real home must each fail in one line, the daemon without
  starting or sweeping a value of the real home;
- `dagtop materialize feed` now and then: `feed_clean` and `feed_summary` are eager
  (`Auto.eager()`), so the daemon's `auto` sensor must request each update's chain once;
- a reader process that reads state as the TUI does (`runs(limit=200)`, `runs_since`,
  `node_statuses`, `partitions`, `logs`, `attempts`, `backfills`), counting errors and keeping
  the TUI's incremental mirror of run statuses.

At the end the daemon is stopped cleanly (SIGTERM), the schedule is turned off, a fresh daemon
reconciles until nothing is queued or running (with a deadline) and is stopped, and the audit
checks and prints: every run, step and attempt is terminal; every dropped file has exactly one
cursor row and exactly one run (`params.path` unique); every queued job has exactly one run
key and one run of the `jobs` sensor; every materialization that has a
`value_path` has its file, and every file under `home/values` has its materialization; no
"database is locked" anywhere (daemon logs, CLI stderr, reader errors); the daemon's RSS grew by
at most 20% (first vs last minute of the last daemon, or first vs last 20% of it when it lived
less than five minutes); plus what the CLIs reported vs what storage says, each chaos run's
outcome vs its mode, schedule ticks without gaps, backfills finished, no orphaned processes (of
the daemons' trees, and anywhere on the machine any process a step left behind), every finished
attempt's log ending with dagtop's line saying how it ended, and the reader's mirror equal to
storage; the eager chain read each `feed` at most once per link and ends up to date. Exit
status 1 when any check fails; the work folder (kept
with --keep, or on failure) holds every log and `summary.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psutil

from engine.status import BackfillStatus, RunStatus, StepStatus
from engine.units import control_character

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DAGTOP = str(Path(sys.executable).with_name("dagtop"))
PIPELINE = HERE / "soak_pipeline.py"

TERMINAL_RUN = {RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELED}
TERMINAL_STEP = {StepStatus.SUCCESS, StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.CANCELED}
TERMINAL_ATTEMPT = {StepStatus.SUCCESS, StepStatus.FAILED, StepStatus.CANCELED}
ACTIVE_RUNS = (
    f"SELECT count(*) AS n FROM run WHERE status IN ('{RunStatus.QUEUED}', '{RunStatus.RUNNING}')"
)
JOB_KEYS = "SELECT run_key, run_id FROM sensorrunkey WHERE sensor = 'jobs'"
RUNNING_BACKFILLS = f"SELECT count(*) AS n FROM backfill WHERE status = '{BackfillStatus.RUNNING}'"
MODES = (
    "ok", "ok", "ok", "ok", "fail", "flaky", "timeout", "memory", "exit", "noisy", "helpers",
    "stubborn",
)  # fmt: skip
LOCKED = "database is locked"
UNKNOWN_OUTCOME = "went away before answering 'run'"
RSS_LIMIT = 0.20  # the daemon's RSS may grow by at most this fraction
SENSOR_SETTLE = 1.0  # file_sensor's default settle time (soak_pipeline.py sets none)
NAME_PARTS = [
    "orders", "report", "données", "日本語", "файл", "emoji🐍", "a b", "  spaced  ", "semi;colon",
    "quote'd", 'dq"x', "$HOME", "star*", "[brackets]", "per%cent", "tab\tin", "ñandú", "zero0",
    "CON", "nul", "-dash", "#hash", "ümlaut", "back\\slash", "new\nline",
]  # fmt: skip


def _ignored_name(path: str) -> bool:
    """Whether the file sensor skips this dropped file: its name has a control character."""
    return control_character(Path(path).name) is not None


def log(msg: str) -> None:
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def clamp(x: float, lo: float, hi: float) -> float:
    return max(lo, min(hi, x))


# --- bookkeeping --------------------------------------------------------------------------------


@dataclass
class Instance:
    """One `dagtop daemon` process."""

    idx: int
    proc: subprocess.Popen[bytes]
    create_time: float
    started: float
    out: Path
    ready: float | None = None
    ended: float | None = None
    how: str = ""  # kill -9 | sigterm | exited
    exit_code: int | None = None
    rss: list[tuple[float, int]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.proc.pid


@dataclass
class Submission:
    """One CLI process started by the submitter."""

    seq: int
    kind: str  # chaos | chaos+report | tasks | daily
    mode: str | None
    argv: list[str]
    proc: subprocess.Popen[bytes]
    started: float
    out: Path
    err: Path
    ended: float | None = None
    code: int | None = None
    killed: bool = False


@dataclass
class Drop:
    path: str
    how: str  # burst | slow | rename
    size: int
    max_pause: float = 0.0
    done_at: float = 0.0


@dataclass
class Failure:
    check: str
    detail: str


# --- the soak -----------------------------------------------------------------------------------


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.duration = args.seconds if args.seconds else args.minutes * 60.0
        self.rng = random.Random(args.seed)
        base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="dagtop-soak-"))
        self.work = base.resolve()
        self.project = self.work / "project"
        self.pipelines = self.project / "pipelines"
        self.inbox = self.project / "inbox"
        self.queue = self.project / "queue"
        self.jobs: list[str] = []  # job files queued for the `jobs` custom sensor
        self.home = self.project / "home"
        self.db_path = self.home / "dagtop.db"
        self.cli_dir = self.work / "cli"
        self.stop = threading.Event()
        self.sampling_done = threading.Event()
        self.daemon_lock = threading.RLock()
        self.instances: list[Instance] = []
        self.current: Instance | None = None
        self.submissions: list[Submission] = []
        self.skipped_submissions = 0
        self.drops: list[Drop] = []
        self.drops_lock = threading.Lock()
        self.backfills: list[dict[str, Any]] = []
        self.cli_problems: list[str] = []
        self.descendants: dict[tuple[int, float], str] = {}
        self.notes: list[str] = []
        self.damage_rounds: list[dict[str, Any]] = []
        self.t0 = 0.0
        self.load_end = 0.0
        self.final_phase: dict[str, Any] = {}
        lo, hi = args.kill_gap or (
            clamp(self.duration * 0.06, 6, 20),
            clamp(self.duration * 0.12, 14, 50),
        )
        self.kill_gap = (lo, hi)
        self.burst_gap = (clamp(self.duration * 0.04, 6, 20), clamp(self.duration * 0.07, 10, 40))
        self.backfill_gap = (clamp(self.duration * 0.03, 5, 15), clamp(self.duration * 0.05, 8, 30))

    # --- setup ----------------------------------------------------------------------------------

    def setup(self) -> None:
        for folder in (self.pipelines, self.inbox, self.queue, self.home, self.cli_dir):
            folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(PIPELINE, self.pipelines / "soak_pipeline.py")
        (self.project / "dagtop.toml").write_text("max_workers = 4\nload_timeout = 20\n")

    def cli(self, *args: str) -> list[str]:
        return [DAGTOP, "--home", str(self.home), "--pipelines", str(self.pipelines), *args]

    def run_cli(self, *args: str, timeout: float = 90.0) -> subprocess.CompletedProcess[str]:
        try:
            done = subprocess.run(
                self.cli(*args), capture_output=True, text=True, timeout=timeout,
                cwd=self.project, stdin=subprocess.DEVNULL,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            self.cli_problems.append(f"`dagtop {' '.join(args)}` hung for {timeout:g} s")
            return subprocess.CompletedProcess(exc.cmd, -9, "", str(exc.stderr or ""))
        if "Traceback" in done.stderr:
            self.cli_problems.append(
                f"`dagtop {' '.join(args)}` printed a traceback: {_tail(done.stderr)}"
            )
        return done

    def db(self) -> sqlite3.Connection:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def query(self, sql: str, *params: Any) -> list[sqlite3.Row]:
        if not self.db_path.exists():
            return []
        try:
            conn = self.db()
        except sqlite3.Error:
            return []
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []
            raise
        finally:
            conn.close()

    # --- the daemon -----------------------------------------------------------------------------

    def start_daemon(self, wait: bool = True) -> Instance:
        with self.daemon_lock:
            idx = len(self.instances)
            out = self.work / f"daemon-{idx}.out"
            with out.open("wb") as fh:
                proc = subprocess.Popen(
                    self.cli("daemon"), stdout=fh, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, cwd=self.project, start_new_session=True,
                )  # fmt: skip
            try:
                create_time = psutil.Process(proc.pid).create_time()
            except psutil.Error:
                create_time = 0.0
            inst = Instance(idx, proc, create_time, time.time(), out)
            self.instances.append(inst)
            self.current = inst
        if wait:
            self._wait_ready(inst)
        return inst

    def _wait_ready(self, inst: Instance, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = inst.proc.poll()
            if code is not None:
                inst.ended, inst.how, inst.exit_code = time.time(), "exited", code
                self.notes.append(
                    f"daemon #{inst.idx} exited with {code} while starting: {_tail_file(inst.out)}"
                )
                return
            rows = self.query("SELECT pid FROM lease WHERE name = 'engine'")
            if rows and rows[0]["pid"] == inst.pid:
                inst.ready = time.time()
                return
            time.sleep(0.05)
        self.notes.append(f"daemon #{inst.idx} did not take the lease within {timeout:g} s")

    def ensure_daemon(self) -> Instance:
        """The live daemon, started again (a few tries) if it died on its own."""
        for _ in range(5):
            with self.daemon_lock:
                inst = self.current
            if inst is not None and inst.proc.poll() is None and inst.ready:
                return inst
            if inst is not None and inst.proc.poll() is not None and inst.ended is None:
                inst.ended, inst.how, inst.exit_code = time.time(), "exited", inst.proc.returncode
                self.notes.append(
                    f"daemon #{inst.idx} exited on its own ({inst.exit_code}): "
                    f"{_tail_file(inst.out)}"
                )
            if inst is not None and inst.proc.poll() is None and not inst.ready:
                self._wait_ready(inst)
                if inst.ready:
                    return inst
            time.sleep(0.5)
            self.start_daemon()
        raise RuntimeError("the daemon does not start: see the daemon-*.out files")

    def kill9(self, inst: Instance) -> None:
        with self.daemon_lock:
            with contextlib.suppress(ProcessLookupError):
                os.kill(inst.pid, signal.SIGKILL)
            inst.proc.wait()
            inst.ended, inst.how, inst.exit_code = time.time(), "kill -9", inst.proc.returncode

    def stop_daemon(self, inst: Instance, timeout: float = 30.0) -> float:
        """SIGTERM and wait; returns how long it took (kill -9 after `timeout`)."""
        started = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            inst.proc.send_signal(signal.SIGTERM)
        try:
            inst.exit_code = inst.proc.wait(timeout=timeout)
            inst.how = "sigterm"
        except subprocess.TimeoutExpired:
            self.notes.append(f"daemon #{inst.idx} ignored SIGTERM for {timeout:g} s: killed")
            inst.proc.kill()
            inst.exit_code = inst.proc.wait()
            inst.how = "sigterm, then kill -9"
        inst.ended = time.time()
        return time.monotonic() - started

    # --- threads --------------------------------------------------------------------------------

    def _sampler(self) -> None:
        """Every half second: the daemon's RSS, and every process it started (for orphans)."""
        while not self.sampling_done.wait(0.5):
            with self.daemon_lock:
                inst = self.current
            if inst is None or inst.ended is not None or inst.proc.poll() is not None:
                continue
            try:
                proc = psutil.Process(inst.pid)
                if inst.ready:
                    inst.rss.append((time.time(), proc.memory_info().rss))
                children = proc.children(recursive=True)
            except psutil.Error:
                continue
            for child in children:
                with contextlib.suppress(psutil.Error):
                    key = (child.pid, child.create_time())
                    if key not in self.descendants:
                        self.descendants[key] = " ".join(child.cmdline()[:6])

    def _killer(self) -> None:
        kill_until = self.t0 + self.duration * self.args.kill_until
        while True:
            gap = self.rng.uniform(*self.kill_gap)
            if self.stop.wait(gap) or time.time() > kill_until:
                return
            inst = self.ensure_daemon()
            self.kill9(inst)
            lived = time.time() - inst.started
            log(f"kill -9 daemon #{inst.idx} (pid {inst.pid}) after {lived:.1f} s")
            time.sleep(self.rng.uniform(0.2, 3.0))
            if self.rng.random() < 0.25:
                # A crash while it starts: during recovery, the first load or the first admits.
                early = self.start_daemon(wait=False)
                time.sleep(self.rng.uniform(0.3, 3.0))
                if early.proc.poll() is None:
                    self.kill9(early)
                    log(f"kill -9 daemon #{early.idx} while starting")
                time.sleep(self.rng.uniform(0.1, 1.0))
            inst = self.start_daemon()
            log(f"daemon #{inst.idx} up (pid {inst.pid})")

    def _submitter(self) -> None:
        seq = 0
        while not self.stop.wait(self.args.submit_every):
            self._reap()
            live = [s for s in self.submissions if s.code is None]
            if len(live) >= self.args.max_cli:
                self.skipped_submissions += 1
                continue
            seq += 1
            roll = self.rng.random()
            mode: str | None = self.rng.choice(MODES)
            if roll < 0.7:
                kind, args = "chaos", ["materialize", "chaos"]
            elif roll < 0.8:
                kind, args = "chaos+report", ["materialize", "chaos", "chaos_report"]
            elif roll < 0.9:
                kind, args, mode = "tasks", ["run", "soak_tasks"], None
            elif roll < 0.95:
                kind, args, mode = "feed", ["materialize", "feed"], None
            else:
                day = date(2024, 1, 1) + timedelta(days=self.rng.randrange(366))
                kind, mode = "daily", None
                args = ["materialize", "daily", "--partition", day.isoformat()]
            params = ["--param", f"seq={seq}"]
            if mode is not None:
                params += ["--param", f"mode={mode}"]
            argv = self.cli(*args, *params, "--json")
            out, err = self.cli_dir / f"{seq}.out", self.cli_dir / f"{seq}.err"
            with out.open("wb") as fo, err.open("wb") as fe:
                proc = subprocess.Popen(
                    argv, stdout=fo, stderr=fe, stdin=subprocess.DEVNULL, cwd=self.project,
                    start_new_session=True,
                )  # fmt: skip
            self.submissions.append(Submission(seq, kind, mode, argv, proc, time.time(), out, err))
        # Drain: every CLI must finish on its own; one that hangs is a finding.
        deadline = time.monotonic() + self.args.cli_timeout
        while time.monotonic() < deadline and any(s.code is None for s in self.submissions):
            self._reap()
            time.sleep(0.2)
        self._reap(force=True)

    def _reap(self, force: bool = False) -> None:
        now = time.time()
        for sub in self.submissions:
            if sub.code is not None:
                continue
            code = sub.proc.poll()
            if code is None and (force or now - sub.started > self.args.cli_timeout):
                sub.killed = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(sub.proc.pid, signal.SIGKILL)
                code = sub.proc.wait()
            if code is not None:
                sub.code, sub.ended = code, time.time()

    def _name(self, n: int) -> str:
        parts = self.rng.sample(NAME_PARTS, self.rng.randint(1, 3))
        name = f"{'_'.join(parts)} {n}"
        if self.rng.random() < 0.5:
            name += self.rng.choice([".csv", ".json", ".txt", ".CSV", "", ".tar.gz"])
        return name.lstrip(".~")

    def _write_slowly(self, drop: Drop, rename: bool) -> None:
        target = Path(drop.path)
        path = target.with_name(target.name + ".part") if rename else target
        chunks = self.rng.randint(3, 8)
        data = os.urandom(drop.size)
        step = max(1, len(data) // chunks)
        with path.open("wb") as fh:
            for i in range(0, len(data), step):
                fh.write(data[i : i + step])
                fh.flush()
                pause = self.rng.uniform(0.05, 0.3)
                before = time.monotonic()
                time.sleep(pause)
                drop.max_pause = max(drop.max_pause, time.monotonic() - before)
        if rename:
            os.replace(path, target)
        drop.done_at = time.time()

    def _dropper(self) -> None:
        n = 0
        writers: list[threading.Thread] = []
        while not self.stop.wait(self.rng.uniform(*self.burst_gap)):
            burst = []
            for _ in range(self.args.burst):
                n += 1
                drop = Drop(str(self.inbox / self._name(n)), "burst", self.rng.randint(0, 65536))
                Path(drop.path).write_bytes(os.urandom(drop.size))
                drop.done_at = time.time()
                burst.append(drop)
            with self.drops_lock:
                self.drops.extend(burst)
            for _ in range(3):
                n += 1
                rename = self.rng.random() < 0.5
                drop = Drop(
                    str(self.inbox / self._name(n)),
                    "rename" if rename else "slow",
                    self.rng.randint(1, 200_000),
                )
                with self.drops_lock:
                    self.drops.append(drop)
                thread = threading.Thread(target=self._write_slowly, args=(drop, rename))
                thread.start()
                writers.append(thread)
        for thread in writers:
            thread.join()

    def _queuer(self) -> None:
        """Waves of job files for the `jobs` custom sensor, each renamed into place whole."""
        n = 0
        while not self.stop.wait(self.rng.uniform(1.0, 4.0)):
            for _ in range(self.rng.randint(1, 12)):
                n += 1
                name = f"job{n:06}"
                tmp = self.queue / f"{name}.tmp"
                tmp.write_text(name)
                tmp.rename(self.queue / f"{name}.job")
                self.jobs.append(name)

    def _backfiller(self) -> None:
        while not self.stop.wait(self.rng.uniform(*self.backfill_gap)):
            first = date(2024, 1, 1) + timedelta(days=self.rng.randrange(330))
            # Long enough (a second or so per key, two at a time) that a cancel lands mid-way.
            last = first + timedelta(days=self.rng.randint(6, 30))
            # A run per day, or ranges of up to 5 days (daily_range's backfill policy).
            assets = ["daily", "daily_sum"] if self.rng.random() < 0.7 else ["daily_range"]
            started = self.run_cli(
                "backfill", *assets, "--from", first.isoformat(), "--to",
                last.isoformat(), "--max-parallel", "2", "--no-wait", "--json",
            )  # fmt: skip
            record: dict[str, Any] = {"from": str(first), "to": str(last), "actions": []}
            self.backfills.append(record)
            try:
                backfill_id = json.loads(started.stdout)["id"]
            except (ValueError, KeyError, TypeError):
                record["error"] = _tail(started.stderr)
                self.cli_problems.append(f"backfill did not start: {_tail(started.stderr)}")
                continue
            record["id"] = backfill_id
            if self.rng.random() < 0.7 and not self.stop.wait(self.rng.uniform(0.3, 4.0)):
                done = self.run_cli("backfill", "--cancel", backfill_id, "--json")
                record["actions"].append(("cancel", done.returncode, _tail(done.stderr)))
                if self.rng.random() < 0.5 and not self.stop.wait(self.rng.uniform(1.0, 5.0)):
                    done = self.run_cli("backfill", "--resume", backfill_id, "--no-wait", "--json")
                    record["actions"].append(("resume", done.returncode, _tail(done.stderr)))

    # --- damaged copies of the database ---------------------------------------------------------

    DAMAGES = ("pages", "empty", "header", "truncated")  # the two that lost values first

    def _damager(self) -> None:
        """A few times during the load, a damaged copy of the live database (`_damage_round`)."""
        gap = clamp(self.duration * 0.1, 5, 90)
        n = 0
        while not self.stop.wait(self.rng.uniform(gap * 0.5, gap)):
            self._damage_round(self.DAMAGES[n % len(self.DAMAGES)], n)
            n += 1

    def _damage_round(self, kind: str, n: int) -> None:
        folder = self.work / "damaged" / str(n)
        folder.mkdir(parents=True)
        copy = folder / "dagtop.db"
        url = {"DAGTOP_DATABASE_URL": f"sqlite:///{copy}"}
        record: dict[str, Any] = {"kind": kind, "problems": []}
        self.damage_rounds.append(record)
        problems: list[str] = record["problems"]

        backup = self._dagtop(["db", "backup", str(copy)])  # online, while the daemon writes
        if backup.returncode != 0:
            problems.append(f"db backup failed: {_tail(backup.stderr)}")
            return
        check = self._dagtop(["db", "check"], url)
        if check.returncode != 0 or not check.stdout.startswith("ok: "):
            problems.append(f"the fresh backup fails db check: {_tail(check.stdout)}")
        _damage(copy, kind)
        if kind == "empty":
            # A history shows beside it (its logs), so an empty file is a lost history.
            (folder / "logs").mkdir()
            (folder / "logs" / "step.1.log").write_text("a log of a run\n")
        check = self._dagtop(["db", "check"], url)
        if check.returncode != 1 or not check.stdout.startswith("damaged: "):
            problems.append(f"db check of a {kind} copy: exit {check.returncode}, {check.stdout}")
        for args in (["runs"], ["daemon"]):
            # The daemon is pointed at the damaged copy with the real home and its values.
            done = self._dagtop(args, url, timeout=60)
            lines = done.stderr.strip().splitlines()
            if done.returncode in (0, -9) or len(lines) != 1 or str(copy) not in done.stderr:
                problems.append(
                    f"`{args[0]}` on a {kind} copy: exit {done.returncode}, {_tail(done.stderr)}"
                )
            if "value sweep" in done.stderr or "Traceback" in done.stderr:
                problems.append(f"`{args[0]}` on a {kind} copy: {_tail(done.stderr)}")
        log(f"damaged copy #{n} ({kind}): {'ok' if not problems else problems[0]}")

    def _dagtop(
        self, args: list[str], env: dict[str, str] | None = None, timeout: float = 90.0
    ) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                self.cli(*args), capture_output=True, text=True, timeout=timeout,
                cwd=self.project, stdin=subprocess.DEVNULL, env={**os.environ, **(env or {})},
                start_new_session=True,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            return subprocess.CompletedProcess(exc.cmd, -9, "", f"hung for {timeout:g} s")

    def _audit_damage(self, fig: dict[str, Any]) -> list[Failure]:
        fig["damaged_copies"] = {
            "rounds": len(self.damage_rounds),
            "kinds": dict(Counter(r["kind"] for r in self.damage_rounds)),
            "refused_in_one_line": sum(1 for r in self.damage_rounds if not r["problems"]),
        }
        return [
            Failure("damaged copy", f"{r['kind']}: {problem}")
            for r in self.damage_rounds
            for problem in r["problems"]
        ]

    # --- the whole thing ------------------------------------------------------------------------

    def run(self) -> int:
        self.setup()
        log(
            f"work folder {self.work}; {self.duration:g} s; seed {self.args.seed}; "
            f"kills every {self.kill_gap[0]:.0f}-{self.kill_gap[1]:.0f} s until "
            f"{self.args.kill_until:.0%}"
        )
        stop_file = self.work / "reader.stop"
        reader_out = self.work / "reader.json"
        reader = subprocess.Popen(
            [sys.executable, "-m", "tests.soak.soak", "--reader", "--workdir", str(self.work),
             "--seed", str(self.args.seed)],
            cwd=REPO, stdout=(self.work / "reader.out").open("wb"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )  # fmt: skip
        self.t0 = time.time()
        first = self.start_daemon()
        if first.ready is None:
            raise RuntimeError(f"the first daemon did not start: {_tail_file(first.out)}")
        sampler = threading.Thread(target=self._sampler, name="sampler", daemon=True)
        sampler.start()
        producers = [
            threading.Thread(target=fn, name=fn.__name__)
            for fn in (
                self._killer,
                self._submitter,
                self._dropper,
                self._queuer,
                self._backfiller,
                self._damager,
            )
        ]
        for thread in producers:
            thread.start()
        next_report = time.time() + 30
        while time.time() - self.t0 < self.duration:
            time.sleep(0.5)
            if time.time() >= next_report:
                next_report += 30
                self._progress()
        log("load phase over: stopping producers")
        self.load_end = time.time()
        self.stop.set()
        for thread in producers:
            thread.join()
        self._progress()
        final_load_daemon = self.ensure_daemon()
        # The reader keeps going through the end (a UI left open), so its mirror sees it all.
        log(f"SIGTERM daemon #{final_load_daemon.idx}")
        took = self.stop_daemon(final_load_daemon)
        self.final_phase["sigterm_seconds"] = round(took, 2)
        self.final_phase["unreferenced_values_after_clean_stop"] = len(self._value_audit()[1])
        off = self.run_cli("schedule", "off", "every_minute")
        if off.returncode != 0:
            self.notes.append(f"`dagtop schedule off` failed: {_tail(off.stderr)}")
        log("fresh daemon: reconcile until nothing is queued or running")
        last = self.start_daemon()
        waited = self._settle(last)
        self.final_phase["settle_seconds"] = round(waited, 1)
        self.sampling_done.set()
        took = self.stop_daemon(last)
        self.final_phase["final_sigterm_seconds"] = round(took, 2)
        stop_file.write_text("stop")
        try:
            reader.wait(timeout=60)
        except subprocess.TimeoutExpired:
            reader.kill()
            self.notes.append("the reader did not stop within 60 s")
        time.sleep(2.0)  # let orphans that are about to exit do so
        failures, figures = self.audit(reader_out, final_load_daemon)
        self.report(failures, figures)
        return 1 if failures else 0

    def _progress(self) -> None:
        counts = Counter(r["status"] for r in self.query("SELECT status FROM run"))
        with self.drops_lock:
            dropped = len(self.drops)
        done = sum(1 for s in self.submissions if s.code is not None)
        log(
            f"t+{time.time() - self.t0:.0f}s daemons {len(self.instances)} runs {dict(counts)} "
            f"drops {dropped} cli {done}/{len(self.submissions)} backfills {len(self.backfills)}"
        )

    def _settle(self, inst: Instance) -> float:
        started = time.monotonic()
        deadline = started + self.args.settle_timeout
        with self.drops_lock:
            dropped = {d.path for d in self.drops if not _ignored_name(d.path)}
        while time.monotonic() < deadline:
            if inst.proc.poll() is not None:
                self.notes.append(f"the final daemon exited early: {_tail_file(inst.out)}")
                break
            active = self.query(ACTIVE_RUNS)[0]["n"]
            backfills = self.query(RUNNING_BACKFILLS)[0]["n"]
            seen = {r["path"] for r in self.query("SELECT path FROM sensorfile")}
            keyed = {r["run_key"] for r in self.query(JOB_KEYS)}
            jobs_in = set(self.jobs) <= keyed
            caught_up = not self._chain_behind()
            ready = inst.ready and jobs_in and caught_up
            if not active and not backfills and dropped <= seen and ready:
                time.sleep(1.0)  # one more look: a sensor claim may have just queued a run
                active = self.query(ACTIVE_RUNS)[0]["n"]
                if not active:
                    return time.monotonic() - started
            time.sleep(0.5)
        self.notes.append(f"the final daemon did not settle within {self.args.settle_timeout:g} s")
        return time.monotonic() - started

    # --- the audit ------------------------------------------------------------------------------

    def _value_audit(self) -> tuple[list[str], list[str], list[str]]:
        """(recorded values whose file is missing, value files with no record, temp files)."""
        recorded = {
            r["value_path"]
            for r in self.query(
                "SELECT value_path FROM materialization WHERE value_path IS NOT NULL"
            )
        }
        missing = sorted(p for p in recorded if not os.path.exists(p))
        unreferenced, temps = [], []
        values = self.home / "values"
        for dirpath, _dirs, files in os.walk(values):
            for name in files:
                path = os.path.join(dirpath, name)
                if name.startswith(".tmp-"):
                    temps.append(path)
                elif path not in recorded:
                    unreferenced.append(path)
        return missing, sorted(unreferenced), sorted(temps)

    def audit(self, reader_out: Path, steady: Instance) -> tuple[list[Failure], dict[str, Any]]:
        fail: list[Failure] = []
        fig: dict[str, Any] = {"seconds": round(self.load_end - self.t0, 1), "seed": self.args.seed}

        runs = self.query("SELECT * FROM run")
        steps = self.query("SELECT * FROM step")
        attempts = self.query("SELECT * FROM stepattempt")
        fig["runs"] = dict(Counter(r["status"] for r in runs))
        fig["runs_by_trigger"] = dict(Counter(r["trigger"] for r in runs))
        fig["steps"] = dict(Counter(s["status"] for s in steps))
        fig["attempts"] = len(attempts)
        recovered = {
            r["run_id"] for r in self.query("SELECT run_id FROM event WHERE kind = 'recovered'")
        }
        fig["runs_recovered_after_a_kill"] = len(recovered)

        # 1. every run, step and attempt is terminal
        for what, rows, ok in (
            ("run", runs, TERMINAL_RUN),
            ("step", steps, TERMINAL_STEP),
            ("attempt", attempts, TERMINAL_ATTEMPT),
        ):
            bad = [r for r in rows if r["status"] not in ok]
            if bad:
                shown = ", ".join(
                    f"{r['run_id'] if what != 'run' else r['id']}"
                    f"{'/' + r['key'] if what != 'run' else ''}={r['status']}"
                    for r in bad[:8]
                )
                fail.append(Failure(f"terminal {what}s", f"{len(bad)} not terminal: {shown}"))

        # 2. every dropped file ran exactly once, and every queued job
        fail += self._audit_drops(runs, fig)
        fail += self._audit_jobs(runs, fig)

        # 3. values and their records
        missing, unreferenced, temps = self._value_audit()
        fig["values"] = {
            "recorded": len(
                self.query("SELECT id FROM materialization WHERE value_path IS NOT NULL")
            ),
            "missing_files": len(missing),
            "unreferenced_files": len(unreferenced),
            "temp_files_left": len(temps),
            "unreferenced_after_clean_stop": self.final_phase.get(
                "unreferenced_values_after_clean_stop"
            ),
        }
        if missing:
            fail.append(
                Failure("values", f"{len(missing)} recorded value(s) missing: {missing[:3]}")
            )
        if unreferenced:
            fail.append(
                Failure(
                    "values", f"{len(unreferenced)} value file(s) unrecorded: {unreferenced[:3]}"
                )
            )

        # 4. no "database is locked", and no traceback of dagtop's own
        fail += self._audit_logs(reader_out, fig)

        # 5. the daemon's memory
        fail += self._audit_rss(steady, fig)

        # 6. what the CLIs said vs storage, and each chaos run vs its mode
        fail += self._audit_cli(runs, steps, recovered, fig)

        # 7. schedule ticks: one per minute, none missing between the first and the last
        fail += self._audit_ticks(runs, fig)

        # 8. the eager chain: each feed update ran its downstreams once, and none was missed
        fail += self._audit_chain(runs, fig)

        # 8. backfills
        bfs = self.query("SELECT id, status FROM backfill")
        fig["backfills"] = dict(Counter(b["status"] for b in bfs))
        fig["backfill_actions"] = dict(
            Counter(f"{a[0]} exit {a[1]}" for b in self.backfills for a in b["actions"])
        )
        if any(b["status"] == BackfillStatus.RUNNING for b in bfs):
            fail.append(Failure("backfills", "some backfills are still running"))

        # 9. commands nobody answered
        cmds = self.query("SELECT status, kind FROM command")
        fig["commands"] = dict(Counter(c["status"] for c in cmds))
        stuck = [c for c in cmds if c["status"] in ("pending", "taken")]
        if stuck:
            fail.append(
                Failure(
                    "commands",
                    f"{len(stuck)} command(s) never answered: {Counter(c['kind'] for c in stuck)}",
                )
            )

        # 10. damaged copies of the database: refused in one line, nothing swept
        fail += self._audit_damage(fig)

        # 11. orphans: every process a daemon started is gone
        alive = []
        for (pid, ctime), cmd in self.descendants.items():
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(pid)
                if abs(proc.create_time() - ctime) < 0.01 and proc.status() != psutil.STATUS_ZOMBIE:
                    alive.append(f"{pid} {cmd}")
        fig["daemon_descendants_seen"] = len(self.descendants)
        fig["orphans_left"] = len(alive)
        if alive:
            fail.append(Failure("orphans", f"{len(alive)} process(es) left: {alive[:5]}"))

        # 11. what steps left behind was ended with their attempts, and every log says how
        fail += self._audit_leftovers(attempts, fig)

        fig["daemons"] = [
            f"#{i.idx} pid {i.pid} lived {(i.ended or time.time()) - i.started:.1f} s, "
            f"{i.how or 'running'} ({i.exit_code})"
            for i in self.instances
        ]
        fig["final_phase"] = self.final_phase
        fig["notes"] = self.notes
        for note in self.notes:
            fail.append(Failure("soak", note))
        return fail, fig

    def _audit_drops(self, runs: list[sqlite3.Row], fig: dict[str, Any]) -> list[Failure]:
        fail: list[Failure] = []
        # A name with a control character is ignored by the sensor, by design (it would forge a
        # line wherever the path is printed): it must start nothing, be named in a warning, and
        # stay where it was dropped.
        ignored = {d.path: d for d in self.drops if _ignored_name(d.path)}
        drops = {d.path: d for d in self.drops if d.path not in ignored}
        fail += self._audit_ignored_drops(ignored, runs, fig)
        rows = self.query(
            "SELECT path, size, mtime_ns, run_id FROM sensorfile WHERE sensor='drops'"
        )
        per_path: dict[str, list[sqlite3.Row]] = {}
        for row in rows:
            per_path.setdefault(row["path"], []).append(row)
        sensor_runs: dict[str, list[str]] = {}
        for run in runs:
            if run["trigger"] == "sensor" and run["trigger_ref"] == "drops":
                path = json.loads(run["params"] or "{}").get("path")
                sensor_runs.setdefault(path, []).append(run["id"])
        never = [p for p in drops if p not in per_path]
        twice = {p: r for p, r in per_path.items() if len(r) > 1}
        no_run = [r["path"] for r in rows if not r["run_id"]]
        stranger = [p for p in per_path if p not in drops]
        runs_wrong = {p: ids for p, ids in sensor_runs.items() if len(ids) != 1}
        runs_missing = [p for p in drops if p not in sensor_runs]
        sensor_status = Counter(r["status"] for r in runs if r["trigger_ref"] == "drops")
        fig["drops"] = {
            "dropped": len(drops),
            "by_kind": dict(Counter(d.how for d in drops.values())),
            "cursor_rows": len(rows),
            "sensor_runs": sum(len(v) for v in sensor_runs.values()),
            "sensor_run_status": dict(sensor_status),
            "max_writer_pause_s": round(max((d.max_pause for d in drops.values()), default=0), 2),
        }
        if never:
            fail.append(Failure("drops", f"{len(never)} dropped file(s) never seen: {never[:3]}"))
        if twice:
            detail = [
                f"{p!r} ({drops[p].how}, writer paused up to {drops[p].max_pause:.2f} s): "
                f"sizes {[r['size'] for r in v]} of {drops[p].size}"
                for p, v in list(twice.items())[:3]
                if p in drops
            ]
            fail.append(Failure("drops", f"{len(twice)} file(s) claimed more than once: {detail}"))
        if no_run:
            fail.append(
                Failure("drops", f"{len(no_run)} cursor row(s) without a run: {no_run[:3]}")
            )
        if stranger:
            fail.append(Failure("drops", f"cursor rows for files never dropped: {stranger[:3]}"))
        if runs_wrong:
            shown = {p: ids for p, ids in list(runs_wrong.items())[:3]}
            fail.append(Failure("drops", f"{len(runs_wrong)} path(s) with != 1 run: {shown}"))
        if runs_missing:
            fail.append(
                Failure("drops", f"{len(runs_missing)} drop(s) with no run: {runs_missing[:3]}")
            )
        return fail

    def _audit_jobs(self, runs: list[sqlite3.Row], fig: dict[str, Any]) -> list[Failure]:
        """Each job file queued for the `jobs` custom sensor: one run key, one run, across the
        kills; every tick that failed says why."""
        fail: list[Failure] = []
        per_job: dict[str, list[str]] = {}
        for run in runs:
            if run["trigger"] == "sensor" and run["trigger_ref"] == "jobs":
                per_job.setdefault(json.loads(run["params"] or "{}").get("job"), []).append(
                    run["id"]
                )
        keys = self.query(JOB_KEYS)
        ticks = self.query("SELECT status, error FROM sensortick WHERE sensor = 'jobs'")
        queued = set(self.jobs)
        fig["jobs"] = {
            "queued": len(queued),
            "run_keys": len(keys),
            "runs": sum(len(v) for v in per_job.values()),
            "run_status": dict(Counter(r["status"] for r in runs if r["trigger_ref"] == "jobs")),
            "ticks": dict(Counter(t["status"] for t in ticks)),
        }
        twice = {j: ids for j, ids in per_job.items() if len(ids) > 1}
        missing = sorted(queued - per_job.keys())
        stranger = sorted(str(j) for j in per_job.keys() - queued)
        unkeyed = [r["run_key"] for r in keys if not r["run_id"]]
        silent = [t for t in ticks if t["status"] == "failed" and not t["error"]]
        if twice:
            fail.append(Failure("jobs", f"{len(twice)} job(s) with more than one run: {twice}"))
        if missing:
            fail.append(Failure("jobs", f"{len(missing)} job(s) never ran: {missing[:5]}"))
        if stranger:
            fail.append(Failure("jobs", f"runs of jobs never queued: {stranger[:5]}"))
        if unkeyed or len(keys) != len(queued):
            fail.append(
                Failure("jobs", f"{len(keys)} run key(s) for {len(queued)} jobs ({unkeyed[:3]})")
            )
        if silent:
            fail.append(Failure("jobs", f"{len(silent)} failed tick(s) without an error"))
        return fail

    def _audit_ignored_drops(
        self, ignored: dict[str, Drop], runs: list[sqlite3.Row], fig: dict[str, Any]
    ) -> list[Failure]:
        fail: list[Failure] = []
        claimed = {
            r["path"] for r in self.query("SELECT path FROM sensorfile WHERE sensor='drops'")
        }
        ran = {
            json.loads(r["params"] or "{}").get("path") for r in runs if r["trigger"] == "sensor"
        }
        logs = _read(self.home / "daemon.log") + "".join(_read(i.out) for i in self.instances)
        started = sorted(p for p in ignored if p in claimed or p in ran)
        unnamed = sorted(p for p in ignored if f"sensor ignores {p!r}" not in logs)
        gone = sorted(p for p in ignored if not Path(p).exists())
        fig["ignored_drops"] = {
            "control_character_names": len(ignored),
            "started_something": len(started),
            "not_named_in_a_warning": len(unnamed),
            "removed": len(gone),
        }
        if started:
            fail.append(Failure("drops", f"ignored name(s) started a run: {started[:3]}"))
        if unnamed:
            fail.append(Failure("drops", f"ignored name(s) not named in a warning: {unnamed[:3]}"))
        if gone:
            fail.append(Failure("drops", f"ignored file(s) no longer there: {gone[:3]}"))
        return fail

    def _audit_logs(self, reader_out: Path, fig: dict[str, Any]) -> list[Failure]:
        fail: list[Failure] = []
        texts = {"home/daemon.log": _read(self.home / "daemon.log")}
        for inst in self.instances:
            texts[inst.out.name] = _read(inst.out)
        cli_texts = {s.err.name: _read(s.err) for s in self.submissions}
        locked = [name for name, text in {**texts, **cli_texts}.items() if LOCKED in text]
        daemon_log = texts["home/daemon.log"]
        tracebacks = [
            name
            for name, text in texts.items()
            if "Traceback" in text and name != "home/daemon.log"
        ]
        levels = Counter(word for line in daemon_log.splitlines() for word in line.split()[2:3])
        fig["daemon_log"] = {
            "lines": daemon_log.count("\n"),
            "levels": {k: v for k, v in levels.items() if k.isupper()},
            "tracebacks": daemon_log.count("Traceback"),
            "errors": sorted(
                {_strip_ts(line) for line in daemon_log.splitlines() if " ERROR " in line}
            )[:15],
        }
        reader: dict[str, Any] = {}
        try:
            reader = json.loads(reader_out.read_text())
        except (OSError, ValueError):
            fail.append(
                Failure("reader", f"no reader report: {_tail_file(self.work / 'reader.out')}")
            )
        fig["reader"] = {k: v for k, v in reader.items() if k not in ("mirror_mismatches",)}
        if any(LOCKED in e for e in reader.get("errors", [])):
            locked.append("reader")
        if locked:
            fail.append(Failure("database is locked", f"seen in {locked[:10]}"))
        if daemon_log.count("Traceback"):
            fail.append(
                Failure(
                    "daemon log",
                    f"{daemon_log.count('Traceback')} traceback(s) in home/daemon.log: "
                    f"{fig['daemon_log']['errors'][:5]}",
                )
            )
        if tracebacks:
            fail.append(Failure("daemon output", f"tracebacks in {tracebacks}"))
        if reader.get("errors"):
            fail.append(
                Failure("reader", f"{reader.get('error_count')} error(s): {reader['errors'][:5]}")
            )
        if reader.get("mirror_mismatches"):
            mm = reader["mirror_mismatches"]
            fail.append(
                Failure(
                    "reader mirror",
                    f"{len(mm)} run(s) whose status runs_since never delivered: {mm[:5]}",
                )
            )
        return fail

    def _audit_rss(self, inst: Instance, fig: dict[str, Any]) -> list[Failure]:
        samples = [(t, rss) for t, rss in inst.rss if t <= self.load_end]
        if len(samples) < 10:
            return [Failure("rss", f"only {len(samples)} RSS samples of daemon #{inst.idx}")]
        begin, end = samples[0][0], samples[-1][0]
        lived = end - begin
        window = 60.0 if lived >= 300 else lived * 0.2
        first = [r for t, r in samples if t <= begin + window]
        last = [r for t, r in samples if t >= end - window]
        a, b = statistics.median(first), statistics.median(last)
        growth = (b - a) / a
        every = [r for i in self.instances for _, r in i.rss]
        fig["rss"] = {
            "daemon": inst.idx,
            "measured_s": round(lived, 1),
            "window_s": round(window, 1),
            "first_mib": round(a / 2**20, 1),
            "last_mib": round(b / 2**20, 1),
            "growth": f"{growth:+.1%}",
            "peak_mib_any_daemon": round(max(every) / 2**20, 1) if every else None,
            "per_daemon_mib": [
                (i.idx, round(i.rss[0][1] / 2**20, 1), round(max(r for _, r in i.rss) / 2**20, 1))
                for i in self.instances
                if i.rss
            ],
        }
        if growth > RSS_LIMIT:
            return [
                Failure(
                    "rss",
                    f"daemon #{inst.idx} grew {growth:+.1%} ({a / 2**20:.1f} -> {b / 2**20:.1f} "
                    f"MiB) over {lived:.0f} s",
                )
            ]
        return []

    def _audit_cli(
        self,
        runs: list[sqlite3.Row],
        steps: list[sqlite3.Row],
        recovered: set[str],
        fig: dict[str, Any],
    ) -> list[Failure]:
        fail: list[Failure] = []
        by_seq: dict[int, list[sqlite3.Row]] = {}
        for run in runs:
            seq = json.loads(run["params"] or "{}").get("seq")
            if isinstance(seq, int):
                by_seq.setdefault(seq, []).append(run)
        steps_of: dict[str, dict[str, sqlite3.Row]] = {}
        for st in steps:
            steps_of.setdefault(st["run_id"], {})[st["key"]] = st
        exits: Counter[str] = Counter()
        said_wrong: list[tuple[object, ...]] = []
        no_run: list[int] = []
        two_runs: list[int] = []
        unexpected: list[str] = []
        errors: Counter[str] = Counter()
        for sub in self.submissions:
            exits[f"{sub.code}{' (killed)' if sub.killed else ''}"] += 1
            err = _read(sub.err)
            mine = by_seq.get(sub.seq, [])
            if len(mine) > 1:
                two_runs.append(sub.seq)
            if sub.killed:
                self.cli_problems.append(f"CLI #{sub.seq} ({sub.kind}) hung: killed")
            if "Traceback" in err:
                self.cli_problems.append(f"CLI #{sub.seq} printed a traceback: {_tail(err)}")
            if sub.code not in (0, 1):
                errors[_strip_ids(_tail(err, 1))] += 1
            if sub.code in (0, 1):
                try:
                    said = json.loads(_read(sub.out))
                except ValueError:
                    self.cli_problems.append(f"CLI #{sub.seq} exited {sub.code} without JSON")
                    continue
                if not mine:
                    no_run.append(sub.seq)
                    continue
                final = {r["id"]: r["status"] for r in mine}
                if final.get(said["id"]) != said["status"]:
                    said_wrong.append((sub.seq, said["id"], said["status"], final.get(said["id"])))
                if (sub.code == 0) != (said["status"] == RunStatus.SUCCESS):
                    said_wrong.append((sub.seq, "exit code", sub.code, said["status"]))
            for run in mine:
                if sub.mode is None or run["status"] not in TERMINAL_RUN:
                    continue
                problem = _expected(
                    sub.mode, run, steps_of.get(run["id"], {}), run["id"] in recovered
                )
                if problem:
                    unexpected.append(f"#{sub.seq} {run['id']} mode={sub.mode}: {problem}")
        # An engine killed after it recorded a run and before it answered leaves the command
        # unable to know: it says so ("went away before answering 'run'; check `dagtop runs`")
        # instead of claiming a failure, and the next engine may well run what was recorded.
        ghost = [
            s.seq
            for s in self.submissions
            if s.code not in (0, 1) and by_seq.get(s.seq) and UNKNOWN_OUTCOME not in _read(s.err)
        ]
        fig["cli"] = {
            "started": len(self.submissions),
            "skipped_at_cap": self.skipped_submissions,
            "exit_codes": dict(exits),
            "errors": dict(errors.most_common(8)),
            "by_kind": dict(Counter(s.kind for s in self.submissions)),
            "max_seconds": round(
                max(((s.ended or 0) - s.started for s in self.submissions), default=0), 1
            ),
            "failed_but_ran_anyway": len(ghost),
        }
        if said_wrong:
            fail.append(
                Failure("cli", f"CLI reported something else than storage: {said_wrong[:5]}")
            )
        if no_run:
            fail.append(Failure("cli", f"CLIs reported a run that storage lacks: {no_run[:5]}"))
        if two_runs:
            fail.append(Failure("cli", f"one CLI call made several runs: {two_runs[:5]}"))
        if ghost:
            fail.append(
                Failure(
                    "cli",
                    f"{len(ghost)} CLI call(s) failed (exit 2) yet their run was created and "
                    f"executed later: seq {ghost[:5]}; errors {dict(errors)}",
                )
            )
        if unexpected:
            fail.append(Failure("chaos outcomes", f"{len(unexpected)}: {unexpected[:5]}"))
        for problem in self.cli_problems:
            fail.append(Failure("cli", problem))
        return fail

    def _current(self, asset: str) -> sqlite3.Row | None:
        rows = self.query(
            "SELECT id, inputs_json FROM materialization WHERE asset = ? "
            "AND value_path IS NOT NULL ORDER BY created_at DESC, id DESC LIMIT 1",
            asset,
        )
        return rows[0] if rows else None

    def _chain_behind(self) -> str | None:
        """Which link of the eager chain has not read its upstream's current value, if any."""
        for up, down in (("feed", "feed_clean"), ("feed_clean", "feed_summary")):
            upstream = self._current(up)
            if upstream is None:
                return None
            current = self._current(down)
            if current is None or upstream["id"] not in json.loads(current["inputs_json"]):
                return f"{down} has not read {up}'s current value ({upstream['id']})"
        return None

    def _audit_chain(self, runs: list[sqlite3.Row], fig: dict[str, Any]) -> list[Failure]:
        fail = []
        twice: list[str] = []
        for up, down in (("feed", "feed_clean"), ("feed_clean", "feed_summary")):
            read = Counter(
                i
                for m in self.query("SELECT inputs_json FROM materialization WHERE asset = ?", down)
                for i in json.loads(m["inputs_json"])
            )
            twice += [f"{down} read {up} {i} {n} times" for i, n in read.items() if n > 1]
        feeds = len(self.query("SELECT id FROM materialization WHERE asset = 'feed'"))
        chain_runs = [
            r for r in runs if r["trigger"] == "auto" and "feed_clean" in json.loads(r["selection"])
        ]
        fig["eager_chain"] = {
            "feed_updates": feeds,
            "chain_runs": len(chain_runs),
            "chain_run_status": dict(Counter(r["status"] for r in chain_runs)),
            "auto_requests": len(self.query("SELECT id FROM autorequest WHERE cause != 'seen'")),
        }
        if twice:
            fail.append(Failure("eager chain", f"an update ran twice: {twice[:5]}"))
        if len(chain_runs) > feeds:
            fail.append(Failure("eager chain", f"{len(chain_runs)} chain runs for {feeds} feeds"))
        behind = self._chain_behind()
        if behind:
            fail.append(Failure("eager chain", f"missed an update: {behind}"))
        return fail

    def _audit_ticks(self, runs: list[sqlite3.Row], fig: dict[str, Any]) -> list[Failure]:
        ticks = self.query(
            "SELECT tick_time, run_id, status FROM scheduletick WHERE schedule = 'every_minute' "
            "ORDER BY tick_time"
        )
        times = [t["tick_time"] for t in ticks]
        gaps = [(a, b) for a, b in zip(times, times[1:], strict=False) if round(b - a) != 60]
        sched_runs = Counter(r["trigger"] for r in runs)["schedule"]
        # Minute boundaries between the first daemon's start and the first recorded tick: the
        # scheduler's catch-up starts from "first seen", which a restart forgets, so a daemon
        # that dies before the schedule's very first tick loses that tick (reported, not failed).
        first_ready = self.instances[0].ready or self.t0
        boundary = (int(first_ready) // 60 + 1) * 60
        lost = 0
        if times:
            lost = max(0, round((times[0] - boundary) / 60))
        fig["schedule"] = {
            "ticks": len(ticks),
            "statuses": dict(Counter(t["status"] for t in ticks)),
            "runs": sched_runs,
            "ticks_lost_before_the_first": lost,
        }
        fail = []
        if gaps:
            fail.append(Failure("schedule", f"tick gaps: {gaps[:5]}"))
        started = [t for t in ticks if t["status"] == "started"]
        if len(started) != sched_runs:
            fail.append(Failure("schedule", f"{len(started)} started ticks but {sched_runs} runs"))
        if self.load_end - self.t0 >= 150 and len(ticks) < 2:
            fail.append(Failure("schedule", f"only {len(ticks)} tick(s) in a long soak"))
        return fail

    def _audit_leftovers(self, attempts: list[sqlite3.Row], fig: dict[str, Any]) -> list[Failure]:
        """No process a chaos step left behind (they carry the pipeline's marker on their
        command line) is alive, wherever it ran: under a daemon, or in a CLI that ran its run
        itself; and every finished attempt's log ends with dagtop's line saying how it ended."""
        fail: list[Failure] = []
        marker = f"dagtop-soak-leftover:{self.project}"
        left = []
        for proc in psutil.process_iter(["cmdline", "status"]):
            cmdline = proc.info["cmdline"] or []
            if marker in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
                left.append(f"{proc.pid} (parent {proc.ppid()}) {' '.join(cmdline[:3])[:80]}")
                with contextlib.suppress(psutil.Error):
                    proc.kill()  # one soak's leftovers must not outlive it either
        ended = 0
        unexplained: list[str] = []
        for att in attempts:
            if att["status"] not in TERMINAL_ATTEMPT or not att["log_path"]:
                continue
            lines = _read(Path(att["log_path"])).splitlines()
            ended += sum(1 for line in lines if line.startswith("dagtop: ended "))
            if not lines or not lines[-1].startswith("dagtop: step "):
                last = lines[-1][:80] if lines else "(empty)"
                unexplained.append(f"{att['run_id']}/{att['key']}.{att['attempt']}: {last!r}")
        fig["leftovers"] = {
            "alive_at_the_end": len(left),
            "leftover_lines_in_logs": ended,
            "logs_without_an_end_line": len(unexplained),
        }
        if left:
            fail.append(Failure("leftovers", f"{len(left)} process(es) outlived their run: "
                                             f"{left[:5]}"))  # fmt: skip
        if unexplained:
            fail.append(Failure("end lines", f"{len(unexplained)} attempt log(s) end without "
                                             f"dagtop's line: {unexplained[:5]}"))  # fmt: skip
        return fail

    def report(self, failures: list[Failure], fig: dict[str, Any]) -> None:
        fig["failures"] = [f"{f.check}: {f.detail}" for f in failures]
        (self.work / "summary.json").write_text(json.dumps(fig, indent=2, default=str))
        print("\n==== dagtop soak: figures ====")
        for key, value in fig.items():
            if key in ("failures", "notes"):
                continue
            print(f"{key:>28}: {json.dumps(value, default=str, ensure_ascii=False)}")
        print(f"==== {len(failures)} failed check(s) ====")
        for f in failures:
            print(f"FAIL {f.check}: {f.detail}")
        if not failures:
            print("all checks passed")
        print(f"work folder: {self.work}")


def _damage(db: Path, kind: str) -> None:
    """Damage a database file as storage fails: pages overwritten, cut short, a bad header,
    or emptied."""
    with db.open("r+b") as fh:
        if kind == "pages":
            fh.seek(8192)
            fh.write(os.urandom(8192))
        elif kind == "truncated":
            fh.truncate(min(20_000, db.stat().st_size // 2))
        elif kind == "header":
            fh.write(b"not a database!\0")
        else:
            fh.truncate(0)


def _expected(mode: str, run: sqlite3.Row, steps: dict[str, sqlite3.Row], interrupted: bool) -> str:
    """Why a finished chaos run does not look like its mode, or ''."""
    st = steps.get("chaos")
    if st is None:
        return "no chaos step"
    status, error = run["status"], st["error"] or ""
    if run["cancel_requested"]:
        return ""
    if mode in ("ok", "noisy", "helpers"):
        want, attempts, says = RunStatus.SUCCESS, 1, ""
    elif mode == "flaky":
        want, attempts, says = RunStatus.SUCCESS, 2, ""
    elif mode == "fail":
        want, attempts, says = RunStatus.FAILED, 3, "planned failure"
    elif mode in ("timeout", "stubborn"):
        want, attempts, says = RunStatus.FAILED, 3, "timed out after"
    elif mode == "memory":
        want, attempts, says = RunStatus.FAILED, 3, "memory limit exceeded"
    elif mode == "exit":
        want, attempts, says = RunStatus.FAILED, 3, "exited with code 3"
    else:
        return ""
    if status != want:
        return f"run {status}, want {want} (step {st['status']}: {error[:100]})"
    if interrupted:
        return ""  # an attempt interrupted by a kill does not count; the rest may differ
    if st["attempts"] != attempts:
        return f"{st['attempts']} attempts, want {attempts}"
    if says and says not in error:
        return f"error {error[:100]!r}, want {says!r}"
    return ""


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _tail(text: str, lines: int = 3) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])[:400]


def _tail_file(path: Path) -> str:
    return _tail(_read(path))


def _strip_ts(line: str) -> str:
    parts = line.split(" ", 2)
    return parts[2][:200] if len(parts) == 3 else line[:200]


def _strip_ids(text: str) -> str:
    import re

    return re.sub(r"\b[0-9a-f]{12}\b", "ID", text)


# --- the reader process (a UI attached to the daemon) ---------------------------------------------


def reader_main(work: Path, seed: int) -> int:
    """Read state as the TUI does until `work/reader.stop` exists; write `work/reader.json`."""
    from engine.client import Client

    project = work / "project"
    client = Client(project / "home", project / "pipelines")
    rng = random.Random(seed + 1)
    stop = work / "reader.stop"
    calls: Counter[str] = Counter()
    slowest: dict[str, float] = {}
    errors: list[str] = []
    error_count = 0
    missing_logs = 0
    mirror: dict[str, str] = {}
    since = 0.0
    loops = 0

    def call(name: str, fn: Any) -> Any:
        nonlocal error_count
        started = time.monotonic()
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - counting them is the point
            error_count += 1
            text = f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            if len(errors) < 50:
                errors.append(text)
            return None
        finally:
            took = time.monotonic() - started
            calls[name] += 1
            slowest[name] = max(slowest.get(name, 0.0), took)

    def poll() -> None:
        nonlocal since
        started = time.time()
        changed = call("runs_since", lambda: client.runs_since(since - 2.0))
        if changed is not None:
            since = started
            for view in changed:
                mirror[view.id] = view.status

    while True:
        final = stop.exists()
        loops += 1
        poll()
        if final:
            break
        views = call("runs", lambda: client.runs(limit=200)) or []
        call("node_statuses", client.node_statuses)
        if loops % 5 == 0:
            call("partitions", lambda: client.partitions("daily"))
            call("backfills", client.backfills)
        if views:
            view = rng.choice(views)
            refs = call("logs", lambda v=view: client.logs(v.id)) or []
            for ref in refs:
                try:
                    with ref.path.open("rb") as fh:
                        fh.read(1 << 16)
                except FileNotFoundError:
                    missing_logs += 1  # `dagtop logs` prints nothing for it, as here
                except OSError as exc:
                    errors.append(f"log file: {exc}")
                    error_count += 1
            call("attempts", lambda v=view: client.attempts(v.id))
        time.sleep(0.2)
    # Everything is quiet now: the incremental mirror must equal storage.
    every = call("all runs", lambda: client.runs(limit=1_000_000)) or []
    mismatches = [
        f"{v.id}: mirror {mirror.get(v.id)!r}, storage {v.status!r}"
        for v in every
        if mirror.get(v.id) != v.status
    ]
    report = {
        "loops": loops,
        "calls": dict(calls),
        "slowest_s": {k: round(v, 3) for k, v in slowest.items()},
        "error_count": error_count,
        "errors": errors,
        "missing_log_files": missing_logs,
        "mirror_runs": len(mirror),
        "mirror_mismatch_count": len(mismatches),
        "mirror_mismatches": mismatches[:50],
    }
    (work / "reader.json").write_text(json.dumps(report, indent=2))
    return 0


# --- command line -------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.soak.soak", description=__doc__.split("\n")[0]
    )
    p.add_argument("--minutes", type=float, default=10.0, help="how long the load runs")
    p.add_argument("--seconds", type=float, default=None, help="overrides --minutes")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    p.add_argument("--workdir", default=None, help="work folder (default: a new temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the work folder even on success")
    p.add_argument("--burst", type=int, default=50, help="files per sensor burst")
    p.add_argument("--submit-every", type=float, default=1.0, help="seconds between CLI runs")
    p.add_argument("--max-cli", type=int, default=6, help="CLI processes in flight at most")
    p.add_argument("--cli-timeout", type=float, default=180.0, help="a CLI hanging longer fails")
    p.add_argument("--kill-until", type=float, default=0.6, help="fraction of the soak with kills")
    p.add_argument("--kill-gap", type=float, nargs=2, default=None, metavar=("LO", "HI"))
    p.add_argument("--settle-timeout", type=float, default=300.0, help="final reconcile deadline")
    p.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.reader:
        return reader_main(Path(args.workdir), args.seed)
    soak = Soak(args)
    code = 2
    try:
        code = soak.run()
    finally:
        soak.stop.set()
        with soak.daemon_lock:
            for inst in soak.instances:
                if inst.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(inst.pid, signal.SIGKILL)
        if code == 0 and not args.keep and not args.workdir:
            shutil.rmtree(soak.work, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
