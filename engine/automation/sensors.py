"""File-drop sensors: every new file in a watched folder starts exactly one run of a target.

A watchdog Observer (one, shared by every sensor) reports created, modified and moved-in files;
each matching file becomes a *candidate*. A settle thread claims a candidate once its (size,
mtime_ns) has not changed for its sensor's `settle` seconds (`file_sensor(settle=...)`), so a
file still being written never starts a run early. Claiming is one transaction that inserts
the cursor row (SensorFile, UNIQUE(sensor, path, size, mtime_ns)) and records the run; the
unique constraint makes a file version start at most one run even with two engines or a crash
between the commit and the hand-off to the executor.
Files that arrived while the engine was down (or while a sensor was off) are found by scanning
the folder and looking them up in the cursor.

Thread model: watchdog's dispatch thread calls `_on_event` while holding the Observer's lock, so
this module never calls the Observer while holding its own `_lock` (lock order: Observer, then
ours). The settle thread only polls; `sync`, `set_enabled`, `start` and `stop` run on the
caller's thread and are serialized by `_sync_lock`.
"""

from __future__ import annotations

import contextlib
import fnmatch
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from engine.automation.targets import request_for
from engine.errors import EngineError, suggest
from engine.history.plan import RunRequest
from engine.loading.manifest import Manifest, SensorSpec, target_label
from engine.status import TickStatus
from engine.storage import repo
from engine.storage.db import read_scope, session_scope
from engine.storage.models import SensorFile
from engine.units import control_character, one_line, plural

log = logging.getLogger(__name__)

BATCH = 200  # files claimed per write transaction
RESCAN_INTERVAL = 60.0  # seconds between safety-net rescans (lost inotify events, dead watches)
MAX_BACKOFF = 60.0  # seconds, for a claim that failed on something other than a duplicate
# The settle thread wakes every quarter of the shortest settle time, within these bounds: a
# settled file waits at most a quarter of a second for its claim, and an idle tick costs nothing.
MIN_TICK, MAX_TICK = 0.05, 0.25
TEMP_SUFFIXES = (".tmp", ".part", ".crdownload")
EVENTS: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,  # touch: a new mtime is a new file version
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,  # the watched folder itself going away
]

Sig = tuple[int, int]  # (size, mtime_ns): one version of a file
WatchKey = tuple[str, bool]  # (folder, recursive): sensors with the same key share one watch


@dataclass(frozen=True, slots=True)
class SensorTickView:
    """One tick of a custom or built-in sensor, as its history shows it."""

    sensor: str
    started_at: float
    duration: float
    status: TickStatus  # started (it requested runs) | skipped | failed
    run_ids: tuple[str, ...] = ()
    run_keys_skipped: int = 0
    reason: str | None = None
    error: str | None = None
    cursor: str | None = None
    keys_added: int = 0
    log_tail: str | None = None

    def summary(self, fit: Callable[[str], str] = one_line) -> str:
        """What the tick did, in a few words: its runs, why it skipped, or its error (the
        reason or error passed through `fit`, which keeps it to one line)."""
        if self.status == TickStatus.STARTED:
            text = f"requested {plural(len(self.run_ids), 'run')}"
            if self.run_keys_skipped:
                text += f" ({self.run_keys_skipped} already requested)"
        elif self.status == TickStatus.SKIPPED:
            text = f"skipped: {fit(self.reason or '')}"
        else:
            text = f"failed: {fit(self.error or '')}"
        return text + (f", +{self.keys_added} keys" if self.keys_added else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at,
            "duration": self.duration,
            "status": self.status,
            "run_ids": list(self.run_ids),
            "run_keys_skipped": self.run_keys_skipped,
            "reason": self.reason,
            "error": self.error,
            "cursor": self.cursor,
            "keys_added": self.keys_added,
        }


@dataclass(frozen=True, slots=True)
class SensorStatus:
    """A sensor of any kind: a file sensor (`path`, `pattern`, the files it saw), a custom one
    (`interval`, its last tick) or a built-in one (the engine's own, such as `auto`)."""

    name: str
    path: str
    pattern: str
    target: str
    enabled: bool
    files_seen: int
    last_file: str | None
    last_seen_at: float | None
    last_run_id: str | None
    kind: str = "file"  # file | custom | builtin
    interval: float | None = None
    description: str | None = None
    last_tick: SensorTickView | None = None
    next_tick_at: float | None = None


@dataclass(slots=True)
class _Candidate:
    sig: Sig
    since: float  # when `sig` was first observed
    tries: int = 0
    not_before: float = 0.0


@dataclass(slots=True)
class _Sensor:
    spec: SensorSpec
    enabled: bool

    @property
    def key(self) -> WatchKey:
        return (self.spec.path, self.spec.recursive)


@dataclass(slots=True)
class _Watch:
    observed: ObservedWatch
    handler: _Handler
    folder_id: tuple[int, int]


@dataclass(slots=True)
class _Settled:
    sensor: str
    path: str
    sig: Sig
    candidate: _Candidate = field(repr=False)


class _PlanFailed(Exception):
    """A run in a fast (savepoint-free) batch could not be planned: redo the batch carefully."""


class _Handler(FileSystemEventHandler):
    def __init__(self, runner: SensorRunner, key: WatchKey) -> None:
        self.runner = runner
        self.key = key
        self.active = True  # False once its watch is dropped: late events are ignored
        self.dead = False  # the watched folder itself was deleted

    def dispatch(self, event: FileSystemEvent) -> None:
        if not self.active:
            return
        try:
            self.runner._on_event(self, event)
        except Exception:  # an exception here would kill watchdog's dispatch thread
            log.exception("sensor event %r failed", event)


def name_matches(pattern: str, name: str) -> bool:
    """Whether a file called `name` is a candidate for `pattern` (temporary names excluded).

    Dotfiles, `~*`, `*.tmp`, `*.part` and `*.crdownload` are files still being written by some
    tool; they only match a pattern that asks for them (starts with "." or "~", or ends in the
    same suffix).
    """
    lowered, lowered_pattern = name.lower(), pattern.lower()
    if name.startswith(".") and not pattern.startswith("."):
        return False
    if name.startswith("~") and not pattern.startswith("~"):
        return False
    for suffix in TEMP_SUFFIXES:
        if lowered.endswith(suffix) and not lowered_pattern.endswith(suffix):
            return False
    return fnmatch.fnmatch(name, pattern)


def _eligible(spec: SensorSpec, path: str) -> bool:
    folder, name = os.path.split(path)
    if not name_matches(spec.pattern, name):
        return False
    if not spec.recursive:
        return folder == spec.path
    rel = os.path.relpath(folder, spec.path)
    if rel == ".":
        return True
    parts = rel.split(os.sep)
    if parts[0] == "..":
        return False
    # Hidden folders (.git, a tool's staging folder) hold no finished drops.
    return spec.pattern.startswith(".") or not any(p.startswith(".") for p in parts)


def _stat_sig(path: str) -> Sig | None:
    """The file's version, or None if it is gone or not a regular file."""
    try:
        st = os.stat(path)
    except (OSError, ValueError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (st.st_size, st.st_mtime_ns)


def _folder_id(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


class SensorRunner:
    """Watches every sensor's folder and turns each new file version into one run."""

    rescan_interval = RESCAN_INTERVAL

    def __init__(
        self,
        db: SAEngine,
        record_run: Callable[[Session, RunRequest], str],
        start_run: Callable[[str], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._record_run = record_run
        self._start_run = start_run
        self._clock = clock
        self._lock = threading.Lock()  # sensors, pending, last: short critical sections only
        self._sync_lock = threading.RLock()  # sync / set_enabled / start / stop / maintenance
        self._poll_lock = threading.Lock()
        self._sensors: dict[str, _Sensor] = {}
        self._pending: dict[tuple[str, str], _Candidate] = {}
        # Per sensor, path -> the newest version known to be in the cursor: lets repeated events
        # and rescans skip files already claimed without asking the database.
        self._last: dict[str, dict[str, Sig]] = {}
        self._watches: dict[WatchKey, _Watch] = {}
        self._missing: set[str] = set()  # folders already warned about
        self._bad_names: set[str] = set()
        self._observer: BaseObserver | None = None
        self._thread: threading.Thread | None = None
        self._stop_evt = threading.Event()

    # --- public API ---------------------------------------------------------------------------

    def sync(self, manifest: Manifest) -> None:
        """Start, stop or replace sensors (and their watches) to match `manifest`."""
        with self._sync_lock:
            with read_scope(self._db) as session:
                toggles = {n: t.enabled for n, t in repo.toggles(session, "sensor").items()}
            to_scan: list[str] = []
            with self._lock:
                for name in list(self._sensors):
                    if name not in manifest.sensors:
                        del self._sensors[name]
                        self._last.pop(name, None)
                        self._drop_pending(name)
                        log.info("sensor %s removed", name)
                for name, spec in manifest.sensors.items():
                    enabled = toggles.get(name, True)
                    current = self._sensors.get(name)
                    if current is None:
                        self._sensors[name] = _Sensor(spec, enabled)
                        log.info("sensor %s watches %s for %s", name, spec.path, spec.pattern)
                        to_scan.append(name)
                        continue
                    old = current.spec
                    current.spec = spec
                    if (old.path, old.recursive, old.pattern) != (
                        spec.path,
                        spec.recursive,
                        spec.pattern,
                    ):
                        self._drop_pending(name)
                        if (old.path, old.recursive) != (spec.path, spec.recursive):
                            self._last.pop(name, None)
                        to_scan.append(name)
                    if enabled != current.enabled:
                        current.enabled = enabled
                        if enabled:
                            to_scan.append(name)
                        else:
                            self._drop_pending(name)
            self._reconcile_watches()
            for name in dict.fromkeys(to_scan):
                self._scan(name)

    def owns(self, name: str) -> bool:
        """Whether `name` is one of this runner's (file) sensors."""
        with self._lock:
            return name in self._sensors

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Turn a sensor on or off, persistently.

        Turning one on rescans its folder: files dropped while it was off start runs.

        Raises:
            EngineError: no sensor has that name.
        """
        with self._sync_lock:
            with self._lock:
                known = list(self._sensors)
            if name not in known:
                raise EngineError(
                    f"unknown sensor {name!r}{suggest(name, known)} (see `dagtop list`)",
                    title="Unknown sensor",
                )
            with session_scope(self._db) as session:
                repo.set_toggle(session, "sensor", name, enabled, self._clock())
            with self._lock:
                sensor = self._sensors.get(name)
                if sensor is None:
                    return
                was = sensor.enabled
                sensor.enabled = enabled
                if not enabled:
                    self._drop_pending(name)
            log.info("sensor %s turned %s", name, "on" if enabled else "off")
            if enabled and not was:
                self._scan(name)

    def start(self) -> None:
        """Start the Observer (watching every sensor's folder) and the settle thread."""
        with self._sync_lock:
            if self._observer is not None:
                return
            observer = Observer()
            observer.daemon = True
            observer.start()
            self._observer = observer
            self._stop_evt = threading.Event()
            self._thread = threading.Thread(
                target=self._loop, args=(self._stop_evt,), name="dagtop-sensors", daemon=True
            )
            self._thread.start()
            self._reconcile_watches()

    def stop(self) -> None:
        """Stop the Observer and the settle thread and wait for both (about a second at most)."""
        with self._sync_lock:
            observer, thread = self._observer, self._thread
            self._observer = self._thread = None
            for watch in self._watches.values():
                watch.handler.active = False
            self._watches.clear()
            self._stop_evt.set()
        if observer is not None:
            observer.stop()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=1.0)
        if observer is not None:
            observer.join(timeout=1.0)

    def status(self) -> list[SensorStatus]:
        with self._lock:
            sensors = sorted(
                ((s.spec, s.enabled) for s in self._sensors.values()), key=lambda x: x[0].name
            )
        with read_scope(self._db) as session:
            stats = repo.sensor_stats(session)
        return [_status(spec, enabled, stats) for spec, enabled in sensors]

    def poll(self) -> list[str]:
        """Check the candidates that are due now and claim the settled ones; returns new run ids."""
        return self._poll(None)

    def _poll(self, stop_evt: threading.Event | None) -> list[str]:
        if not self._pending:  # the common case: no lock, no stat, no database
            return []
        with self._poll_lock:
            settled = self._settled()
            if not settled:
                return []
            by_sensor: dict[str, list[_Settled]] = {}
            for item in settled:
                by_sensor.setdefault(item.sensor, []).append(item)
            run_ids: list[str] = []
            for sensor, items in by_sensor.items():
                for i in range(0, len(items), BATCH):
                    if stop_evt is not None and stop_evt.is_set():  # stop() is waiting on us
                        self._requeue(items[i:], backoff=False)
                        break
                    run_ids.extend(self._claim(sensor, items[i : i + BATCH]))
            return run_ids

    # --- events and scans ---------------------------------------------------------------------

    def _on_event(self, handler: _Handler, event: FileSystemEvent) -> None:
        key = handler.key
        with self._lock:
            sensors = [
                (name, s.spec) for name, s in self._sensors.items() if s.key == key and s.enabled
            ]
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        if isinstance(event, DirDeletedEvent) and src == key[0]:
            handler.dead = True
            log.warning("sensor folder %s was deleted; watching resumes if it comes back", src)
            return
        if isinstance(event, FileDeletedEvent | FileMovedEvent | DirDeletedEvent | DirMovedEvent):
            self._forget(sensors, src, event.is_directory)
        if isinstance(event, DirDeletedEvent):
            return
        if isinstance(event, DirCreatedEvent | DirMovedEvent):
            folder = dest or src
            if key[1] and folder:
                # Files may have landed in a new folder before its watch existed.
                for name, spec in sensors:
                    for path in self._walk(spec, folder):
                        self._candidate(name, spec, path)
            return
        if isinstance(event, FileDeletedEvent):
            return
        path = dest if isinstance(event, FileMovedEvent) else src
        if path:
            for name, spec in sensors:
                self._candidate(name, spec, path)

    def _forget(self, sensors: list[tuple[str, SensorSpec]], path: str, folder: bool) -> None:
        """Drop cached cursor versions of a file (or a folder's files) that went away."""
        prefix = path + os.sep
        with self._lock:
            for name, _spec in sensors:
                last = self._last.get(name)
                if not last:
                    continue
                last.pop(path, None)
                if folder:
                    for p in [p for p in last if p.startswith(prefix)]:
                        del last[p]

    def _candidate(self, name: str, spec: SensorSpec, path: str, sig: Sig | None = None) -> None:
        if not _eligible(spec, path) or not self._usable_name(path):
            return
        sig = sig or _stat_sig(path)
        if sig is None:
            return
        now = self._clock()
        with self._lock:
            if self._last.get(name, {}).get(path) == sig:
                return  # this version already started its run (an attrib change, a rescan)
            cand = self._pending.get((name, path))
            if cand is None:
                self._pending[(name, path)] = _Candidate(sig, now)
            elif cand.sig != sig:
                cand.sig, cand.since = sig, now

    def _usable_name(self, path: str) -> bool:
        """Whether the file's path can be a run's `path` param; said once per path if not.

        A name with a control character is skipped too: the path is printed inside a line
        (`dagtop lineage`, logs), where a newline would forge one.
        """
        try:
            path.encode("utf-8")
        except UnicodeEncodeError:
            why = "its name is not valid UTF-8"
        else:
            found = control_character(path)
            if found is None:
                return True
            why = f"its name contains a control character ({found})"
        if path not in self._bad_names:
            self._bad_names.add(path)
            log.warning("sensor ignores %r: %s", path, why)
        return False

    def _walk(self, spec: SensorSpec, top: str | None = None) -> Iterator[str]:
        """Every eligible file under `top` (default: the sensor's folder)."""
        stack = [top or spec.path]
        while stack:
            folder = stack.pop()
            try:
                with os.scandir(folder) as it:
                    entries = list(it)
            except OSError:
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if spec.recursive:
                            stack.append(entry.path)
                    elif entry.is_file() and _eligible(spec, entry.path):
                        yield entry.path
                except OSError:
                    continue

    def _scan(self, name: str) -> None:
        """Make every file in the sensor's folder that its cursor lacks a candidate."""
        with self._lock:
            sensor = self._sensors.get(name)
            if sensor is None or not sensor.enabled:
                return
            spec = sensor.spec
        if _folder_id(spec.path) is None:
            return
        found: dict[str, Sig] = {}
        for path in self._walk(spec):
            sig = _stat_sig(path)
            if sig is not None and self._usable_name(path):
                found[path] = sig
        with self._lock:
            last = self._last.setdefault(name, {})
            for gone in [p for p in last if p not in found]:
                del last[gone]
            unknown = {
                p: sig
                for p, sig in found.items()
                if last.get(p) != sig and (name, p) not in self._pending
            }
        if not unknown:
            return
        with read_scope(self._db) as session:
            seen = repo.sensor_versions(session, name, list(unknown))
        new = 0
        now = self._clock()
        with self._lock:
            last = self._last.setdefault(name, {})
            for path, sig in unknown.items():
                if (path, *sig) in seen:
                    last[path] = sig
                elif (name, path) not in self._pending:
                    self._pending[(name, path)] = _Candidate(sig, now)
                    new += 1
        if new:
            log.info("sensor %s: %d file(s) in %s not seen before", name, new, spec.path)

    def _drop_pending(self, name: str) -> None:
        """Forget a sensor's candidates (caller holds `_lock`)."""
        for key in [k for k in self._pending if k[0] == name]:
            del self._pending[key]

    # --- watches ------------------------------------------------------------------------------

    def _reconcile_watches(self) -> None:
        """Make the Observer's watches match the sensors' folders (caller holds `_sync_lock`).

        A watch whose folder vanished is dropped with a warning; a folder that is back (or was
        replaced) gets a new watch and a rescan, so drops made meanwhile are not lost.
        """
        observer = self._observer
        with self._lock:
            wanted: dict[WatchKey, list[str]] = {}
            for name, s in self._sensors.items():
                wanted.setdefault(s.key, []).append(name)
        for key, watch in list(self._watches.items()):
            folder_id = _folder_id(key[0])
            if key in wanted and folder_id == watch.folder_id and not watch.handler.dead:
                continue
            del self._watches[key]
            watch.handler.active = False
            if observer is not None:
                with contextlib.suppress(KeyError, OSError, RuntimeError):
                    observer.unschedule(watch.observed)
        if observer is None:
            return
        for key, names in wanted.items():
            folder, recursive = key
            folder_id = _folder_id(folder)
            if folder_id is None:
                if folder not in self._missing:
                    self._missing.add(folder)
                    log.warning(
                        "sensor %s: folder %s does not exist; not watching it",
                        ", ".join(sorted(names)),
                        folder,
                    )
                continue
            if key in self._watches:
                continue
            handler = _Handler(self, key)
            try:
                observed = observer.schedule(
                    handler, folder, recursive=recursive, event_filter=EVENTS
                )
            except OSError as exc:
                log.warning("sensor %s: cannot watch %s: %s", ", ".join(names), folder, exc)
                continue
            self._watches[key] = _Watch(observed, handler, folder_id)
            if folder in self._missing:
                self._missing.discard(folder)
                log.info("sensor folder %s is back; watching it again", folder)
            for name in names:
                self._scan(name)  # after the watch exists, so nothing falls in between

    # --- settling and claiming ----------------------------------------------------------------

    def _settle_of(self, name: str) -> float:
        """The sensor's settle time (caller holds `_lock`); 0 for a sensor that is gone."""
        sensor = self._sensors.get(name)
        return sensor.spec.settle if sensor is not None else 0.0

    def _settled(self) -> list[_Settled]:
        """Pop the candidates whose version held still for their sensor's settle time.

        Only candidates that are due get a stat: the event handler re-stats a file on every
        write, and any write moves its mtime, so the same (size, mtime_ns) at `since` and at
        `since + settle` means nothing was written in between. A burst of thousands of files
        thus costs one stat per file per settle period, not one per file per tick.
        """
        now = self._clock()
        with self._lock:
            due = [
                (key, cand)
                for key, cand in self._pending.items()
                if cand.not_before <= now and now - cand.since >= self._settle_of(key[0])
            ]
        if not due:
            return []
        stats = [(key, cand, _stat_sig(key[1])) for key, cand in due]
        settled: list[_Settled] = []
        with self._lock:
            for (name, path), cand, sig in stats:
                if self._pending.get((name, path)) is not cand:
                    continue
                sensor = self._sensors.get(name)
                if sig is None or sensor is None or not sensor.enabled:
                    del self._pending[(name, path)]  # vanished, or the sensor is off or gone
                    continue
                if sig != cand.sig:
                    cand.sig, cand.since = sig, now  # still being written: start over
                    continue
                if now - cand.since < sensor.spec.settle:  # the handler saw a write meanwhile
                    continue
                del self._pending[(name, path)]
                if self._last.get(name, {}).get(path) == sig or not _eligible(sensor.spec, path):
                    continue
                settled.append(_Settled(name, path, sig, cand))
        return settled

    def _requeue(self, items: list[_Settled], backoff: bool) -> None:
        now = self._clock()
        with self._lock:
            for item in items:
                cand = item.candidate
                if backoff:
                    cand.tries += 1
                    delay = self._settle_of(item.sensor) * 2**cand.tries
                    cand.not_before = now + min(delay, MAX_BACKOFF)
                self._pending.setdefault((item.sensor, item.path), cand)

    def _claim(self, sensor: str, items: list[_Settled]) -> list[str]:
        """Claim a batch in one transaction; on a duplicate, fall back to one file at a time."""
        with self._lock:
            state = self._sensors.get(sensor)
            spec = state.spec if state is not None else None
        if spec is None:
            return []
        try:
            try:
                claimed = self._claim_txn(spec, items, careful=False)
            except _PlanFailed:
                # Some file's run cannot be planned: redo the batch with a savepoint per file,
                # so that file gets its cursor row (and no run) and the others their runs.
                claimed = self._claim_txn(spec, items, careful=True)
        except IntegrityError:
            # Another engine claimed one of these versions between our check and our commit.
            log.info("sensor %s: a file in a batch of %d was claimed elsewhere", sensor, len(items))
            claimed = []
            for item in items:
                try:
                    claimed.extend(self._claim_txn(spec, [item], careful=True))
                except IntegrityError:
                    self._remember(sensor, [item])
                except Exception:
                    log.exception("sensor %s: could not claim %s; will retry", sensor, item.path)
                    self._requeue([item], backoff=True)
        except Exception:
            log.exception("sensor %s: could not claim %d file(s); will retry", sensor, len(items))
            self._requeue(items, backoff=True)
            return []
        run_ids = []
        for run_id in claimed:
            try:
                self._start_run(run_id)
            except Exception:  # the run is queued in storage: recovery will pick it up
                log.exception("sensor %s: could not hand run %s to the executor", sensor, run_id)
            run_ids.append(run_id)
        return run_ids

    def _claim_txn(self, spec: SensorSpec, items: list[_Settled], careful: bool) -> list[str]:
        """One write transaction: cursor rows plus runs for `items`; returns the run ids.

        Without `careful`, runs are recorded straight into the transaction (a savepoint per file
        costs about a third more) and a plan that fails aborts it with `_PlanFailed`.
        """
        now = self._clock()
        rows: list[SensorFile] = []
        run_ids: list[str] = []
        with session_scope(self._db) as session:
            seen = repo.sensor_versions(session, spec.name, [i.path for i in items])
            fresh = [i for i in items if (i.path, *i.sig) not in seen]
            for item in fresh:
                run_id = self._plan(session, spec, item.path, careful)
                if run_id is not None:
                    run_ids.append(run_id)
                rows.append(
                    SensorFile(
                        sensor=spec.name,
                        path=item.path,
                        size=item.sig[0],
                        mtime_ns=item.sig[1],
                        run_id=run_id,
                        seen_at=now,
                    )
                )
            repo.add_sensor_files(session, rows)
        self._remember(spec.name, items)
        if rows:
            log.info(
                "sensor %s: %d new file(s), %d run(s) started", spec.name, len(rows), len(run_ids)
            )
        return run_ids

    def _plan(self, session: Session, spec: SensorSpec, path: str, careful: bool) -> str | None:
        request = request_for(spec.target, "sensor", spec.name, {"path": path})
        if not careful:
            try:
                return self._record_run(session, request)
            except EngineError as exc:
                raise _PlanFailed from exc
        try:
            with session.begin_nested():  # a failed plan leaves nothing half-added
                return self._record_run(session, request)
        except EngineError as exc:
            log.error("sensor %s: cannot start a run for %s: %s", spec.name, path, exc.msg)
            return None

    def _remember(self, sensor: str, items: list[_Settled]) -> None:
        with self._lock:
            last = self._last.setdefault(sensor, {})
            for item in items:
                last[item.path] = item.sig

    # --- the settle thread --------------------------------------------------------------------

    def _tick(self) -> float:
        with self._lock:
            shortest = min((s.spec.settle for s in self._sensors.values()), default=MAX_TICK * 4)
        return min(max(shortest / 4, MIN_TICK), MAX_TICK)

    def _loop(self, stop_evt: threading.Event) -> None:
        next_rescan = time.monotonic() + self.rescan_interval
        while not stop_evt.wait(self._tick()):
            try:
                self._poll(stop_evt)
            except Exception:
                log.exception("sensor poll failed")
            if time.monotonic() < next_rescan:
                continue
            next_rescan = time.monotonic() + self.rescan_interval
            if not self._sync_lock.acquire(blocking=False):
                continue  # a sync is running: it does the same work
            try:
                if not stop_evt.is_set():
                    self._maintain()
            except Exception:
                log.exception("sensor rescan failed")
            finally:
                self._sync_lock.release()

    def _maintain(self) -> None:
        """Re-create dead watches and rescan every folder (catches events the kernel dropped)."""
        self._reconcile_watches()
        with self._lock:
            names = [name for name, s in self._sensors.items() if s.enabled]
        for name in names:
            self._scan(name)


def statuses(db: Any, manifest: Manifest) -> list[SensorStatus]:
    """Every sensor's status as stored, for a process that does not run the sensors (a CLI,
    or a UI attached to a daemon): nothing is watched and nothing is written."""
    with read_scope(db) as session:
        toggles = repo.toggles(session, "sensor")
        stats = repo.sensor_stats(session)
    return [
        _status(spec, toggles[name].enabled if name in toggles else True, stats)
        for name, spec in sorted(manifest.sensors.items())
    ]


def _status(spec: SensorSpec, enabled: bool, stats: dict[str, Any]) -> SensorStatus:
    count, last = stats.get(spec.name, (0, None))
    return SensorStatus(
        name=spec.name,
        path=spec.path,
        pattern=spec.pattern,
        target=target_label(spec.target),
        enabled=enabled,
        files_seen=count,
        last_file=last.path if last is not None else None,
        last_seen_at=last.seen_at if last is not None else None,
        last_run_id=last.run_id if last is not None else None,
    )
