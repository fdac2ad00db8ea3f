"""Facts about processes that every layer may need, with no dependency of its own."""

from __future__ import annotations

import signal

_EXIT_WORDS = {
    signal.SIGSEGV: "segmentation fault (SIGSEGV)",
    signal.SIGABRT: "aborted (SIGABRT)",
    signal.SIGKILL: "killed by SIGKILL",
    signal.SIGTERM: "terminated by SIGTERM",
}


def describe_exit(returncode: int) -> str:
    """A human reason for a process's exit status as `subprocess` reports it."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        sig = signal.Signals(-returncode)
    except ValueError:
        # Real-time signals have no name in the enum.
        return f"killed by signal {-returncode}"
    return _EXIT_WORDS.get(sig, f"killed by {sig.name}")
