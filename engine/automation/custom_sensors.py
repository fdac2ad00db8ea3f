"""Custom sensors (`@sensor`): each evaluated every `interval` seconds in a child process, its
requests recorded exactly once.

Evaluation: `engine.automation.sensor_child` in a new interpreter (the engine has threads, so
it never forks), in a session of its own, stopped with its whole session after `timeout`
seconds, and its leftovers ended when it returns. Each evaluation runs on a thread of its own,
so a sensor that hangs delays nothing but itself; a sensor is never evaluated twice at once.

Exactly once: one transaction records the tick, the sensor's new cursor, the dynamic partition
keys it added, its runs and their run keys (UNIQUE per sensor). A request whose run key the
sensor has requested before starts nothing. An engine killed before that commit left nothing
of the tick, which is evaluated again from the old cursor; killed after it, the runs are queued
in storage and the next engine starts them. A tick whose answer cannot be recorded (a request
that cannot be planned, a run key taken by another engine at the same moment) records nothing
but its error, and the sensor is evaluated again at its next interval.

A hand-written loop rather than APScheduler jobs: an evaluation may hang until its timeout,
and the scheduler's shared thread pool would let a few hanging sensors delay the schedules.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine as SAEngine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from engine.automation.sensor_registry import KEEP_TICKS, prune_now_and_then
from engine.automation.targets import request_for
from engine.errors import EngineError, suggest
from engine.history.plan import RunRequest
from engine.loading.manifest import CustomSensorSpec, Manifest
from engine.status import TickStatus
from engine.storage import repo
from engine.storage.db import read_scope, session_scope
from engine.storage.models import SensorRunKey, SensorTick

log = logging.getLogger(__name__)

LOOP_TICK = 0.1  # seconds between two looks for a sensor that is due
LOG_TAIL = 4000  # characters of a tick's output kept with it
STOP_GRACE = 2.0  # seconds stop() waits for evaluations it ended
# Ticks kept per sensor (sensor_registry.KEEP_TICKS): one every 30 s is 2,880 a day. Older
# ones are deleted now and then (its cursor and run keys are not ticks, and stay).


@dataclass(frozen=True, slots=True)
class TickOutcome:
    """What one evaluation came to (also what its SensorTick row says)."""

    sensor: str
    status: TickStatus  # started (it requested runs) | skipped | failed
    run_ids: tuple[str, ...] = ()
    run_keys_skipped: int = 0
    reason: str | None = None
    error: str | None = None
    keys_added: int = 0


class _TurnedOff(Exception):
    """The sensor was turned off while it was evaluated."""


@dataclass(slots=True)
class _State:
    spec: CustomSensorSpec
    enabled: bool
    due: float = 0.0  # time.monotonic() of its next evaluation
    busy: bool = False
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)


def evaluate_in_child(
    root: Path,
    spec: CustomSensorSpec,
    cursor: str | None,
    last_tick_at: float | None,
    on_start: Callable[[subprocess.Popen[bytes]], None] | None = None,
) -> tuple[dict[str, Any] | None, str | None, str]:
    """Evaluate a sensor in a child process, within its timeout.

    Returns:
        Its answer (or None), the error (or None), and the end of what it printed.
    """
    request = {
        "root": str(root),
        "file": spec.file,
        "name": spec.name,
        "cursor": cursor,
        "last_tick_at": last_tick_at,
    }
    with tempfile.TemporaryFile() as output:
        proc = subprocess.Popen(
            [sys.executable, "-m", "engine.automation.sensor_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=output,
            start_new_session=True,  # its whole session is ended with it
        )
        if on_start is not None:
            on_start(proc)
        error: str | None = None
        try:
            out, _ = proc.communicate(json.dumps(request).encode(), timeout=spec.timeout)
        except subprocess.TimeoutExpired:
            _end_session(proc)
            proc.communicate()
            out, error = b"", f"timed out after {spec.timeout:g} s"
        finally:
            _end_session(proc)  # whatever it started and left running
        output.seek(max(0, _size(output) - LOG_TAIL))
        tail = output.read().decode("utf-8", "replace")
    if error is not None:
        return None, error, tail
    try:
        answer = json.loads(out) if out else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        code = proc.returncode
        why = f"killed by signal {-code}" if code and code < 0 else f"exit code {code}"
        return None, f"the sensor's process ended without an answer ({why})", tail
    if answer.get("error"):
        trace = answer.get("traceback")
        return None, str(answer["error"]), (tail + "\n" + trace if trace else tail)[-LOG_TAIL:]
    result = answer.get("result")
    if not isinstance(result, dict):
        return None, "the sensor's process answered nothing", tail
    return result, None, tail


def _size(f: Any) -> int:
    f.seek(0, os.SEEK_END)
    return int(f.tell())


def _end_session(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class CustomSensorRunner:
    """Evaluates every custom sensor that is on, each at its interval, and records its ticks."""

    def __init__(
        self,
        db: SAEngine,
        root: Path,
        record_run: Callable[[Session, RunRequest], str],
        start_run: Callable[[str], None],
        clock: Callable[[], float] = time.time,
        on_tick: Callable[[TickOutcome], None] | None = None,
    ) -> None:
        self._db = db
        self._root = root
        self._record_run = record_run
        self._start_run = start_run
        self._clock = clock
        self._on_tick = on_tick
        self._lock = threading.Lock()
        self._sensors: dict[str, _State] = {}
        self._thread: threading.Thread | None = None
        self._stop_evt = threading.Event()
        self._workers: set[threading.Thread] = set()
        self._ticks: dict[str, int] = {}  # ticks recorded by this runner, per sensor
        self.keep_ticks = KEEP_TICKS

    # --- what the engine calls ----------------------------------------------------------------

    def owns(self, name: str) -> bool:
        with self._lock:
            return name in self._sensors

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._sensors)

    def sync(self, manifest: Manifest) -> None:
        """Follow the manifest: new sensors are due at their last tick plus their interval."""
        with read_scope(self._db) as session:
            toggles = {n: t.enabled for n, t in repo.toggles(session, "sensor").items()}
            last = repo.last_sensor_ticks(session)
        now, mono = self._clock(), time.monotonic()
        with self._lock:
            for name in list(self._sensors):
                if name not in manifest.custom_sensors:
                    del self._sensors[name]
                    log.info("sensor %s removed", name)
            for name, spec in manifest.custom_sensors.items():
                state = self._sensors.get(name)
                enabled = toggles.get(name, True)
                if state is None:
                    tick = last.get(name)
                    wait = 0.0 if tick is None else tick.started_at + spec.interval - now
                    self._sensors[name] = _State(spec, enabled, due=mono + max(0.0, wait))
                    log.info("sensor %s evaluated every %g s", name, spec.interval)
                else:
                    state.spec, state.enabled = spec, enabled

    def set_enabled(self, name: str, enabled: bool) -> None:
        """Turn a sensor on (evaluated at once) or off, persistently.

        Raises:
            EngineError: no custom sensor has that name.
        """
        with self._lock:
            known = list(self._sensors)
        if name not in known:
            raise EngineError(
                f"unknown sensor {name!r}{suggest(name, known)} (see `dagtop sensors`)",
                title="Unknown sensor",
            )
        with session_scope(self._db) as session:
            repo.set_toggle(session, "sensor", name, enabled, self._clock())
        with self._lock:
            state = self._sensors.get(name)
            if state is not None:
                if enabled and not state.enabled:
                    state.due = time.monotonic()
                state.enabled = enabled
        log.info("sensor %s turned %s", name, "on" if enabled else "off")

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop_evt = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, args=(self._stop_evt,), name="dagtop-custom-sensors", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop evaluating: evaluations under way are ended (their ticks are not recorded, so
        the next engine evaluates them again)."""
        self._stop_evt.set()
        thread, self._thread = self._thread, None
        with self._lock:
            procs = [s.proc for s in self._sensors.values() if s.proc is not None]
            workers = list(self._workers)
        for proc in procs:
            _end_session(proc)
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=STOP_GRACE)
        deadline = time.monotonic() + STOP_GRACE
        for worker in workers:
            worker.join(timeout=max(0.0, deadline - time.monotonic()))

    # --- one tick -----------------------------------------------------------------------------

    def tick(self, name: str) -> TickOutcome:
        """Evaluate one sensor now and record what it asked for (the loop's work; tests call it).

        Raises:
            EngineError: no custom sensor has that name.
        """
        with self._lock:
            state = self._sensors.get(name)
        if state is None:
            raise EngineError(f"unknown sensor {name!r}", title="Unknown sensor")
        spec = state.spec
        with read_scope(self._db) as session:
            cursor = repo.sensor_cursor(session, name)
            ticks = repo.sensor_ticks(session, name, limit=1)
        last_at = ticks[0].started_at if ticks else None
        started, t0 = self._clock(), time.monotonic()

        def remember(proc: subprocess.Popen[bytes]) -> None:
            with self._lock:
                state.proc = proc

        try:
            answer, error, tail = evaluate_in_child(self._root, spec, cursor, last_at, remember)
        finally:
            with self._lock:
                state.proc = None
        if self._stop_evt.is_set() and error is not None:
            # Ended by stop(): not the sensor's failure, and not recorded.
            return TickOutcome(name, TickStatus.FAILED, error="the engine stopped")
        duration = time.monotonic() - t0
        if answer is not None:
            try:
                outcome = self._record(spec, answer, started, duration, tail)
            except _TurnedOff:
                log.info("sensor %s was turned off while evaluated: nothing recorded", name)
                return TickOutcome(name, TickStatus.SKIPPED, reason="turned off")
            except IntegrityError:
                error = "a run key was requested by another engine at the same moment"
            except EngineError as exc:
                error = exc.msg
            else:
                self._told(outcome)
                return outcome
        assert error is not None
        log.warning("sensor %s failed: %s", name, error)
        tick = SensorTick(
            sensor=name,
            started_at=started,
            duration=duration,
            status=TickStatus.FAILED,
            error=error,
            cursor=cursor,
            log_tail=tail or None,
        )
        with session_scope(self._db) as session:
            repo.add_sensor_tick(session, tick)
        outcome = TickOutcome(name, TickStatus.FAILED, error=error)
        self._told(outcome)
        return outcome

    def _told(self, outcome: TickOutcome) -> None:
        count = self._ticks[outcome.sensor] = self._ticks.get(outcome.sensor, 0) + 1
        prune_now_and_then(self._db, outcome.sensor, count, self.keep_ticks)
        for run_id in outcome.run_ids:
            try:
                self._start_run(run_id)
            except Exception:  # the run is queued in storage: admission picks it up
                log.exception("sensor %s: could not hand run %s on", outcome.sensor, run_id)
        if self._on_tick is not None:
            self._on_tick(outcome)

    def _record(
        self,
        spec: CustomSensorSpec,
        answer: dict[str, Any],
        started: float,
        duration: float,
        tail: str,
    ) -> TickOutcome:
        """The tick, its cursor, its keys, its runs and their run keys: one transaction.

        Raises:
            EngineError: a request cannot be planned (nothing is recorded).
            IntegrityError: one of its run keys was recorded by another engine meanwhile.
        """
        name, now = spec.name, self._clock()
        requests: list[dict[str, Any]] = answer.get("requests") or []
        run_ids: list[str] = []
        skipped = added = 0
        with session_scope(self._db) as session:
            toggle = repo.toggles(session, "sensor").get(name)
            if toggle is not None and not toggle.enabled:
                # Turned off while it was evaluated: nothing is requested while it is off, and
                # what it saw is seen again (from the same cursor) once it is on.
                raise _TurnedOff
            for definition, keys in (answer.get("partitions") or {}).items():
                added += len(repo.add_dynamic_keys(session, definition, keys, now))
            keyed = [r["run_key"] for r in requests if r.get("run_key") is not None]
            seen = repo.requested_run_keys(session, name, keyed) if keyed else set()
            new_keys: list[SensorRunKey] = []
            for request in requests:
                key = request.get("run_key")
                if key is not None:
                    if key in seen:
                        skipped += 1
                        continue
                    seen.add(key)
                target = request.get("target") or spec.target
                if target is None:  # the child checks this too
                    raise EngineError(f"sensor {name!r}: a request has no target")
                run_request = request_for(
                    target, "sensor", name, dict(request.get("params") or {}),
                    request.get("partition"),
                )  # fmt: skip
                if target["kind"] == "pipeline" and request.get("partition") is not None:
                    raise EngineError(f"sensor {name!r}: task pipelines are not partitioned")
                try:
                    run_id = self._record_run(session, run_request)
                except EngineError as exc:
                    what = f"run key {key!r}" if key is not None else "a request"
                    raise EngineError(f"cannot start a run for {what}: {exc.msg}") from None
                run_ids.append(run_id)
                if key is not None:
                    new_keys.append(
                        SensorRunKey(sensor=name, run_key=key, run_id=run_id, created_at=now)
                    )
            repo.add_run_keys(session, new_keys)
            cursor = answer.get("cursor")
            if answer.get("cursor_changed"):
                repo.set_sensor_cursor(session, name, cursor, now)
            else:
                cursor = repo.sensor_cursor(session, name)
            status = TickStatus.STARTED if run_ids else TickStatus.SKIPPED
            reason = answer.get("skip")
            if status == TickStatus.SKIPPED and not reason:
                reason = (
                    f"{skipped} run key(s) already requested" if skipped else "nothing to request"
                )
            repo.add_sensor_tick(
                session,
                SensorTick(
                    sensor=name,
                    started_at=started,
                    duration=duration,
                    status=status,
                    run_ids=json.dumps(run_ids),
                    run_keys_skipped=skipped,
                    reason=reason if status == TickStatus.SKIPPED else None,
                    cursor=cursor,
                    keys_added=added,
                    log_tail=tail or None,
                ),
            )
        if run_ids:
            log.info("sensor %s requested %d run(s)", name, len(run_ids))
        return TickOutcome(
            name, status, tuple(run_ids), skipped, reason if status == TickStatus.SKIPPED else None,
            None, added,
        )  # fmt: skip

    # --- the loop -----------------------------------------------------------------------------

    def _loop(self, stop_evt: threading.Event) -> None:
        while not stop_evt.wait(LOOP_TICK):
            now = time.monotonic()
            with self._lock:
                due = [
                    name
                    for name, s in self._sensors.items()
                    if s.enabled and not s.busy and s.due <= now
                ]
                for name in due:
                    self._sensors[name].busy = True
            for name in due:
                worker = threading.Thread(
                    target=self._work, args=(name,), name=f"dagtop-sensor-{name}", daemon=True
                )
                with self._lock:
                    self._workers.add(worker)
                worker.start()

    def _work(self, name: str) -> None:
        begun = time.monotonic()
        try:
            if not self._stop_evt.is_set():
                self.tick(name)
        except Exception:  # noqa: BLE001 - a tick's failure never stops the loop
            log.exception("sensor %s: tick failed", name)
        finally:
            with self._lock:
                state = self._sensors.get(name)
                if state is not None:
                    state.busy = False
                    state.due = max(begun + state.spec.interval, time.monotonic())
                self._workers.discard(threading.current_thread())
