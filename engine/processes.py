"""Facts about processes that every layer may need (psutil is imported only when asked)."""

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


def same_process_alive(pid: int | None, created: float | None, *, if_unsure: bool) -> bool:
    """Whether the process recorded as `pid`, created at `created`, still runs (not a zombie).

    A pid now naming a process born at another time is not it: pids are reused. `if_unsure` is
    the answer when psutil cannot tell (access denied): True where taking a live process for
    dead would cost something (recording a running step as ended), False where the caller
    only looks for a live owner.
    """
    if not pid:
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        if created is not None and abs(proc.create_time() - created) > 0.01:
            return False
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return if_unsure
