"""Resources and typed config through the `dagtop` command: real step processes, real settings
files, one-line refusals with nothing recorded."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.status import RunStatus, StepStatus

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))

RESOURCES = textwrap.dedent(
    """
    import json
    import os

    from engine import resource


    @resource
    def warehouse(context):
        \"\"\"The shop's database.\"\"\"
        journal = context.home / "journal.jsonl"
        if context.config.get("broken"):
            raise ConnectionError("refused by " + context.config["url"])

        def note(event):
            with journal.open("a") as fh:
                fh.write(json.dumps({"event": event, "pid": os.getpid()}) + "\\n")

        note("built")
        context.log.info("connected to %s", context.config["url"])
        yield {"url": context.config["url"], "pid": os.getpid()}
        note("torn down")


    @resource
    def clock():
        return 42
    """
)

ASSETS = textwrap.dedent(
    """
    import os
    from dataclasses import dataclass

    from pydantic import BaseModel

    from engine import asset


    class TrainConfig(BaseModel):
        C: float = 1.0
        max_iter: int = 200
        tags: list[str] = []


    @dataclass
    class Window:
        days: int
        label: str = "w"


    @asset
    def orders(context, warehouse):
        if context.params.get("fail"):
            raise RuntimeError("orders failed on purpose")
        return {"url": warehouse["url"], "built_in": warehouse["pid"], "step": os.getpid()}


    @asset
    def plain():
        return 1


    @asset
    def trained(plain, config: TrainConfig, clock):
        return {"C": config.C, "max_iter": config.max_iter, "tags": config.tags, "clock": clock}


    @asset
    def windowed(window: Window):
        return {"days": window.days, "label": window.label}
    """
)

SETTINGS = '[resources.warehouse]\nurl = "sqlite://shop"\n'


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "resources.py").write_text(RESOURCES)
    (tmp_path / "pipelines" / "shop.py").write_text(ASSETS)
    (tmp_path / "dagtop.toml").write_text(SETTINGS)
    return tmp_path


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    base = [DAGTOP, "--home", str(project / "home"), "--pipelines", str(project / "pipelines")]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)


def journal(project: Path) -> list[dict[str, object]]:
    path = project / "home" / "journal.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def value_of(project: Path, step: dict[str, object]) -> object:
    import pickle

    paths = list((project / "home" / "values" / str(step["key"])).rglob("*.pkl"))
    assert len(paths) == 1, paths
    return pickle.loads(paths[0].read_bytes())


def assert_refused(result: subprocess.CompletedProcess[str], project: Path, *words: str) -> None:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert json.loads(run(project, "runs", "--json").stdout) == []  # nothing recorded


def test_a_resource_is_built_in_the_step_process_with_its_settings_and_torn_down(
    project: Path,
) -> None:
    result = run(project, "materialize", "orders", "plain", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    orders = next(s for s in data["steps"] if s["key"] == "orders")
    value = value_of(project, orders)
    assert isinstance(value, dict)
    assert value["url"] == "sqlite://shop"  # [resources.warehouse] of dagtop.toml
    assert value["built_in"] == value["step"]  # in the step's own process
    # Once, for the one step that names it, and torn down after it.
    assert journal(project) == [
        {"event": "built", "pid": value["step"]},
        {"event": "torn down", "pid": value["step"]},
    ]
    logs = run(project, "logs", data["id"], "orders").stdout
    assert "connected to sqlite://shop" in logs


def test_a_resource_is_torn_down_after_a_failed_step(project: Path) -> None:
    result = run(project, "materialize", "orders", "--param", "fail=1", "--json")
    assert result.returncode == 1
    (step,) = json.loads(result.stdout)["steps"]
    assert step["status"] == StepStatus.FAILED
    assert step["error"] == "RuntimeError: orders failed on purpose"
    assert [e["event"] for e in journal(project)] == ["built", "torn down"]


def test_a_resource_that_fails_to_build_fails_the_step_naming_it(project: Path) -> None:
    (project / "dagtop.toml").write_text(SETTINGS + "broken = true\n")
    result = run(project, "materialize", "orders", "--json")
    assert result.returncode == 1
    (step,) = json.loads(result.stdout)["steps"]
    assert step["status"] == StepStatus.FAILED
    assert step["error"] == (
        "resource 'warehouse' failed to build: ConnectionError: refused by sqlite://shop"
    )
    assert step["attempts"] == 1


def test_list_shows_each_asset_resources(project: Path) -> None:
    listing = run(project, "list")
    assert listing.returncode == 0, listing.stderr
    line = next(x for x in listing.stdout.splitlines() if x.strip().startswith("orders"))
    assert "resources: warehouse" in line
    trained = next(x for x in listing.stdout.splitlines() if x.strip().startswith("trained"))
    assert "resources: clock" in trained and "config: TrainConfig" in trained
    assert "warehouse" in listing.stdout.split("resources\n", 1)[1]
    data = json.loads(run(project, "list", "--json").stdout)
    by_name = {a["name"]: a for a in data["assets"]}
    assert by_name["orders"]["resources"] == ["warehouse"]
    assert by_name["orders"]["upstream"] == []
    assert by_name["trained"]["upstream"] == ["plain"]
    fields = {f["name"]: f for f in by_name["trained"]["config"]["fields"]}
    assert fields["C"] == {"name": "C", "type": "float", "required": False,
                           "description": None, "default": 1.0}  # fmt: skip
    assert fields["tags"]["type"] == "list[str]"
    (warehouse,) = [r for r in data["resources"] if r["name"] == "warehouse"]
    assert warehouse["used_by"] == ["orders"] and warehouse["settings"] == ["url"]
    assert "sqlite://shop" not in json.dumps(data)  # settings' values may be secrets


def test_a_resource_named_like_an_asset_is_a_load_error_naming_file_and_line(
    project: Path,
) -> None:
    (project / "pipelines" / "more.py").write_text(
        "from engine import asset\n\n\n@asset\ndef clock():\n    return 1\n"
    )
    result = run(project, "check")
    assert result.returncode == 1
    assert (
        "resource 'clock' (resources.py:25) and asset 'clock' (more.py:4) have the same name"
        in result.stdout
    )
    assert "✗ more.py:4  clash" in result.stdout and "✗ resources.py:25  clash" in result.stdout


def test_a_parameter_that_names_nothing_is_a_load_error(project: Path) -> None:
    (project / "pipelines" / "more.py").write_text(
        "from engine import asset\n\n\n@asset\ndef report(warehous):\n    return 1\n"
    )
    result = run(project, "check")
    assert result.returncode == 1
    assert "more.py" in result.stdout
    assert "'warehous' that names no asset or resource (did you mean warehouse?)" in result.stdout


@pytest.mark.parametrize("where", ["dagtop.toml", "pyproject.toml"])
def test_settings_of_an_unknown_resource_are_a_load_error_naming_file_and_line(
    project: Path, where: str
) -> None:
    (project / "dagtop.toml").unlink()
    prefix = "tool.dagtop." if where == "pyproject.toml" else ""
    (project / where).write_text(
        f'[{prefix}resources.warehouse]\nurl = "x"\n\n[{prefix}resources.warehose]\nurl = "y"\n'
    )
    result = run(project, "check")
    assert result.returncode == 1
    assert (
        f"✗ {where}:4  unknown-resource: [{prefix}resources.warehose] names no resource"
        in result.stdout
    )
    assert "did you mean warehouse?" in result.stdout
    data = json.loads(run(project, "list", "--json").stdout)
    (error,) = data["errors"]
    assert error["file"] == where
    from engine.loading.loader import load  # the line, for the UI's list of errors

    assert load(project / "pipelines").errors[where].line == 4


def test_typed_config_gets_the_params_validated(project: Path) -> None:
    result = run(project, "materialize", "plain", "trained", "--param", "C=0.5",
                 "--param", 'tags=["a","b"]', "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["params"] == {"C": 0.5, "tags": ["a", "b"]}  # recorded as validated
    trained = next(s for s in data["steps"] if s["key"] == "trained")
    assert value_of(project, trained) == {"C": 0.5, "max_iter": 200, "tags": ["a", "b"],
                                          "clock": 42}  # fmt: skip
    result = run(project, "materialize", "windowed", "--param", "days=7", "--json")
    assert result.returncode == 0, result.stderr
    (step,) = json.loads(result.stdout)["steps"]
    assert value_of(project, step) == {"days": 7, "label": "w"}


def test_a_value_that_does_not_validate_is_refused_before_anything_is_recorded(
    project: Path,
) -> None:
    result = run(project, "materialize", "plain", "trained", "--param", "C=fast")
    assert_refused(result, project, "asset 'trained'", "field 'C'", "valid number", "'fast'")


def test_a_field_the_model_does_not_have_is_refused(project: Path) -> None:
    result = run(project, "materialize", "plain", "trained", "--param", "c=0.5")
    assert_refused(result, project, "TrainConfig has no field 'c'", "did you mean C?")


def test_a_missing_required_field_is_refused_and_so_is_its_backfill(project: Path) -> None:
    assert_refused(run(project, "materialize", "windowed"), project, "field 'days'", "required")
    assert_refused(
        run(project, "materialize", "windowed", "--param", "days=[1]"), project, "field 'days'"
    )


def test_a_typed_config_run_of_the_daemon_is_refused_over_the_socket(project: Path) -> None:
    daemon = subprocess.Popen(
        [
            DAGTOP,
            "--home",
            str(project / "home"),
            "--pipelines",
            str(project / "pipelines"),
            "daemon",
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        from tests.waiting import wait_for

        wait_for(lambda: (project / "home" / "engine.sock").exists(), what="the engine's socket")
        refused = run(project, "materialize", "plain", "trained", "--param", "C=fast")
        assert_refused(refused, project, "field 'C'")
        done = run(project, "materialize", "plain", "trained", "--param", "C=2", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["status"] == RunStatus.SUCCESS
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
