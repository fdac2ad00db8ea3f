"""Ending the daemons a test started as real `dagtop daemon` processes."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterable
from typing import Any


def stop_all(procs: Iterable[subprocess.Popen[Any]]) -> None:
    """SIGTERM each daemon still running (a clean stop), and SIGKILL the process group of any
    that has not stopped within 10 s (each was started with `start_new_session=True`)."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
