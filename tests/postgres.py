"""A throwaway PostgreSQL server for the tests: initdb and pg_ctl in a temp folder, listening
only on 127.0.0.1 (a free port) and on a Unix socket inside that folder.

The OS packages' binaries are used (`initdb` on PATH, or /usr/lib/postgresql/N/bin). PostgreSQL
refuses to run as root, so as root the server runs as the `postgres` user (or `nobody`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

BACKENDS = ["sqlite", "postgresql"]

# Durability is worthless for a server that lives as long as one test session.
SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "shared_buffers": "16MB",
    "max_connections": "100",
}


def find_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    bin: Path
    root: Path
    port: int
    user: str | None  # the OS user the server runs as, when we are root

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            cwd=self.root,
            user=self.user,
            extra_groups=[] if self.user else None,
            env={**os.environ, "LC_ALL": "C"},
            timeout=60,
        )

    def start(self) -> None:
        done = self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync",
            "-E", "UTF8",
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        settings = {**SETTINGS, "unix_socket_directories": f"'{self.root}'"}
        options = " ".join(f"-c {k}={v}" for k, v in settings.items())
        log = self.root / "server.log"
        for _ in range(3):  # the free port may be taken between the probe and the bind
            self.port = _free_port()
            done = self._run(
                "pg_ctl", "start", "-w", "-t", "30", "-D", str(self.data), "-l", str(log),
                "-o", f"{options} -p {self.port}",
            )  # fmt: skip
            if done.returncode == 0:
                return
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else done.stderr
        raise RuntimeError(f"pg_ctl start failed: {tail.strip()}")

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run("pg_ctl", "stop", "-m", "immediate", "-D", str(self.data))
        shutil.rmtree(self.root, ignore_errors=True)

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        )

    def create_database(self) -> str:
        """A new empty database; returns its URL."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[-1]
        with self._admin() as conn:
            # FORCE: the test's engines may still hold pooled connections to it.
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def start_server() -> Server:
    """Start a server in a new temp folder.

    Raises:
        FileNotFoundError: PostgreSQL's binaries are not installed.
        RuntimeError: the server did not start.
    """
    binaries = find_binaries()
    if binaries is None:
        raise FileNotFoundError("PostgreSQL server binaries (initdb, pg_ctl) not found")
    user = None
    root = Path(tempfile.mkdtemp(prefix="dagtop-pg-"))
    if os.geteuid() == 0:
        user = "postgres"
        try:
            entry = pwd.getpwnam(user)
        except KeyError:
            user, entry = "nobody", pwd.getpwnam("nobody")
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = Server(bin=binaries, root=root, port=0, user=user)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


def database_for(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on the backend a fixture was parametrized with (SQLite by default).

    For fixtures of their own that tests switch with
    `@pytest.mark.parametrize("fixture", BACKENDS, indirect=True)`.
    """
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite:///{tmp_path / 'dagtop.db'}"
    return str(request.getfixturevalue("pg_url"))
