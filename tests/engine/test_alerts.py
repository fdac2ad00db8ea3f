"""Alert hooks of each kind on real runs: a shell command, a webhook on 127.0.0.1, a Python
function; hooks that hang or fail never affect the run; repeated failures do not flood."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from engine.client import Client
from engine.errors import DefinitionError
from engine.executor.alerts import Alert, Alerter
from engine.status import RunStatus, StepStatus

pytestmark = pytest.mark.serial


def project(tmp_path: Path, source: str, config: str = "") -> Client:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "p.py").write_text(textwrap.dedent(source))
    (tmp_path / "dagtop.toml").write_text(config)
    return Client(tmp_path / "home", tmp_path / "pipelines")


def wait_for_file(path: Path, timeout: float = 15.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


def test_a_shell_hook_sees_the_run_step_error_and_log(tmp_path: Path) -> None:
    out = tmp_path / "alert.txt"
    client = project(
        tmp_path,
        f"""
        from engine import asset

        @asset(on_failure='env | grep ^DAGTOP_ > "{out}"')
        def boom():
            raise ValueError("bad data")
        """,
    )
    view = client.materialize(["boom"])
    assert view.status == RunStatus.FAILED
    env = dict(line.split("=", 1) for line in wait_for_file(out).splitlines())
    assert env["DAGTOP_EVENT"] == "on_failure"
    assert env["DAGTOP_RUN_ID"] == view.id
    assert env["DAGTOP_STEP"] == "boom"
    assert env["DAGTOP_ERROR"] == "ValueError: bad data"
    assert Path(env["DAGTOP_LOG_PATH"]).is_file()


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()


def test_a_webhook_gets_a_json_post_on_retry_and_success(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = webhook
    client = project(
        tmp_path,
        f"""
        from engine import asset

        @asset(retries=1, retry_delay=0, on_retry="{url}", on_success="{url}")
        def flaky(context):
            if context.attempt == 1:
                raise RuntimeError("first time")
            return 1
        """,
    )
    view = client.materialize(["flaky"])
    assert view.status == RunStatus.SUCCESS
    deadline = time.monotonic() + 15
    while len(received) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)  # the HTTP server's thread may lag on a loaded machine
    assert [a["event"] for a in received] == ["on_retry", "on_success"]
    assert received[0]["error"] == "RuntimeError: first time"
    assert received[1]["run_id"] == view.id


def test_the_command_line_sends_its_alerts_before_it_exits(
    tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    """`dagtop materialize` runs the step in the command and exits when the run ends: the
    webhook queued on the alerts thread must be posted first, not lost with the process."""
    url, received = webhook
    project(
        tmp_path,
        f"""
        from engine import asset

        @asset(on_failure="{url}")
        def boom():
            raise RuntimeError("boom")
        """,
    )
    dagtop = str(Path(sys.executable).with_name("dagtop"))
    done = subprocess.run(
        [dagtop, "--home", str(tmp_path / "home"), "--pipelines", str(tmp_path / "pipelines"),
         "materialize", "boom"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    # Posted before the command returned: nothing is waited for here.
    assert [a["event"] for a in received] == ["on_failure"]
    assert received[0]["error"] == "RuntimeError: boom"


def test_a_python_hook_runs_in_a_child_process(tmp_path: Path) -> None:
    out = tmp_path / "called.json"
    client = project(
        tmp_path,
        f"""
        import json
        import os

        from engine import Pipeline, task


        def tell(alert):
            with open({str(out)!r}, "w") as fh:
                json.dump({{"step": alert.step, "pid": os.getpid()}}, fh)


        with Pipeline("nightly", on_failure=tell):
            @task
            def extract():
                raise KeyError("gone")
        """,
    )
    view = client.run_pipeline("nightly")
    assert view.status == RunStatus.FAILED
    called = json.loads(wait_for_file(out))
    assert called["step"] == "extract"
    import os

    assert called["pid"] != os.getpid()


def test_hooks_that_hang_or_fail_never_affect_the_run(tmp_path: Path) -> None:
    client = project(
        tmp_path,
        """
        from engine import asset

        @asset(on_success="sleep 60")
        def hangs():
            return 1

        @asset(on_success="exit 3")
        def fails_to_alert():
            return 2
        """,
    )
    started = time.monotonic()
    view = client.materialize(["hangs", "fails_to_alert"])
    assert view.status == RunStatus.SUCCESS
    assert all(s.status == StepStatus.SUCCESS for s in view.steps)
    # The CLI waits for queued alerts only up to each hook's time limit.
    assert time.monotonic() - started < 20


def test_a_project_default_hook_from_the_config(tmp_path: Path) -> None:
    out = tmp_path / "default.txt"
    client = project(
        tmp_path,
        """
        from engine import asset

        @asset
        def boom():
            raise ValueError("x")
        """,
        config=f'[alerts]\non_failure = "echo $DAGTOP_STEP > {out}"\n',
    )
    client.materialize(["boom"])
    assert wait_for_file(out).strip() == "boom"


def test_repeated_failures_do_not_flood() -> None:
    now = [1000.0]
    alerter = Alerter(window=60, clock=lambda: now[0])
    sent: list[Alert] = []
    hook = {"kind": "shell", "command": "true"}
    import engine.executor.alerts as alerts

    original = alerts._SEND["shell"]
    alerts._SEND["shell"] = lambda _hook, alert, _timeout: sent.append(alert)
    try:

        def fail() -> bool:
            alert = Alert("on_failure", "r", "a", StepStatus.FAILED, 1, "e", None, None)
            return alerter.notify([hook], alert)

        assert fail()
        now[0] += 10
        assert not fail() and not fail()
        now[0] += 60
        assert fail()
        alerter.drain()
    finally:
        alerter.stop()
        alerts._SEND["shell"] = original
    assert [a.suppressed for a in sent] == [0, 2]


def test_a_lambda_hook_is_a_definition_error() -> None:
    from engine.authoring.definitions import asset

    def value() -> int:
        return 1

    with pytest.raises(DefinitionError, match="module-level function"):
        asset(on_failure=lambda alert: None)(value)
