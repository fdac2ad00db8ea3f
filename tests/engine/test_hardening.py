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
import time
from collections.abc import Iterator
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


def test_the_home_folder_is_the_users_only_whichever_part_makes_it(tmp_path: Path) -> None:
    from engine.storage.db import close, connect
    from tui.app import _log_to_file

    restore = _log_to_file(tmp_path / "ui-home" / "ui.log")  # the UI, before any engine
    restore()
    close(connect(f"sqlite:///{tmp_path / 'db-home' / 'dagtop.db'}"))  # a command's database
    for home in ("ui-home", "db-home"):
        assert stat.S_IMODE((tmp_path / home).stat().st_mode) == 0o700, home
    assert stat.S_IMODE((tmp_path / "ui-home" / "ui.log").stat().st_mode) == 0o600


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
    assert statuses[run["id"]] == "failed" and sorted(map(str, statuses.values())) == [
        "failed",
        "success",
    ]


DAILY = textwrap.dedent(
    """
    from engine import DailyPartitions, asset


    @asset(partitions=DailyPartitions(start="2025-01-01", end="2025-02-01"))
    def daily(context):
        return 1
    """
)


@pytest.mark.parametrize("at_once", ["1", "5"])  # an engine of its own; all runs at once
def test_a_backfill_whose_executor_cannot_be_reached_fails_with_its_runs(
    project: Path, at_once: str
) -> None:
    (project / "pipelines" / "daily.py").write_text(DAILY)
    args = ["backfill", "daily", "--from", "2025-01-01", "--to", "2025-01-03"]
    env = {"DAGTOP_EXECUTOR": "dask://127.0.0.1:1"}
    done = dagtop(project, *args, "--max-parallel", at_once, env=env)
    assert done.returncode == 2 and "cannot reach the Dask scheduler" in done.stderr, done
    runs = json.loads(dagtop(project, "runs", "--json").stdout)
    assert len(runs) == 3 and {r["status"] for r in runs} == {"failed"}
    (backfill,) = json.loads(dagtop(project, "backfills", "--json").stdout)
    assert backfill["status"] == "failed", backfill


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


# --- one engine per database --------------------------------------------------------------------


def daemon_in(home: Path, project: Path, url: str, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGTOP_")}
    env["DAGTOP_DATABASE_URL"] = url
    cmd = [DAGTOP, "--home", str(home), "--pipelines", str(project / "pipelines"), "daemon", *args]
    return subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip


def holder_pid(project: Path, url: str) -> int | None:
    from engine.service import lease
    from engine.storage.db import close, open_db

    db = open_db(url)
    try:
        holder = lease.live_holder(db)
        return None if holder is None else holder.pid
    finally:
        close(db)


@pytest.fixture
def shared(project: Path) -> Iterator[tuple[str, list[subprocess.Popen[str]]]]:
    """A database two homes share, and the daemons a test started (stopped after it)."""
    procs: list[subprocess.Popen[str]] = []
    yield f"sqlite:///{project / 'shared.db'}", procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, 9)
            proc.wait()


def test_a_second_daemon_names_the_running_engines_home_host_and_pid(
    project: Path, shared: tuple[str, list[subprocess.Popen[str]]]
) -> None:
    import socket

    from tests.waiting import wait_for

    url, procs = shared
    first = daemon_in(project / "home-a", project, url)
    procs.append(first)
    wait_for(lambda: holder_pid(project, url) == first.pid, 30, "the first daemon")
    second = daemon_in(project / "home-b", project, url)
    procs.append(second)
    assert second.wait(timeout=30) != 0
    err = second.stderr.read() if second.stderr else ""
    assert "already running" in err, err
    assert str(project / "home-a") in err and str(project / "home-b") not in err
    assert f"pid {first.pid} on {socket.gethostname()}" in err
    assert "--standby" in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_standby_daemon_takes_over_when_the_engine_is_killed(
    project: Path, shared: tuple[str, list[subprocess.Popen[str]]]
) -> None:
    from tests.waiting import wait_for

    url, procs = shared
    first = daemon_in(project / "home-a", project, url)
    procs.append(first)
    wait_for(lambda: holder_pid(project, url) == first.pid, 30, "the first daemon")
    standby = daemon_in(project / "home-b", project, url, "--standby")
    procs.append(standby)
    time.sleep(1.5)
    assert standby.poll() is None  # it waits, and holds nothing
    assert holder_pid(project, url) == first.pid

    os.killpg(first.pid, 9)
    first.wait()
    wait_for(lambda: holder_pid(project, url) == standby.pid, 15, "the standby to take over")
    # It is a whole engine now: a run handed to it is run.
    env = {"DAGTOP_DATABASE_URL": url}
    cmd = ["--home", str(project / "home-b"), "materialize", "printed", "--json"]
    done = subprocess.run(
        [DAGTOP, "--pipelines", str(project / "pipelines"), *cmd],
        env={**{k: v for k, v in os.environ.items() if not k.startswith("DAGTOP_")}, **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done
    assert json.loads(done.stdout)["status"] == "success"


def test_dagtop_executor_is_refused_while_an_engine_runs_the_database(
    project: Path, shared: tuple[str, list[subprocess.Popen[str]]]
) -> None:
    from tests.waiting import wait_for

    url, procs = shared
    first = daemon_in(project / "home", project, url)
    procs.append(first)
    wait_for(lambda: holder_pid(project, url) == first.pid, 30, "the daemon")
    env = {"DAGTOP_DATABASE_URL": url, "DAGTOP_EXECUTOR": "local"}
    done = dagtop(project, "materialize", "printed", env=env)
    assert done.returncode == 2, done
    assert "DAGTOP_EXECUTOR=local" in done.stderr and f"pid {first.pid}" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    # Without the override the engine takes the run.
    done = dagtop(project, "materialize", "printed", "--json", env={"DAGTOP_DATABASE_URL": url})
    assert done.returncode == 0, done


# --- export and import --------------------------------------------------------------------------


def test_export_refuses_to_export_nothing_and_names_the_database_it_read(project: Path) -> None:
    out = project / "history.jsonl"
    done = dagtop(project, "db", "export", str(out))
    assert done.returncode == 2, done
    assert "nothing to export" in done.stderr and "the home folder's" in done.stderr
    assert str(project / "home" / "dagtop.db") in done.stderr
    assert not out.exists() and not (project / "home" / "dagtop.db").exists()

    empty = f"sqlite:///{project / 'empty.db'}"
    assert dagtop(project, "db", "migrate", "--url", empty).returncode == 0
    done = dagtop(project, "db", "export", str(out), env={"DAGTOP_DATABASE_URL": empty})
    assert done.returncode == 2, done
    assert "holds no history" in done.stderr and "from DAGTOP_DATABASE_URL" in done.stderr
    assert str(project / "empty.db") in done.stderr and not out.exists()
    assert len(done.stderr.strip().splitlines()) == 1


def test_import_into_a_database_with_history_says_how_to_proceed(project: Path) -> None:
    assert dagtop(project, "materialize", "printed").returncode == 0
    out = project / "history.jsonl"
    assert dagtop(project, "db", "export", str(out)).returncode == 0
    done = dagtop(project, "db", "import", str(out))  # into the very database it came from
    assert done.returncode == 2, done
    assert "not empty" in done.stderr and "nothing was imported" in done.stderr
    assert "dagtop db migrate --url" in done.stderr


# --- smaller ------------------------------------------------------------------------------------

SHARED = textwrap.dedent(
    """
    from engine import asset


    @asset
    def shared(context):
        return str(context.shared_dir)
    """
)


@pytest.mark.parametrize("values_dir", [None, "elsewhere/values"])
def test_steps_get_a_shared_dir_under_the_values_folder(
    project: Path, values_dir: str | None
) -> None:
    (project / "pipelines" / "shared.py").write_text(SHARED)
    if values_dir:
        (project / "dagtop.toml").write_text(f'values_dir = "{values_dir}"\n')
    done = dagtop(project, "materialize", "shared", "--json")
    assert done.returncode == 0, done
    values = project / values_dir if values_dir else project / "home" / "values"
    stored = next((values / "shared").rglob("*.pkl"))
    import pickle

    assert pickle.loads(stored.read_bytes()) == str(values / "@shared")


def test_a_killed_workers_attempt_folders_are_removed_by_the_next_sweep(tmp_path: Path) -> None:
    from engine.executor.dask_task import attempt_folder, sweep_attempt_folders

    code = (
        "import sys, time\n"
        "from engine.executor.dask_task import attempt_folder\n"
        "print(attempt_folder(sys.argv[1]), flush=True)\n"
        "time.sleep(60)\n"
    )
    victim = subprocess.Popen(
        [sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert victim.stdout is not None
    left = Path(victim.stdout.readline().strip())
    (left / "step.log").write_text("a log the step wrote")
    victim.kill()  # SIGKILL: nothing of it runs again
    victim.wait()
    mine = attempt_folder(str(tmp_path))  # this live process's: in use
    unmarked = tmp_path / "dagtop-attempt-unmarked"  # not provably dagtop's: left alone
    unmarked.mkdir()
    other = tmp_path / "not-dagtop"
    other.mkdir()

    assert sweep_attempt_folders(str(tmp_path)) == 1
    assert not left.exists()
    assert mine.exists() and unmarked.exists() and other.exists()
