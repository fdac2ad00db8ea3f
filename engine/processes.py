"""Facts about processes that every layer may need, with no dependency of its own."""

from __future__ import annotations

import signal
from collections.abc import Mapping

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


DAGTOP_SETTINGS = frozenset(
    {
        "DAGTOP_DATABASE_URL",  # may hold a password
        "DAGTOP_EXECUTOR",
        "DAGTOP_MAX_WORKERS",
        "DAGTOP_FORKSERVER",
        "DAGTOP_PIPELINES",
        "DAGTOP_HOME",  # a step gets its own DAGTOP_HOME: the engine's home
        "DAGTOP_BELL",
        "DAGTOP_ALERT",
    }
)
"""dagtop's own settings and internals: the engine reads them; nothing it starts inherits them."""


def child_environ(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment a step, a hook or a fork server inherits from `environ`: all of it but
    dagtop's own settings (a shell step could print the database URL into its log)."""
    return {k: v for k, v in environ.items() if k not in DAGTOP_SETTINGS}
