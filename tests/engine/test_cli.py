"""The `dagtop` command as a user types it: real processes, one-line errors, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.status import BackfillStatus, PartitionStatus, RunStatus, StepStatus

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))
WEATHER = textwrap.dedent(
    """
    from engine import DailyPartitions, StaticPartitions, asset

    days = DailyPartitions(start="2025-06-01", end="2025-06-08")


    @asset(group="weather", partitions=days, description="Hourly readings of one day.")
    def readings(context):
        context.log.info("reading %s", context.partition)
        print("printed", context.params.get("note", "-"))
        return [1.0, 2.0]


    @asset(group="weather", partitions=days)
    def daily_mean(context, readings):
        context.add_metadata({"n": len(readings)})
        return sum(readings) / len(readings)


    @asset(partitions=StaticPartitions(["eu", "us"]))
    def region():
        return 1
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "weather.py").write_text(WEATHER)
    return tmp_path


def run(project: Path, *args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    base = [DAGTOP, "--home", str(home or project / "home"), "--pipelines",
            str(project / "pipelines")]  # fmt: skip
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)


def assert_one_line_error(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_an_unknown_asset_is_named_with_a_suggestion(project: Path) -> None:
    result = run(project, "materialize", "readngs", "--partition", "2025-06-02")
    assert_one_line_error(result, "readngs", "did you mean readings")


def test_a_bad_partition_key_is_one_clear_line(project: Path) -> None:
    assert_one_line_error(run(project, "materialize", "readings", "--partition", "2031-13-45"),
                          "2031-13-45")  # fmt: skip
    assert_one_line_error(run(project, "materialize", "readings"), "--partition")
    assert_one_line_error(run(project, "materialize", "region", "--partition", "asia"), "asia")


def test_a_malformed_param_is_one_clear_line(project: Path) -> None:
    result = run(project, "materialize", "readings", "--partition", "2025-06-02", "--param", "x")
    assert_one_line_error(result, "KEY=VALUE")


def test_an_unusable_home_is_one_clear_line(project: Path) -> None:
    blocker = project / "not-a-folder"
    blocker.write_text("")
    assert_one_line_error(run(project, "runs", home=blocker / "home"), "home")


def test_a_missing_pipelines_folder_is_one_clear_line(tmp_path: Path) -> None:
    args = ["--home", str(tmp_path / "h"), "--pipelines", str(tmp_path / "nope"), "list"]
    result = subprocess.run([DAGTOP, *args], capture_output=True, text=True)
    assert_one_line_error(result, "nope")


def test_an_unknown_run_id_is_one_clear_line(project: Path) -> None:
    assert_one_line_error(run(project, "logs", "feedbeef"), "feedbeef")
    assert_one_line_error(run(project, "cancel", "feedbeef"), "feedbeef")


def test_a_missing_home_is_created(project: Path) -> None:
    home = project / "deep" / "new" / "home"
    assert run(project, "runs", home=home).returncode == 0
    assert home.is_dir()


def test_materialize_json_runs_and_logs_round_trip(project: Path) -> None:
    result = run(project, "materialize", "readings", "daily_mean", "--partition", "2025-06-03",
                 "--param", "note=hello", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == RunStatus.SUCCESS
    assert data["partition"] == "2025-06-03"
    assert data["params"] == {"note": "hello"}
    assert [s["key"] for s in data["steps"]] == ["readings", "daily_mean"]
    for step in data["steps"]:
        assert (
            step["status"] == StepStatus.SUCCESS
            and step["attempts"] == 1
            and step["exit_code"] == 0
        )
        assert Path(step["log_path"]).is_file()
        assert (step["host"], step["worker"]) == (os.uname().nodename, "local")
    listing = json.loads(run(project, "runs", "--json").stdout)
    assert listing[0]["id"] == data["id"]
    logs = run(project, "logs", data["id"][:6], "readings")
    assert "reading 2025-06-03" in logs.stdout and "printed hello" in logs.stdout
    assert "INFO" in logs.stdout
    every = run(project, "logs", data["id"]).stdout
    assert every.index("==> readings") < every.index("==> daily_mean")


def test_a_failed_run_exits_1(project: Path) -> None:
    (project / "pipelines" / "bad.py").write_text(
        "from engine import asset\n\n\n@asset\ndef boom():\n    raise ValueError('nope')\n"
    )
    result = run(project, "materialize", "boom", "--json")
    assert result.returncode == 1
    step = json.loads(result.stdout)["steps"][0]
    assert step["status"] == StepStatus.FAILED and step["error"] == "ValueError: nope"


def test_check_and_list(project: Path) -> None:
    assert run(project, "check").returncode == 0
    listing = run(project, "list")
    assert "readings" in listing.stdout and "Hourly readings" in listing.stdout
    assert all(line == line.rstrip() for line in listing.stdout.splitlines())
    data = json.loads(run(project, "list", "--json").stdout)
    assert {a["name"] for a in data["assets"]} == {"readings", "daily_mean", "region"}
    shutil.copy(project / "pipelines" / "weather.py", project / "pipelines" / "twin.py")
    broken = run(project, "check")
    assert broken.returncode == 1 and "duplicate" in broken.stdout


def test_partitions_and_backfill_in_process(project: Path) -> None:
    result = run(project, "backfill", "readings", "--from", "2025-06-02", "--to", "2025-06-04",
                 "--max-parallel", "2", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["status"] == BackfillStatus.SUCCESS and info["counts"] == {RunStatus.SUCCESS: 3}
    states = {p["key"]: p["status"] for p in json.loads(run(project, "partitions", "readings",
                                                            "--json").stdout)}  # fmt: skip
    assert [k for k, v in states.items() if v == PartitionStatus.MATERIALIZED] == [
        "2025-06-02", "2025-06-03", "2025-06-04",
    ]  # fmt: skip
    assert_one_line_error(run(project, "backfill", "readings", "--from", "2025-06-05", "--to",
                              "2025-06-01"), "2025-06")  # fmt: skip


def test_the_tui_is_not_needed_for_help(project: Path) -> None:
    result = run(project, "--help")
    assert result.returncode == 0 and "materialize" in result.stdout
    env = {k: v for k, v in os.environ.items() if k != "TERM"}
    assert subprocess.run([DAGTOP, "--help"], env=env, capture_output=True).returncode == 0


def test_a_finished_step_is_printed_while_the_next_one_still_runs(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    flag = tmp_path / "release"
    (tmp_path / "pipelines" / "slow.py").write_text(
        "import pathlib, time\n"
        "from engine import asset\n\n\n"
        "@asset\ndef fast():\n    return 1\n\n\n"
        "@asset\ndef slow(fast):\n"
        f"    while not pathlib.Path({str(flag)!r}).exists():\n"
        "        time.sleep(0.05)\n"
        "    return fast\n"
    )
    cli = subprocess.Popen(
        [DAGTOP, "--home", str(tmp_path / "home"), "--pipelines", str(tmp_path / "pipelines"),
         "materialize", "*"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert cli.stdout is not None
        first = cli.stdout.readline()  # `slow` waits for the flag: this line comes before
        assert first.startswith("✓ fast")
    finally:
        flag.write_text("")
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    lines = out.splitlines()
    assert [line.split()[1] for line in lines[:-1]] == ["slow"]
    assert lines[-1].startswith("✓ run")
