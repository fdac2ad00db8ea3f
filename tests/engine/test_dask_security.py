"""A Dask cluster that runs code only for its owner: a warning for a plain tcp:// scheduler
off this machine, and the README's TLS setup (certificates made with one command) run on
loopback with real Dask processes and a real run."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.client import Client
from engine.errors import ExecutorError
from engine.loading.config import Config, open_scheduler
from tests.waiting import wait_for

DASK = str(Path(sys.executable).with_name("dask"))
DAGTOP = str(Path(sys.executable).with_name("dagtop"))
# The README's one command: a self-signed certificate that is its own CA (Dask checks the
# certificate, not the host name, so one pair serves every machine).
CERTS = (
    "openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj /CN=dagtop-dask "
    "-keyout dask.key -out dask.pem"
)
TLS = ["--tls-ca-file", "dask.pem", "--tls-cert", "dask.pem", "--tls-key", "dask.key"]


@pytest.mark.parametrize(
    ("address", "open_"),
    [
        ("tcp://10.0.0.5:8786", True),
        ("tcp://gpu-box.lan:8786", True),
        ("tcp://127.0.0.1:8786", False),
        ("tcp://127.0.1.1:8786", False),
        ("tcp://localhost:8786", False),
        ("tcp://[::1]:8786", False),
        ("tls://10.0.0.5:8786", False),
    ],
)
def test_an_open_scheduler_is_a_plain_tcp_one_off_this_machine(address: str, open_: bool) -> None:
    config = Config(executor="dask", dask_scheduler=address)
    assert (open_scheduler(config) == address) is open_
    assert open_scheduler(Config(executor="local", dask_scheduler=None)) is None


def test_the_engine_warns_once_in_its_log_about_an_open_scheduler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("distributed")
    from engine.executor.dask_executor import DaskExecutor

    address = "tcp://192.0.2.1:8786"  # TEST-NET-1: never answers, nothing is reached
    caplog.set_level(logging.WARNING, logger="engine.executor.dask_executor")
    for _ in range(2):
        with pytest.raises(ExecutorError):
            DaskExecutor(address, timeout=0.3)
    warned = [r for r in caplog.records if "plain tcp://" in r.getMessage()]
    assert len(warned) == 1 and address in warned[0].getMessage()


def test_the_client_lists_the_open_scheduler_for_the_status_bar(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "dagtop.toml").write_text(
        'executor = "dask"\ndask_scheduler = "tcp://10.0.0.5:8786"\n'
    )
    client = Client(tmp_path / "home", tmp_path / "pipelines")
    assert client.warnings() == ["Dask scheduler tcp://10.0.0.5:8786 is not TLS"]
    (tmp_path / "dagtop.toml").write_text(
        'executor = "dask"\ndask_scheduler = "tls://10.0.0.5:8786"\n'
    )
    assert Client(tmp_path / "home", tmp_path / "pipelines").warnings() == []


@pytest.fixture
def tls_cluster(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A scheduler and a worker as the README starts them: TLS with certificates made by one
    command, every port (the dashboards too) on 127.0.0.1. Yields (address, certs folder)."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make certificates with")
    pytest.importorskip("distributed")
    certs = tmp_path / "certs"
    certs.mkdir()
    subprocess.run(CERTS.split(), cwd=certs, check=True, capture_output=True, timeout=60)
    procs: list[subprocess.Popen[bytes]] = []

    # The worker's own environment holds a dagtop setting: its steps must not see it.
    env = {**os.environ, "DAGTOP_DATABASE_URL": "sqlite:///worker-secret.db"}

    def start(*args: str) -> None:
        procs.append(
            subprocess.Popen(
                [DASK, *args, *TLS],
                cwd=certs,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        )

    try:
        start("scheduler", "--protocol", "tls", "--host", "127.0.0.1", "--port", "0",
              "--dashboard-address", "127.0.0.1:0",
              "--scheduler-file", "scheduler.json")  # fmt: skip
        info = certs / "scheduler.json"
        wait_for(lambda: info.exists() and info.stat().st_size > 0, 30, "the scheduler")
        address = json.loads(info.read_text())["address"]
        start("worker", address, "--host", "127.0.0.1", "--nthreads", "1", "--no-nanny",
              "--dashboard-address", "127.0.0.1:0", "--name", "tls-worker")  # fmt: skip
        yield address, certs
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


WHERE = """
import os
import socket

from engine import asset


@asset
def where():
    print(sorted(os.environ))
    return socket.gethostname()
"""


@pytest.mark.serial
@pytest.mark.timeout(120)
def test_the_readmes_tls_setup_runs_steps_and_refuses_strangers(
    tls_cluster: tuple[str, Path], tmp_path: Path
) -> None:
    import distributed
    import psutil

    address, certs = tls_cluster
    assert address.startswith("tls://127.0.0.1:")
    # dagtop itself is told the scheduler's tls:// address and where the certificates are.
    project = tmp_path / "project"
    (project / "pipelines").mkdir(parents=True)
    (project / "pipelines" / "where.py").write_text(WHERE)
    (project / "dagtop.toml").write_text(f'executor = "dask"\ndask_scheduler = "{address}"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGTOP_", "DASK_"))}
    env.update(
        DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION="True",
        DASK_DISTRIBUTED__COMM__TLS__CA_FILE=str(certs / "dask.pem"),
        DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT=str(certs / "dask.pem"),
        DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY=str(certs / "dask.key"),
    )
    done = subprocess.run(
        [DAGTOP, "--home", str(project / "home"), "materialize", "where", "--json"],
        cwd=project, env=env, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (step,) = json.loads(done.stdout)["steps"]
    assert step["status"] == "success" and step["worker"].startswith("tls://127.0.0.1:"), step
    assert "plain tcp://" not in done.stderr  # TLS: nothing to warn about
    log = Path(step["log_path"]).read_text()
    assert "'DAGTOP_RUN_ID'" in log and "DAGTOP_DATABASE_URL" not in log, log

    # Without the certificate, dagtop says what is missing.
    bare = {k: v for k, v in env.items() if not k.startswith("DASK_")}
    refused = subprocess.run(
        [DAGTOP, "--home", str(project / "home"), "materialize", "where"],
        cwd=project, env=bare, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "DASK_DISTRIBUTED__COMM__TLS__" in refused.stderr, refused

    # Someone without the key cannot even talk to it, let alone submit code.
    with pytest.raises(Exception):  # noqa: B017 - whatever way the handshake fails
        distributed.Client(address.replace("tls://", "tcp://"), timeout=1, set_as_default=False)
    plain = distributed.security.Security()  # no certificates
    with pytest.raises(Exception):  # noqa: B017
        distributed.Client(address, timeout=1, security=plain, set_as_default=False)

    # Every port the cluster opened (dashboards included) is on loopback.
    ours = {p.pid for p in psutil.Process().children(recursive=True)}
    listening = [
        c
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.pid in ours
    ]
    assert listening and {c.laddr.ip for c in listening if c.laddr} <= {"127.0.0.1"}, listening
