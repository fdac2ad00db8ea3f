"""Hot reload: watch the pipelines folder and reload definitions when a file changes.

Editors save in bursts (write a temp file, rename, touch), so events are debounced. A file
that becomes broken keeps its last good definitions running while its error is shown; a
deleted file's definitions go away. Reloading never touches running steps: they run the code
they started with.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from engine.loading.manifest import Manifest

log = logging.getLogger(__name__)


class _Handler(FileSystemEventHandler):
    def __init__(self, changed: Callable[[], None]) -> None:
        self.changed = changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return
        paths = [str(event.src_path), str(getattr(event, "dest_path", "") or "")]
        if any(p.endswith(".py") for p in paths):
            self.changed()


class PipelineWatcher:
    """Calls `on_change` once, `debounce` seconds after the last change to a .py file (what it
    returns is not used)."""

    def __init__(self, root: Path, on_change: Callable[[], object], debounce: float = 0.3) -> None:
        self.root = root
        self.on_change = on_change
        self.debounce = debounce
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()
        self._observer: BaseObserver | None = None

    def _changed(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.debounce, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def _fire(self) -> None:
        try:
            self.on_change()
        except Exception:  # noqa: BLE001 - a failed reload must not kill the watcher
            log.exception("reloading pipelines failed")

    def start(self) -> None:
        observer = Observer()
        observer.schedule(_Handler(self._changed), str(self.root), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=2)
            self._observer = None


def keep_last_good(old: Manifest | None, new: Manifest) -> Manifest:
    """`new`, plus the previous definitions of files that are broken now but loaded before.

    The error stays in `errors`, so the UI and `dagtop check` still show it.
    """
    if old is None:
        return new
    merged = dataclasses.replace(
        new,
        assets=dict(new.assets),
        checks={k: list(v) for k, v in new.checks.items()},
        pipelines=dict(new.pipelines),
        schedules=dict(new.schedules),
        sensors=dict(new.sensors),
        resources=dict(new.resources),
    )
    for rel in new.errors:
        if rel not in new.files:
            continue
        for name, spec in old.assets.items():
            if spec.file == rel and name not in merged.assets:
                merged.assets[name] = spec
        for asset, checks in old.checks.items():
            kept = [c for c in checks if c.file == rel]
            if kept:
                merged.checks.setdefault(asset, []).extend(kept)
        for section in ("pipelines", "schedules", "sensors", "resources"):
            target = getattr(merged, section)
            for name, spec in getattr(old, section).items():
                if spec.file == rel and name not in target:
                    target[name] = spec
    return merged
