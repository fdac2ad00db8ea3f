"""Alerts: tell someone when a step fails, retries or succeeds, without ever affecting the run.

A hook is a shell command (it sees the run id, step, error and log path in its environment), a
webhook URL (a JSON POST), or a Python function in a pipeline file. User code never runs in
the engine's process, so a Python hook runs in a child process like any step. Hooks run on one
background thread with a time limit each; a hook that fails or hangs is logged and forgotten.
A step that fails again and again does not flood anyone: at most one alert per asset and event
within the window, and the next alert says how many were held back.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from engine.processes import child_environ

log = logging.getLogger(__name__)

EVENTS = ("on_failure", "on_retry", "on_success")
HOOK_TIMEOUT = 10.0
DEFAULT_WINDOW = 300.0


@dataclass(frozen=True)
class Alert:
    """What a hook is told."""

    event: str  # on_failure | on_retry | on_success
    run_id: str
    step: str
    status: str
    attempt: int
    error: str | None
    log_path: str | None
    partition: str | None
    pipeline: str | None = None
    suppressed: int = 0  # alerts held back by the window since the last one sent
    at: float = field(default_factory=time.time)

    def env(self) -> dict[str, str]:
        return {
            "DAGTOP_EVENT": self.event,
            "DAGTOP_RUN_ID": self.run_id,
            "DAGTOP_STEP": self.step,
            "DAGTOP_STATUS": self.status,
            "DAGTOP_ATTEMPT": str(self.attempt),
            "DAGTOP_ERROR": self.error or "",
            "DAGTOP_LOG_PATH": self.log_path or "",
            "DAGTOP_PARTITION": self.partition or "",
            "DAGTOP_SUPPRESSED": str(self.suppressed),
        }


class Alerter:
    """Sends alerts on a background thread, rate-limited per (step, event).

    Args:
        window: Seconds during which a second alert for the same step and event is held back.
        timeout: Seconds a hook may take before it is killed.
        clock: Injected in tests.
    """

    def __init__(
        self,
        window: float = DEFAULT_WINDOW,
        timeout: float = HOOK_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.window = window
        self.timeout = timeout
        self.clock = clock
        self._last: dict[tuple[str, str], float] = {}
        self._held: dict[tuple[str, str], int] = {}
        self._queue: queue.Queue[tuple[dict[str, Any], Alert] | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self.sent: list[tuple[str, Alert]] = []  # (hook kind, alert), for status and tests

    def notify(self, hooks: list[dict[str, Any]], alert: Alert) -> bool:
        """Queue `alert` for each hook unless the window holds it back; returns whether sent."""
        if not hooks:
            return False
        key = (alert.step, alert.event)
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.window:
            self._held[key] = self._held.get(key, 0) + 1
            log.info(
                "alert %s for %s held back (window %g s)", alert.event, alert.step, self.window
            )
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            alert = Alert(**{**asdict(alert), "suppressed": held})
        self._ensure_thread()
        for hook in hooks:
            self._queue.put((hook, alert))
        return True

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="dagtop-alerts", daemon=True)
            self._thread.start()

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until every queued alert was sent (or given up on)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)

    def stop(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=self.timeout + 1)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                hook, alert = item
                try:
                    _SEND[hook["kind"]](hook, alert, self.timeout)
                    self.sent.append((hook["kind"], alert))
                except Exception as exc:  # noqa: BLE001 - a broken hook must not hurt anything
                    log.warning(
                        "alert hook %s for %s (run %s) failed: %s",
                        hook.get("kind"), alert.step, alert.run_id, exc,
                    )  # fmt: skip
            finally:
                self._queue.task_done()


def _send_shell(hook: dict[str, Any], alert: Alert, timeout: float) -> None:
    proc = subprocess.Popen(
        ["/bin/sh", "-c", hook["command"]],
        env={**child_environ(os.environ), **alert.env()},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    _wait(proc, timeout, "command")


def _send_webhook(hook: dict[str, Any], alert: Alert, timeout: float) -> None:
    import urllib.request

    body = json.dumps(asdict(alert)).encode()
    request = urllib.request.Request(
        hook["url"], data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
        if response.status >= 400:
            raise RuntimeError(f"webhook answered {response.status}")


def _send_python(hook: dict[str, Any], alert: Alert, timeout: float) -> None:
    # User code never runs in the engine: the function runs in a child of its own.
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.executor.alerts", hook["path"], hook["qualname"]],
        env={**child_environ(os.environ), **alert.env(), "DAGTOP_ALERT": json.dumps(asdict(alert))},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    _wait(proc, timeout, "function")


def _wait(proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    try:
        _out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait()
        raise RuntimeError(f"hook {what} did not finish within {timeout:g} s") from None
    if proc.returncode != 0:
        tail = (err or b"").decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise RuntimeError(f"hook {what} exited with code {proc.returncode}: {tail[0]}")


_SEND: dict[str, Callable[[dict[str, Any], Alert, float], None]] = {
    "shell": _send_shell,
    "webhook": _send_webhook,
    "python": _send_python,
}


def _call_python_hook() -> None:
    """`python -m engine.executor.alerts PATH QUALNAME`: import the file and call the hook."""
    import importlib.util

    path, qualname = sys.argv[1], sys.argv[2]
    sys.path.append(os.path.dirname(path))  # its helper modules, as the pipeline sees them
    spec = importlib.util.spec_from_file_location("dagtop_alert_hook", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    target: Any = module
    for part in qualname.split("."):
        target = getattr(target, part)
    target(Alert(**json.loads(os.environ["DAGTOP_ALERT"])))


if __name__ == "__main__":
    _call_python_hook()
