"""How asset and task values are written to and read from disk.

Every write goes to a temp file in the same folder and is renamed into place, so a crash never
leaves a half-written value where a later step would load it. A value's location is a path, or
an fsspec URL (`s3://...`, `file://...`) when the project's `values_dir` is one, so that steps
on other machines can reach it; fsspec is imported only for URLs.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Protocol, TypeGuard


class IOManager(Protocol):
    """Stores one value per file. Implement both methods to plug in another format.

    An `extension` attribute, if it has one, ends the files' names (default "bin").
    """

    def dump(self, value: Any, fh: Any) -> None: ...

    def load(self, fh: Any) -> Any: ...


class PickleIO:
    extension = "pkl"

    def dump(self, value: Any, fh: Any) -> None:
        pickle.dump(value, fh, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self, fh: Any) -> Any:
        return pickle.load(fh)


class JsonIO:
    """For small dict and list results that people want to read with `cat`."""

    extension = "json"

    def dump(self, value: Any, fh: Any) -> None:
        fh.write(json.dumps(value, indent=1, sort_keys=True, allow_nan=False).encode())

    def load(self, fh: Any) -> Any:
        return json.loads(fh.read())


BUILTIN: dict[str, IOManager] = {"pickle": PickleIO(), "json": JsonIO()}


def resolve(io: Any) -> IOManager:
    """The IO manager named by an asset's `io=` (a name or an object with dump/load)."""
    if isinstance(io, str):
        try:
            return BUILTIN[io]
        except KeyError:
            raise ValueError(
                f"unknown io manager {io!r} (choose {', '.join(BUILTIN)} or pass an object)"
            ) from None
    if _is_io_manager(io):
        return io
    raise ValueError(f"an io manager needs dump(value, fh) and load(fh) methods, got {io!r}")


def _is_io_manager(obj: object) -> TypeGuard[IOManager]:
    return callable(getattr(obj, "dump", None)) and callable(getattr(obj, "load", None))


def is_url(location: str | Path) -> bool:
    return "://" in str(location)


def store(io: IOManager, value: Any, path: str | Path) -> int:
    """Write `value` to `path` (a path or a URL) atomically; returns its size in bytes."""
    if is_url(path):
        return _store_url(io, value, str(path))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temp name carries the value's (RUN.ATTEMPT.EXT), so the start-up sweep can tell a
    # crashed write of a run it knows from a file that is not dagtop's.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".tmp-{path.name}-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            io.dump(value, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path.stat().st_size


def load(io: IOManager, path: str | Path) -> Any:
    if is_url(path):
        import fsspec

        with fsspec.open(str(path), "rb") as fh:
            return io.load(fh)
    with Path(path).open("rb") as fh:
        return io.load(fh)


def remove(path: str | Path) -> None:
    """Delete a stored value; a value already gone is not an error."""
    if not is_url(path):
        Path(path).unlink(missing_ok=True)
        return
    import fsspec

    fs, target = fsspec.core.url_to_fs(str(path))
    with contextlib.suppress(FileNotFoundError):
        fs.rm(target)


def _store_url(io: IOManager, value: Any, url: str) -> int:
    import fsspec

    fs, target = fsspec.core.url_to_fs(url)
    parent = target.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    # A temp name, then a move: a reader never sees half a value (on object stores the
    # upload itself is already all-or-nothing).
    name = target.rsplit("/", 1)[-1]
    tmp = f"{parent}/.tmp-{name}-{os.getpid()}-{os.urandom(4).hex()}.part"
    try:
        with fs.open(tmp, "wb") as fh:
            io.dump(value, fh)
        fs.mv(tmp, target)
    except BaseException:
        with contextlib.suppress(Exception):
            fs.rm(tmp)
        raise
    return int(fs.size(target))
