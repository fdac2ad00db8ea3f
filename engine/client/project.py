"""What every part of the client shares: one project's folders, settings, definitions and
database, each opened on first use (`dagtop check` and `list` never import storage)."""

from __future__ import annotations

import os
import threading
from contextlib import AbstractContextManager
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import NO_PIPELINES, EngineError, StorageError
from engine.loading.config import Config, Paths, load_config, resolve_paths

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine as SAEngine
    from sqlmodel import Session

    from engine.loading.manifest import Manifest
    from engine.service.daemon import Engine
    from engine.service.lease import Holder


class Project:
    """One project: a home folder and a pipelines folder.

    Args:
        home: The home folder (default `./.dagtop` or DAGTOP_HOME).
        pipelines: The pipelines folder (default `./pipelines` or DAGTOP_PIPELINES).
    """

    def __init__(self, home: str | Path | None = None, pipelines: str | Path | None = None) -> None:
        self.paths: Paths = resolve_paths(home, pipelines)
        self._manifest: Manifest | None = None
        self.engine: Engine | None = None
        """The engine embedded in this process, once attached (the UI's)."""

    @cached_property
    def config(self) -> Config:
        return load_config(self.paths.project)

    def _ensure_home(self) -> None:
        try:
            if not self.paths.home.exists():
                # Readable by the user only, as the socket is: it holds logs (which may show
                # what a step printed), values and the history.
                self.paths.home.mkdir(parents=True, exist_ok=True, mode=0o700)
            # A name of this process and thread's own: several processes (a daemon, CLIs, the
            # UI) and threads check the same home at once.
            probe = self.paths.home / f".write-test-{os.getpid()}-{threading.get_ident()}"
            probe.write_text("")
            probe.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot use home folder {self.paths.home}: {exc.strerror}") from exc

    def load(self, force: bool = False) -> Manifest:
        """The manifest of the pipelines folder (cached by file content in the home folder), or
        the embedded engine's (which reloads on every change)."""
        # Asked first, also of an embedded engine (which loads a missing folder as empty):
        # the UI says at once why nothing shows, as the command line does.
        if not self.paths.pipelines.is_dir():
            raise EngineError(
                f"no pipelines folder at {self.paths.pipelines} (use --pipelines DIR)",
                title=NO_PIPELINES,
            )
        if self.engine is not None and not force:
            return self.engine.manifest()
        if self._manifest is None or force:
            self._ensure_home()
            from engine.loading import loader

            self._manifest = loader.load(
                self.paths.pipelines, cache_dir=self.paths.home, timeout=self.config.load_timeout
            )
        return self._manifest

    # --- storage ------------------------------------------------------------------------------

    @cached_property
    def db(self) -> SAEngine:
        from engine.storage.db import database_url, open_db

        self._ensure_home()
        return open_db(database_url(self.paths.home, self.config.database_url))

    def _read(self) -> AbstractContextManager[Session]:
        from engine.storage.db import read_scope

        return read_scope(self.db)

    def _write(self) -> AbstractContextManager[Session]:
        from engine.storage.db import session_scope

        return session_scope(self.db)

    def daemon(self) -> Holder | None:
        """The live engine holding this home's lease in another process, or None."""
        from engine.service import lease

        holder = lease.live_holder(self.db)
        if holder is None or (self.engine is not None and holder.holder == self.engine.me):
            return None
        return holder

    def close(self) -> None:
        """On a clean exit: checkpoint the database's write-ahead log if this process wrote,
        and close its connections (SQLite then removes the -wal and -shm files)."""
        db = self.__dict__.get("db")  # never opened: nothing to do, and nothing to import
        if db is not None:
            from engine.storage.db import close

            close(db)


__all__ = ["Project"]
