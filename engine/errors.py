"""Errors the engine raises at its boundaries: each has a short title and a one-line message.

The CLI prints `msg` on one line and exits non-zero; the TUI shows `title` and `msg` in a toast or
modal. Tracebacks of user code travel as data (in load errors and step errors), never as these.
"""

from __future__ import annotations

from collections.abc import Iterable

from engine.redact import redact

NO_PIPELINES = "No pipelines"
"""The title of the error that the pipelines folder is missing (the UI shows the runs anyway)."""


class EngineError(Exception):
    """Base of every error a user can cause; `msg` is one line that says what to do."""

    title = "Error"

    def __init__(self, msg: str, title: str | None = None) -> None:
        msg = redact(msg)  # a message may quote a database URL, parsed or not
        super().__init__(msg)
        self.msg = msg
        if title is not None:
            self.title = title


class DefinitionError(EngineError):
    """A pipeline definition is invalid (raised while a pipeline module is imported)."""

    title = "Invalid definition"

    def __init__(self, msg: str, line: int | None = None, kind: str = "definition") -> None:
        super().__init__(msg)
        self.line = line  # where in the user's file, when the traceback cannot tell
        self.kind = kind


class PipelineLoadError(EngineError):
    title = "Pipeline load error"


class SelectionError(EngineError):
    title = "Unknown selection"


class PartitionError(EngineError):
    title = "Bad partition"


class RunNotFound(EngineError):
    title = "Run not found"


class StorageError(EngineError):
    title = "Storage error"


class ExecutorError(EngineError):
    title = "Executor error"


class ConfigError(EngineError):
    title = "Config error"


class EngineBusy(EngineError):
    """Another live engine holds this home folder's lease."""

    title = "Engine already running"


class NoEngine(EngineError):
    """No engine is running to hand a request to."""

    title = "No engine"


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type's name if it has none."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def suggest(name: str, candidates: Iterable[str]) -> str:
    """ " (did you mean a, b?)" for the candidates closest to a mistyped `name`, else ""."""
    import difflib

    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""
