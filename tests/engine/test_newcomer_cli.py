"""What a new user runs into on the command line, through real `dagtop` processes."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))

FIRST = '''"""A first pipeline."""

from engine import Pipeline, asset, task


@asset
def hello(context):
    context.log.info("rate %s", context.params.get("rate"))
    return "hello"


with Pipeline("chores"):

    @task
    def sweep():
        return 1
'''


def run(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    base = [DAGTOP, "--home", str(project / "home"), "--pipelines", str(project / "pipelines")]
    return subprocess.run([*base, *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "my_first.py").write_text(FIRST)
    return tmp_path


def test_an_asset_of_a_file_that_failed_to_load_names_the_file_and_why(project: Path) -> None:
    source = FIRST.replace("import Pipeline", "import Pipeline, no_such_name")
    (project / "pipelines" / "my_first.py").write_text(source)
    for args in (("materialize", "hello"), ("run", "chores")):
        result = run(project, *args)
        assert result.returncode == 2, result
        (line,) = result.stderr.strip().splitlines()
        assert "my_first.py failed to load" in line, line
        assert "no_such_name" in line, line
        assert "Traceback" not in result.stderr


def test_version(project: Path) -> None:
    result = run(project, "--version")
    assert result.returncode == 0, result
    assert result.stdout.strip() == f"dagtop {version('dagtop')}"


def test_runs_says_when_there_are_more(project: Path) -> None:
    for _ in range(3):
        assert run(project, "run", "chores").returncode == 0
    shown = run(project, "runs", "--limit", "2")
    lines = shown.stdout.strip().splitlines()
    assert len(lines) == 3, shown.stdout
    assert lines[-1] == "… more runs not shown (--limit 4 shows more)"
    every = run(project, "runs", "--limit", "3").stdout.strip().splitlines()
    assert len(every) == 3 and not every[-1].startswith("…")


def test_counts_are_worded_in_the_singular_and_plural(project: Path) -> None:
    out = run(project, "check").stdout
    assert "1 file ok, 0 broken; 1 asset, 1 task pipeline" in out, out
    (project / "pipelines" / "more.py").write_text("x = 1\n")
    assert "2 files ok" in run(project, "check").stdout


def test_an_unknown_param_warns(project: Path) -> None:
    quiet = run(project, "materialize", "hello", "--param", "rate=3")
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet
    loud = run(project, "materialize", "hello", "--param", "rtae=3")
    assert loud.returncode == 0, loud
    assert "warning: --param rtae is named nowhere in my_first.py" in loud.stderr, loud.stderr
    task = run(project, "run", "chores", "--param", "rate=3")
    assert task.returncode == 0
    assert "--param rate" not in task.stderr  # named in the file: maybe read
    odd = run(project, "run", "chores", "--param", "depth=3")
    assert "warning: --param depth is named nowhere in my_first.py" in odd.stderr, odd.stderr


PARTED = """
from engine import StaticPartitions, asset


@asset(partitions=StaticPartitions(["a", "b"]))
def part(context):
    context.log.info("part %s", context.partition)
    return 1
"""

NO_STORAGE = """
import sys
from engine.cli.main import app
try:
    app(sys.argv[1:], prog_name="dagtop")
except SystemExit as exc:
    assert not exc.code, exc.code
sys.stdout.flush()
leaked = sorted(m for m in ("sqlmodel", "sqlalchemy", "engine.storage") if m in sys.modules)
assert not leaked, leaked
"""


def test_reads_are_answered_over_the_socket_without_storage(project: Path) -> None:
    from engine.client import Client

    (project / "pipelines" / "parted.py").write_text(PARTED)
    assert run(project, "materialize", "part", "--partition", "a").returncode == 0
    assert run(project, "run", "chores").returncode == 0
    reads = [("runs",), ("list",), ("partitions", "part"), ("asset", "part", "--json"),
             ("asset", "part", "--partition", "a")]  # fmt: skip
    run_id = run(project, "runs", "--limit", "1").stdout.split()[1]
    reads.append(("logs", run_id))
    alone = {args: run(project, *args).stdout for args in reads}  # storage read here

    client = Client(home=project / "home", pipelines=project / "pipelines")
    engine = client.start_engine(kind="daemon")
    try:
        base = ["--home", str(project / "home"), "--pipelines", str(project / "pipelines")]
        for args in reads:
            result = subprocess.run(
                [sys.executable, "-c", NO_STORAGE, *base, *args],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert result.returncode == 0, (args, result.stderr)
            assert result.stdout == alone[args], args
        unknown = run(project, "partitions", "nope")
        assert unknown.returncode == 2 and "unknown asset 'nope'" in unknown.stderr
    finally:
        engine.stop(grace=1.0)
