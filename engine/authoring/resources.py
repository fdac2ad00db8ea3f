"""Building the resources a step names, and tearing them down after it.

Used by a step's worker and by `engine.testing` alike. Standard library only: the worker imports
this only when its step names a resource.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any, cast

from engine.authoring.context import ResourceContext
from engine.authoring.definitions import ResourceDef


class ResourceBuildError(Exception):
    """A resource's function raised, or gave nothing to use (its message names the resource)."""

    def __init__(self, name: str, message: str, cause: BaseException | None = None) -> None:
        super().__init__(f"resource {name!r} failed to build: {message}")
        self.name = name
        self.cause = cause


class OpenResources:
    """The resources built for one step, and their teardowns, run in reverse order by `close`.

    Args:
        log: The step's logger (`context.log` of each resource).
        home: The dagtop home folder.
        shared_dir: The step's `context.shared_dir` (default: `home`).
    """

    def __init__(self, log: logging.Logger, home: Path, shared_dir: Path | str = "") -> None:
        self.log = log
        self.home = home
        self.shared_dir = shared_dir
        self.values: dict[str, Any] = {}
        self._teardowns: list[tuple[str, Callable[[], None]]] = []

    def build(self, defn: ResourceDef, config: dict[str, Any] | None = None) -> Any:
        """Call the resource's function once; a generator is advanced to its `yield`.

        Raises:
            ResourceBuildError: the function raised, or a generator yielded nothing.
        """
        name = defn.name
        ctx = ResourceContext(
            name=name,
            config=dict(config or {}),
            log=self.log,
            home=self.home,
            shared_dir=self.shared_dir,
        )
        try:
            made = defn.fn(ctx) if defn.takes_context else defn.fn()
            if inspect.isgenerator(made):
                gen = cast("Generator[Any, None, None]", made)
                try:
                    value = next(gen)
                except StopIteration:
                    raise ResourceBuildError(name, "its function yielded nothing") from None
                self._teardowns.append((name, lambda: _finish(name, gen)))
            else:
                value = made
        except ResourceBuildError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the user's code raised
            first = str(exc).splitlines()[0] if str(exc) else ""
            message = f"{type(exc).__name__}: {first}".rstrip(": ")
            raise ResourceBuildError(name, message, exc) from exc
        self.values[name] = value
        return value

    def close(self) -> None:
        """Run every teardown, newest first. A failing teardown is logged, never raised: the
        step's outcome is already decided, and the other teardowns must still run."""
        while self._teardowns:
            name, teardown = self._teardowns.pop()
            try:
                teardown()
            except Exception as exc:  # noqa: BLE001
                self.log.warning(
                    "resource %s: teardown raised %s: %s", name, type(exc).__name__, exc
                )


def _finish(name: str, gen: Generator[Any, None, None]) -> None:
    """Run the code after a resource's `yield`. Not `gen.throw`: a teardown written without
    try/finally (`yield conn; conn.close()`) must run after a failed step too."""
    try:
        next(gen)
    except StopIteration:
        return
    gen.close()
    raise RuntimeError(f"resource {name!r} yielded more than once")
