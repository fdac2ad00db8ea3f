"""Credentials and permissions: a password never shows, parsed or not; steps never see
dagtop's own settings; the home folder and its logs are the user's only. Real `dagtop`
processes, as a user types the commands."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.redact import redact

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))
SECRET = "Sup3rS3cretPW"
BAD_URL = f"postgresql+psycopg://dagtop:{SECRET}@127.0.0.1:5543x/dagtop"

PIPELINE = textwrap.dedent(
    """
    import os
    from pathlib import Path

    from engine import Pipeline, asset, shell


    @asset
    def printed():
        for key in sorted(os.environ):
            print(f"{key}={os.environ[key]}")
        # What the process was started with (a forked step's differs from os.environ).
        print(Path("/proc/self/environ").read_bytes().replace(b"\\0", b"\\n").decode())
        return 1


    with Pipeline("envs"):
        shell("env", id="show")
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "envs.py").write_text(PIPELINE)
    return tmp_path


def dagtop(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DAGTOP_")}
    base.update(env or {})
    cmd = [DAGTOP, "--home", str(project / "home"), "--pipelines", str(project / "pipelines")]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=120, env=base)


@pytest.mark.parametrize(
    "text",
    [
        BAD_URL,
        f"cannot open database '{BAD_URL}': invalid literal for int()",
        f"postgresql://dagtop:{SECRET}@db-host/dagtop",
        f"postgresql://dagtop:p#{SECRET}@x@db-host/dagtop",  # unencoded # and @
        f"postgresql://dagtop@db-host/dagtop?password={SECRET}&sslmode=require",
        f"host=db-host password={SECRET} dbname=dagtop",
    ],
)
def test_a_password_is_masked_whether_the_url_parses_or_not(text: str) -> None:
    masked = redact(text)
    assert SECRET not in masked
    assert "***" in masked
    assert "dagtop" in masked  # the rest stays readable


def test_text_without_a_password_is_left_alone() -> None:
    for text in ("sqlite:////tmp/a@b/dagtop.db", "tcp://127.0.0.1:8786", "a=b c", "plain"):
        assert redact(text) == text


def test_an_unparsable_url_on_the_command_line_hides_its_password(project: Path) -> None:
    for args in (("runs",), ("runs", "--json"), ("db", "check"), ("materialize", "printed")):
        done = dagtop(project, *args, env={"DAGTOP_DATABASE_URL": BAD_URL})
        assert done.returncode == 2, done
        assert SECRET not in done.stderr + done.stdout
        assert "Traceback" not in done.stderr
        assert "dagtop:***@127.0.0.1:5543x" in done.stderr, done.stderr
    done = dagtop(project, "db", "export", str(project / "out.json"), "--url", BAD_URL)
    assert done.returncode == 2 and SECRET not in done.stderr + done.stdout, done


def test_an_unparsable_url_in_dagtop_toml_hides_its_password(project: Path) -> None:
    (project / "dagtop.toml").write_text(f'database_url = "{BAD_URL}"\n')
    for args in (("runs",), ("materialize", "printed"), ("db", "migrate")):
        done = dagtop(project, *args)
        assert done.returncode == 2, done
        assert SECRET not in done.stderr + done.stdout
        assert "***" in done.stderr, done.stderr


def test_a_daemons_log_hides_the_password(project: Path) -> None:
    done = dagtop(project, "daemon", env={"DAGTOP_DATABASE_URL": BAD_URL})
    assert done.returncode != 0
    assert SECRET not in done.stderr + done.stdout
    log = project / "home" / "daemon.log"
    if log.exists():
        assert SECRET not in log.read_text()


@pytest.mark.parametrize("forkserver", ["1", "0"])
def test_steps_do_not_inherit_dagtops_settings(project: Path, forkserver: str) -> None:
    url = f"sqlite:///{project / 'elsewhere' / 'history.db'}"
    env = {"DAGTOP_DATABASE_URL": url, "DAGTOP_FORKSERVER": forkserver, "DAGTOP_MAX_WORKERS": "3"}
    for args in (("materialize", "printed", "--json"), ("run", "envs", "--json")):
        done = dagtop(project, *args, env=env)
        assert done.returncode == 0, done
        run = json.loads(done.stdout)
        logs = list((project / "home" / "logs" / run["id"]).glob("*.log"))
        assert logs
        for log in logs:
            text = log.read_text()
            assert "DAGTOP_RUN_ID=" + run["id"] in text  # the step's own variables are there
            assert "DAGTOP_DATABASE_URL" not in text, text
            assert "history.db" not in text, text
            assert "DAGTOP_MAX_WORKERS" not in text
            assert "DAGTOP_FORKSERVER" not in text


def test_the_home_folder_and_its_logs_are_the_users_only(project: Path) -> None:
    done = dagtop(project, "materialize", "printed", "--json")
    assert done.returncode == 0, done
    home = project / "home"
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    logs = [p for p in (home / "logs").rglob("*.log")]
    assert logs
    for log in logs:
        assert stat.S_IMODE(log.stat().st_mode) == 0o600, log


# --- honest semantics ---------------------------------------------------------------------------


def test_a_run_whose_executor_cannot_be_reached_fails_with_the_reason(project: Path) -> None:
    done = dagtop(project, "materialize", "printed", env={"DAGTOP_EXECUTOR": "dask://127.0.0.1:1"})
    assert done.returncode == 2, done
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:1" in done.stderr

    def runs() -> list[dict[str, object]]:
        listed = dagtop(project, "runs", "--json")
        assert listed.returncode == 0, listed
        return list(json.loads(listed.stdout))

    (run,) = runs()
    assert run["status"] == "failed"  # never left queued for a later engine to run unasked
    assert "cannot reach the Dask scheduler" in str(run["error"])
    assert "cannot reach the Dask scheduler" in str(run["steps"][0]["error"])  # type: ignore[index]
    # A later command with an executor that works runs its own run, not the failed one.
    assert dagtop(project, "materialize", "printed").returncode == 0
    statuses = {r["id"]: r["status"] for r in runs()}
    assert statuses[run["id"]] == "failed" and sorted(statuses.values()) == ["failed", "success"]


RETRIED = textwrap.dedent(
    """
    from pathlib import Path

    from engine import asset


    @asset(retries=1)
    def flaky(context):
        mark = Path(context.home) / "tried"
        if not mark.exists():
            mark.touch()
            raise RuntimeError("first time unlucky")
        return 1
    """
)


def test_runs_json_shows_every_attempts_host_worker_and_reason(project: Path) -> None:
    (project / "pipelines" / "flaky.py").write_text(RETRIED)
    done = dagtop(project, "materialize", "flaky", "--json")
    assert done.returncode == 0, done
    listed = dagtop(project, "runs", "--json")
    (step,) = json.loads(listed.stdout)[0]["steps"]
    places = step["placements"]
    assert [(p["attempt"], p["status"], p["worker"]) for p in places] == [
        (1, "failed", "local"),
        (2, "success", "local"),
    ]
    assert "first time unlucky" in places[0]["error"] and places[1]["error"] is None
    assert all(p["host"] for p in places)
