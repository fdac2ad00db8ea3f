"""Tests for engine.loading.loader: pipeline files imported in real child processes, real files
on disk.

Every broken definition must become an error attributed to its file (never a crash of the
loader), and the good files beside it must still load. Each test writes a small pipelines
folder into tmp_path next to a known-good file (`good.py`, defining `good_asset`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.loading import loader
from engine.loading.loader import CACHE_NAME, load
from engine.loading.manifest import FileError, Manifest

GOOD = """
    from engine import asset


    @asset
    def good_asset():
        return 1
"""


def src(text: str) -> str:
    """The text as written to disk: dedented, without the leading blank line."""
    return textwrap.dedent(text).lstrip("\n")


def line_of(text: str, marker: str) -> int:
    """The 1-based line of the first line of `text` (as written to disk) containing `marker`."""
    for number, line in enumerate(src(text).splitlines(), start=1):
        if marker in line:
            return number
    raise AssertionError(f"{marker!r} not in the source")


def asset_file(name: str, *params: str, group: str | None = None) -> str:
    options = f"(group={group!r})" if group else ""
    return f"""
        from engine import asset


        @asset{options}
        def {name}({", ".join(params)}):
            return 1
    """


def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(src(text))
    return root


def load_files(tmp_path: Path, files: dict[str, str], timeout: float | None = None) -> Manifest:
    """Load a `pipelines` folder holding `good.py` and `files`."""
    root = write(tmp_path / "pipelines", {"good.py": GOOD, **files})
    return load(root) if timeout is None else load(root, timeout=timeout)


def assert_good_loaded(m: Manifest) -> None:
    assert "good.py" not in m.errors
    assert m.assets["good_asset"].file == "good.py"


def error(m: Manifest, file: str, kind: str) -> FileError:
    assert file in m.errors, f"{file} loaded without error; errors: {m.errors}"
    err = m.errors[file]
    assert err.kind == kind, err
    assert err.file == file
    return err


def spy_children(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Record the files each loader child process is started with."""
    calls: list[list[str]] = []
    real = loader._run_child

    def spy(
        root: Path, files: list[str], timeout: float, every: list[str]
    ) -> dict[str, dict[str, object]]:
        calls.append(list(files))
        return real(root, files, timeout, every)

    monkeypatch.setattr(loader, "_run_child", spy)
    return calls


def forbid_children(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(root: Path, files: list[str], timeout: float, every: list[str]) -> None:
        raise AssertionError(f"a loader child was started for {files}")

    monkeypatch.setattr(loader, "_run_child", refuse)


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise TimeoutError in the main thread after `seconds`; restores any earlier alarm."""

    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    earlier, _ = signal.setitimer(signal.ITIMER_REAL, seconds)
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if earlier:
            remaining = earlier - (time.monotonic() - started)
            signal.setitimer(signal.ITIMER_REAL, max(remaining, 0.01))


@pytest.fixture(params=["fork", "spawn"])
def start_method(request: pytest.FixtureRequest) -> Iterator[str]:
    """How the loader starts its child: forked from this process (a command line's way), or
    as a new interpreter because another thread runs here (the TUI's and the daemon's way)."""
    if request.param == "fork":
        if threading.active_count() != 1:
            pytest.skip("a thread left running by an earlier test: the loader cannot fork")
        yield "fork"
        return
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()
    try:
        yield "spawn"
    finally:
        stop.set()
        thread.join()


# --- errors at import --------------------------------------------------------------------------


def test_syntax_error_has_kind_syntax_and_its_line(tmp_path: Path) -> None:
    bad = """
        from engine import asset


        @asset
        def broken(:
            return 1
    """
    m = load_files(tmp_path, {"bad.py": bad})
    err = error(m, "bad.py", "syntax")
    line = line_of(bad, "def broken(")
    assert err.line == line
    assert f"line {line}" in err.message
    assert set(m.errors) == {"bad.py"}
    assert_good_loaded(m)


def test_exception_at_import_has_kind_import_and_a_trimmed_traceback(tmp_path: Path) -> None:
    bad = """
        from engine import asset


        def lookup():
            return {}["missing_key"]  # inner


        VALUE = lookup()  # outer
    """
    m = load_files(tmp_path, {"bad.py": bad})
    err = error(m, "bad.py", "import")
    inner, outer = line_of(bad, "# inner"), line_of(bad, "# outer")
    assert err.message == "KeyError: 'missing_key'"
    assert err.line == inner
    path = tmp_path.resolve() / "pipelines" / "bad.py"
    assert f'File "{path}", line {outer}' in err.traceback
    assert f'File "{path}", line {inner}' in err.traceback
    assert err.traceback.rstrip().endswith("KeyError: 'missing_key'")
    for internal in ("loader_child", "importlib", "engine/modules.py", "<frozen"):
        assert internal not in err.traceback
    assert_good_loaded(m)


def test_exception_in_a_helper_points_at_the_importing_line(tmp_path: Path) -> None:
    uses = """
        import os

        import _settings  # the import

        from engine import asset
    """
    helper = """
        raise RuntimeError("DATA_DIR is not set")
    """
    m = load_files(tmp_path, {"uses.py": uses, "_settings.py": helper})
    err = error(m, "uses.py", "import")
    assert err.message == "RuntimeError: DATA_DIR is not set"
    assert err.line == line_of(uses, "# the import")
    assert "_settings.py" in err.traceback
    assert "uses.py" in err.traceback
    assert set(m.errors) == {"uses.py"}
    assert_good_loaded(m)


def test_syntax_error_in_a_helper_names_the_helper(tmp_path: Path) -> None:
    uses = """
        import _helpers  # the import

        from engine import asset
    """
    helper = """
        X = 1


        def f(:
            pass
    """
    m = load_files(tmp_path, {"uses.py": uses, "_helpers.py": helper})
    err = m.errors["uses.py"]
    assert "_helpers.py" in err.message
    assert err.line == line_of(uses, "# the import")


def test_traceback_keeps_user_frames_when_the_path_mentions_importlib(tmp_path: Path) -> None:
    bad = """
        raise ValueError("boom")  # here
    """
    root = write(tmp_path / "importlib_demo" / "pipelines", {"bad.py": bad})
    m = load(root)
    err = error(m, "bad.py", "import")
    assert err.line == 1
    assert f'{root.resolve() / "bad.py"}", line 1' in err.traceback


def test_hanging_imports_time_out_and_the_files_after_them_still_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_method: str
) -> None:
    calls = spy_children(monkeypatch)
    files = {
        "a_first.py": asset_file("first"),
        "b_sleeps.py": "import time\n\ntime.sleep(60)\n",
        "c_spins.py": "while True:\n    pass\n",
        "d_after.py": asset_file("after", "first"),
        "sub/e_nested.py": asset_file("nested", "after"),
    }
    m = load_files(tmp_path, files, timeout=1.5)
    for file in ("b_sleeps.py", "c_spins.py"):
        err = error(m, file, "timeout")
        assert "1.5 s" in err.message
    assert set(m.errors) == {"b_sleeps.py", "c_spins.py"}
    assert {"first", "after", "nested"} <= set(m.assets)
    assert_good_loaded(m)
    # The hanging child is killed and a new one picks up right after the file that hung.
    assert [c[0] for c in calls] == ["a_first.py", "c_spins.py", "d_after.py"]


def test_imports_that_kill_the_process_are_crashes_and_the_rest_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_method: str
) -> None:
    calls = spy_children(monkeypatch)
    files = {
        "a_first.py": asset_file("first"),
        "b_exits.py": "import os\n\nos._exit(3)\n",
        "c_segfaults.py": "import os\nimport signal\n\nos.kill(os.getpid(), signal.SIGSEGV)\n",
        "d_after.py": asset_file("after", "first"),
    }
    m = load_files(tmp_path, files)
    assert "exited with code 3" in error(m, "b_exits.py", "crash").message
    assert "SIGSEGV" in error(m, "c_segfaults.py", "crash").message
    assert set(m.errors) == {"b_exits.py", "c_segfaults.py"}
    assert {"first", "after"} <= set(m.assets)
    assert_good_loaded(m)
    assert [c[0] for c in calls] == ["a_first.py", "c_segfaults.py", "d_after.py"]


def test_a_module_leaving_a_thread_running_does_not_hang_the_loader(
    tmp_path: Path, start_method: str
) -> None:
    threads = """
        import threading
        import time

        from engine import asset

        threading.Thread(target=time.sleep, args=(30,)).start()


        @asset
        def with_thread():
            return 1
    """
    with time_limit(3.5):
        m = load_files(tmp_path, {"threads.py": threads}, timeout=1.0)
    assert_good_loaded(m)


def test_printing_at_import_does_not_corrupt_the_protocol(
    tmp_path: Path, start_method: str, capfd: pytest.CaptureFixture[str]
) -> None:
    noisy = """
        import os
        import sys

        from engine import asset

        print("hello from a pipeline")
        print('{"file": "noisy.py", "error": null}')
        print('{"start": "ghost.py"}')
        sys.stdout.write("no newline at the end")
        sys.stdout.flush()
        os.write(1, b"written to fd 1\\n")
        print("x" * 200_000)


        @asset
        def noisy_asset():
            print("only when run")
            return 1
    """
    m = load_files(tmp_path, {"noisy.py": noisy, "z_after.py": asset_file("after_noise")})
    out, err = capfd.readouterr()
    assert "hello" not in out + err and "fd 1" not in out + err  # never on the caller's terminal
    assert m.errors == {}
    assert m.assets["noisy_asset"].file == "noisy.py"
    assert "after_noise" in m.assets
    assert set(m.files) == {"good.py", "noisy.py", "z_after.py"}
    assert_good_loaded(m)


def test_a_file_named_like_a_stdlib_module_does_not_shadow_it(tmp_path: Path) -> None:
    shadow_json = """
        import json as stdlib_json

        from engine import asset

        assert hasattr(stdlib_json, "dumps"), "got the pipeline file, not the stdlib"


        @asset
        def from_json_file():
            return 1
    """
    shadow_statistics = asset_file("from_statistics_file")
    uses = """
        import json
        import statistics

        from engine import asset

        GROUP = json.loads('{"group": "parsed"}')["group"]
        MEAN = statistics.mean([1, 2, 3])


        @asset(group=GROUP)
        def uses_json():
            return MEAN
    """
    m = load_files(
        tmp_path,
        {"json.py": shadow_json, "statistics.py": shadow_statistics, "uses.py": uses},
    )
    assert m.errors == {}
    assert m.assets["uses_json"].group == "parsed"
    assert m.assets["from_json_file"].module == "dagtop_pipelines.json"
    assert "from_statistics_file" in m.assets
    assert_good_loaded(m)


# --- errors found by validating all files together ---------------------------------------------


def test_an_input_naming_no_asset_is_unknown_input_with_a_suggestion(tmp_path: Path) -> None:
    typo = """
        from engine import asset


        @asset
        def summary(good_aset):
            return good_aset
    """
    far = asset_file("lonely", "zzz_unrelated")
    dep = """
        from engine import asset


        @asset(deps=["missing_dep"])
        def with_dep():
            return 1
    """
    m = load_files(tmp_path, {"typo.py": typo, "far.py": far, "dep.py": dep})
    err = error(m, "typo.py", "unknown-input")
    assert "'summary'" in err.message
    assert "parameter 'good_aset'" in err.message
    assert "did you mean good_asset?" in err.message
    assert err.line == line_of(typo, "@asset")
    err = error(m, "far.py", "unknown-input")
    assert "'zzz_unrelated'" in err.message
    assert "did you mean" not in err.message
    err = error(m, "dep.py", "unknown-input")
    assert "depends on 'missing_dep'" in err.message
    assert set(m.errors) == {"typo.py", "far.py", "dep.py"}
    assert set(m.assets) == {"good_asset"}
    assert_good_loaded(m)


def cycle_path(message: str) -> list[str]:
    match = re.search(r"dependency cycle: (.*)$", message)
    assert match, message
    return re.split(r" -> | >> ", match.group(1))


def test_a_cycle_across_two_files_is_an_error_in_both(tmp_path: Path) -> None:
    files = {"x.py": asset_file("cyc_x", "cyc_y"), "y.py": asset_file("cyc_y", "cyc_x")}
    m = load_files(tmp_path, {**files, "z.py": asset_file("outside", "good_asset")})
    for file in ("x.py", "y.py"):
        err = error(m, file, "cycle")
        path = cycle_path(err.message)
        assert path[0] == path[-1]
        assert set(path) == {"cyc_x", "cyc_y"}
        assert err.line == line_of(files[file], "@asset")
    assert set(m.errors) == {"x.py", "y.py"}
    assert "outside" in m.assets
    assert_good_loaded(m)


def test_a_cycle_within_one_file_names_the_whole_path(tmp_path: Path) -> None:
    loop = """
        from engine import asset


        @asset
        def first(third):
            return 1


        @asset
        def second(first):
            return 1


        @asset
        def third(second, good_asset):
            return 1
    """
    m = load_files(tmp_path, {"loop.py": loop})
    err = error(m, "loop.py", "cycle")
    path = cycle_path(err.message)
    assert path[0] == path[-1]
    assert set(path) == {"first", "second", "third"}
    assert len(path) == 4
    assert err.line in {line_of(loop, f"def {name}") - 1 for name in ("first", "second", "third")}
    assert_good_loaded(m)


def test_a_cycle_between_tasks_is_an_error(tmp_path: Path) -> None:
    tasks = """
        from engine import Pipeline, task

        with Pipeline("circular"):

            @task
            def extract():
                return 1

            @task
            def load():
                return 1

            extract >> load
            load >> extract
    """
    m = load_files(tmp_path, {"tasks.py": tasks})
    err = error(m, "tasks.py", "cycle")
    assert "'circular'" in err.message
    assert set(cycle_path(err.message)) == {"extract", "load"}
    assert err.line == line_of(tasks, "with Pipeline")
    assert "circular" not in m.pipelines
    assert_good_loaded(m)


def test_a_name_defined_in_two_files_is_a_duplicate_naming_both(tmp_path: Path) -> None:
    pipe = """
        from engine import Pipeline, task

        with Pipeline("etl"):
            task(lambda: 1, id="say")
    """
    files = {
        "one.py": asset_file("shared_name"),
        "two.py": asset_file("shared_name"),
        "pipe_a.py": pipe,
        "pipe_b.py": pipe,
    }
    m = load_files(tmp_path, files)
    for file, other in (("one.py", "two.py"), ("two.py", "one.py")):
        err = error(m, file, "duplicate")
        assert "asset 'shared_name'" in err.message
        assert f"{file}:{line_of(files[file], '@asset')}" in err.message
        assert f"{other}:" in err.message
        assert err.line == line_of(files[file], "@asset")
    for file, other in (("pipe_a.py", "pipe_b.py"), ("pipe_b.py", "pipe_a.py")):
        err = error(m, file, "duplicate")
        assert "pipeline 'etl'" in err.message
        assert file in err.message and other in err.message
        assert err.line == line_of(pipe, "with Pipeline")
    assert "shared_name" not in m.assets
    assert "etl" not in m.pipelines
    assert_good_loaded(m)


TWICE = """
    from engine import asset


    @asset
    def twice():
        return 1


    @asset(group="again")
    def twice():  # noqa: F811
        return 2
"""


def test_a_name_defined_twice_in_one_file_is_an_error_naming_both_lines(tmp_path: Path) -> None:
    m = load_files(tmp_path, {"twice.py": TWICE})
    err = m.errors["twice.py"]
    first, second = line_of(TWICE, "@asset"), line_of(TWICE, '@asset(group="again")')
    assert "asset 'twice'" in err.message
    assert f"lines {first} and {second}" in err.message
    assert "twice" not in m.assets
    assert_good_loaded(m)


def test_a_name_defined_twice_in_one_file_has_kind_duplicate(tmp_path: Path) -> None:
    m = load_files(tmp_path, {"twice.py": TWICE})
    assert m.errors["twice.py"].kind == "duplicate"


def test_a_name_defined_twice_in_one_file_points_at_the_second_one(tmp_path: Path) -> None:
    m = load_files(tmp_path, {"twice.py": TWICE})
    assert m.errors["twice.py"].line == line_of(TWICE, '@asset(group="again")')


def test_a_check_on_an_unknown_asset_is_an_error(tmp_path: Path) -> None:
    checks = """
        from engine import check


        @check("good_aset")
        def positive(good_aset):
            return good_aset > 0
    """
    m = load_files(tmp_path, {"checks.py": checks})
    err = error(m, "checks.py", "unknown-asset")
    assert "check 'positive'" in err.message
    assert "'good_aset'" in err.message
    assert "did you mean good_asset?" in err.message
    assert err.line == line_of(checks, "@check")
    assert m.checks == {}
    assert_good_loaded(m)


def test_an_invalid_cron_is_an_error_in_schedule_and_in_pipeline(tmp_path: Path) -> None:
    sched = """
        from engine import schedule

        schedule("61 * * * *", "good_asset", name="bad_minute")
    """
    pipe = """
        from engine import Pipeline, task

        with Pipeline("nightly", schedule="every night"):
            task(lambda: 1, id="say")
    """
    fine = """
        from engine import schedule

        schedule("@daily", "good_asset", name="daily_good")
    """
    m = load_files(tmp_path, {"sched.py": sched, "pipe.py": pipe, "fine.py": fine})
    err = error(m, "sched.py", "cron")
    assert "'bad_minute'" in err.message and "'61 * * * *'" in err.message
    assert err.line == line_of(sched, "schedule(")
    err = error(m, "pipe.py", "cron")
    assert "'nightly'" in err.message and "'every night'" in err.message
    assert "five fields" in err.message
    assert err.line == line_of(pipe, "with Pipeline")
    assert "nightly" not in m.pipelines
    assert set(m.schedules) == {"daily_good"}
    assert m.schedules["daily_good"].target == {"kind": "assets", "selection": ["good_asset"]}
    assert_good_loaded(m)


def test_a_sensor_on_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    sensors = """
        from engine import file_sensor

        file_sensor("inbox_watch", "no_such_inbox", "good_asset")
    """
    fine = """
        from engine import file_sensor

        file_sensor("drop_watch", "drop", "good_asset", pattern="*.csv")
    """
    (tmp_path / "pipelines" / "drop").mkdir(parents=True)
    m = load_files(tmp_path, {"sensors.py": sensors, "fine.py": fine})
    root = tmp_path.resolve() / "pipelines"
    err = error(m, "sensors.py", "missing-folder")
    assert "'inbox_watch'" in err.message
    assert str(root / "no_such_inbox") in err.message
    assert err.line == line_of(sensors, "file_sensor(")
    assert set(m.sensors) == {"drop_watch"}
    assert m.sensors["drop_watch"].path == str(root / "drop")
    assert_good_loaded(m)


def test_a_schedule_or_sensor_target_naming_nothing_is_unknown_target(tmp_path: Path) -> None:
    sched = """
        from engine import schedule

        schedule("@hourly", "good_aset", name="typo_schedule")
    """
    sensor = """
        from engine import file_sensor

        file_sensor("group_sensor", ".", "group:nope")
    """
    m = load_files(tmp_path, {"sched.py": sched, "sensor.py": sensor})
    err = error(m, "sched.py", "unknown-target")
    assert "'typo_schedule'" in err.message
    assert "'good_aset'" in err.message and "did you mean good_asset?" in err.message
    assert err.line == line_of(sched, "schedule(")
    err = error(m, "sensor.py", "unknown-target")
    assert "'group_sensor'" in err.message and "'nope'" in err.message
    assert m.schedules == {} and m.sensors == {}
    assert_good_loaded(m)


def test_depending_on_an_asset_of_a_file_that_failed_validation_names_that_file(
    tmp_path: Path,
) -> None:
    files = {
        "upstream.py": asset_file("base", "not_there"),
        "downstream.py": asset_file("derived", "base"),
    }
    m = load_files(tmp_path, files)
    error(m, "upstream.py", "unknown-input")
    err = error(m, "downstream.py", "unknown-input")
    assert "'base'" in err.message
    assert "upstream.py" in err.message
    assert "failed to load" in err.message
    assert_good_loaded(m)


@pytest.mark.parametrize(
    "breakage",
    ["raise RuntimeError('late failure')\n", "def oops(:\n"],
    ids=["exception", "syntax-error"],
)
def test_depending_on_an_asset_of_a_file_that_failed_to_import_names_that_file(
    tmp_path: Path, breakage: str
) -> None:
    files = {
        "upstream.py": src(asset_file("base")) + breakage,
        "downstream.py": asset_file("derived", "base"),
    }
    m = load_files(tmp_path, files)
    assert "upstream.py" in m.errors
    err = error(m, "downstream.py", "unknown-input")
    assert "upstream.py" in err.message


# --- DefinitionErrors raised by the authoring API at import ------------------------------------

DEFINITION_ERRORS = {
    "task_outside_pipeline": (
        """
        from engine import task


        @task  # here
        def lonely():
            return 1
        """,
        ["task 'lonely'", "inside a `with Pipeline(...):` block"],
    ),
    "bad_memory_limit": (
        """
        from engine import asset


        @asset(memory_limit="lots")  # here
        def hungry():
            return 1
        """,
        ["asset 'hungry'", "memory_limit", "'lots'"],
    ),
    "negative_asset_retries": (
        """
        from engine import asset


        @asset(retries=-1)  # here
        def flaky():
            return 1
        """,
        ["asset 'flaky'", "retries", "-1"],
    ),
    "negative_pipeline_retries": (
        """
        from engine import Pipeline, task

        with Pipeline("shaky", retries=-2):  # here
            task(lambda: 1, id="say")
        """,
        ["pipeline 'shaky'", "retries", "-2"],
    ),
    "task_param_naming_no_task": (
        """
        from engine import Pipeline, task

        with Pipeline("params"):

            @task
            def t_one():
                return 1

            @task  # the task
            def t_two(t_1):
                return t_1
        """,
        ["task 't_two'", "'t_1'", "'params'"],
    ),
    "link_across_pipelines": (
        """
        from engine import Pipeline, task

        with Pipeline("left"):
            a = task(lambda: 1, id="a")

        with Pipeline("right"):
            b = task(lambda: 1, id="b")

        a >> b  # here
        """,
        ["'a'", "'b'", "different pipelines"],
    ),
    "two_tasks_with_one_id": (
        """
        from engine import Pipeline, task

        with Pipeline("twins"):
            task(lambda: 1, id="same")
            task(lambda: 1, id="same")  # here
        """,
        ["pipeline 'twins'", "'same'"],
    ),
    "unknown_trigger_rule": (
        """
        from engine import Pipeline, task

        with Pipeline("rules"):

            @task(trigger_rule="all_don")
            def cleanup():
                return 1
        """,
        ["task 'cleanup'", "unknown trigger_rule 'all_don'", "did you mean all_done", "one_failed"],
    ),
    "branch_and_short_circuit": (
        """
        from engine import Pipeline, task

        with Pipeline("both"):

            @task(branch=True, short_circuit=True)
            def gate():
                return 1
        """,
        ["task 'gate'", "a branch or a short-circuit, not both"],
    ),
    "expand_a_parameter_it_does_not_take": (
        """
        from engine import Pipeline, task

        with Pipeline("mapping"):

            @task
            def files():
                return []

            @task
            def process(item):
                return item

            process.expand(path=files)  # here
        """,
        ["task 'process'", "expand(path=...) names no required parameter"],
    ),
    "expand_over_a_literal": (
        """
        from engine import Pipeline, task

        with Pipeline("mapping"):

            @task
            def process(item):
                return item

            process.expand(item=["a", "b"])  # here
        """,
        ["task 'process'", "takes a task, not list"],
    ),
    "expand_over_a_mapped_task": (
        """
        from engine import Pipeline, task

        with Pipeline("mapping"):

            @task
            def files():
                return []

            @task
            def first(item):
                return item

            @task  # here
            def second(item):
                return item

            first.expand(item=files)
            second.expand(item=first)
        """,
        ["task 'second'", "expanded over 'first', itself a mapped task"],
    ),
}


@pytest.mark.parametrize("case", list(DEFINITION_ERRORS))
def test_definition_errors_are_attributed_to_their_file(tmp_path: Path, case: str) -> None:
    text, fragments = DEFINITION_ERRORS[case]
    m = load_files(tmp_path, {"bad.py": text, "z_after.py": asset_file("after")})
    err = error(m, "bad.py", "definition")
    for fragment in fragments:
        assert fragment in err.message
    if "# here" in text:
        assert err.line == line_of(text, "# here")
    assert "Traceback" in err.traceback and "loader_child" not in err.traceback
    assert set(m.errors) == {"bad.py"}
    assert "after" in m.assets
    assert_good_loaded(m)


def test_a_task_parameter_naming_no_task_points_at_the_task(tmp_path: Path) -> None:
    text, _ = DEFINITION_ERRORS["task_param_naming_no_task"]
    m = load_files(tmp_path, {"bad.py": text})
    assert m.errors["bad.py"].line == line_of(text, "# the task")


def test_a_target_of_the_wrong_type_is_a_definition_error(tmp_path: Path) -> None:
    bad = """
        from engine import schedule

        schedule("@daily", 42, name="numbers")  # here
    """
    m = load_files(tmp_path, {"bad.py": bad})
    err = error(m, "bad.py", "definition")
    assert "42" in err.message
    assert err.line == line_of(bad, "# here")


# --- discovery, helpers, modules ---------------------------------------------------------------


def test_files_in_subfolders_load_and_underscore_and_dot_names_are_skipped(
    tmp_path: Path,
) -> None:
    files = {
        "sub/more.py": asset_file("more"),
        "sub/deeper/most.py": asset_file("most", "more"),
        "_private.py": asset_file("private_asset"),
        ".hidden.py": asset_file("hidden_asset"),
        "_helpers_dir/tool.py": asset_file("tool_asset"),
        ".dotdir/thing.py": asset_file("dot_asset"),
        "sub/_inner/x.py": asset_file("inner_asset"),
        "sub/_y.py": asset_file("y_asset"),
        "notes.txt": "not python",
        "__pycache__/cached.py": asset_file("cached_asset"),
    }
    m = load_files(tmp_path, files)
    assert m.errors == {}
    assert set(m.files) == {"good.py", "sub/more.py", "sub/deeper/most.py"}
    assert set(m.assets) == {"good_asset", "more", "most"}
    assert m.assets["most"].module == "dagtop_pipelines.sub__deeper__most"
    assert m.assets["most"].file == "sub/deeper/most.py"


def test_a_file_and_a_folder_with_the_same_name_both_load(tmp_path: Path) -> None:
    m = load_files(tmp_path, {"sub.py": asset_file("top"), "sub/more.py": asset_file("more")})
    assert m.errors == {}
    assert {"top", "more"} <= set(m.assets)


HELPER_USER = """
    from _helpers import GROUP, double

    from engine import asset


    @asset(group=GROUP)
    def helped():
        return double(2)
"""


def test_a_helper_module_is_importable_and_editing_it_invalidates_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "pipelines"
    home = tmp_path / "home"
    helper = "GROUP = {!r}\n\n\ndef double(x):\n    return 2 * x\n"
    write(root, {"good.py": GOOD, "uses.py": HELPER_USER, "_helpers.py": helper.format("alpha")})
    m = load(root, cache_dir=home)
    assert m.errors == {}
    assert m.assets["helped"].group == "alpha"
    assert "_helpers.py" not in m.files

    (root / "_helpers.py").write_text(helper.format("beta"))
    calls = spy_children(monkeypatch)
    m = load(root, cache_dir=home)
    assert m.assets["helped"].group == "beta"
    # A helper may be imported by any file: all of them are imported again.
    assert calls == [["good.py", "uses.py"]]


def test_assets_made_by_a_factory_in_a_helper_belong_to_the_calling_file(tmp_path: Path) -> None:
    factory = """
        from engine import asset


        def make(name):
            @asset(name=name)
            def _made():
                return name

            return _made
    """
    uses = """
        from _factory import make

        made = [make(n) for n in ("made_one", "made_two")]
    """
    m = load_files(tmp_path, {"_factory.py": factory, "uses.py": uses})
    assert m.errors == {}
    assert {"made_one", "made_two"} <= set(m.assets)


# --- the cache ---------------------------------------------------------------------------------

CACHED_FILES = {
    "a.py": asset_file("alpha"),
    "b.py": asset_file("beta", "alpha"),
    "sub/c.py": asset_file("gamma", "beta"),
    # A syntax error depends only on the file's content, so its result is cached; an import
    # error is retried on every load (the missing module may have been installed since).
    "broken.py": "def broken(:\n",
}


def test_an_unchanged_folder_loads_from_the_cache_without_a_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write(tmp_path / "pipelines", CACHED_FILES)
    first = load(root, cache_dir=tmp_path / "home")
    assert (tmp_path / "home" / CACHE_NAME).is_file()
    assert set(first.assets) == {"alpha", "beta", "gamma"}
    error(first, "broken.py", "syntax")
    forbid_children(monkeypatch)
    second = load(root, cache_dir=tmp_path / "home")
    assert second == first


def test_an_edited_file_is_imported_again_and_only_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = write(tmp_path / "pipelines", CACHED_FILES)
    load(root, cache_dir=tmp_path / "home")
    write(root, {"b.py": asset_file("beta_two", "alpha", group="edited")})
    calls = spy_children(monkeypatch)
    m = load(root, cache_dir=tmp_path / "home")
    assert calls == [["b.py"]]
    assert "beta" not in m.assets
    assert m.assets["beta_two"].group == "edited"
    # gamma's input 'beta' is gone now.
    assert "'beta'" in error(m, "sub/c.py", "unknown-input").message
    # The edit is cached in turn.
    monkeypatch.setattr(loader, "_run_child", lambda *a: pytest.fail("child started"))
    assert load(root, cache_dir=tmp_path / "home") == m


def test_a_deleted_file_disappears(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = write(tmp_path / "pipelines", CACHED_FILES)
    load(root, cache_dir=tmp_path / "home")
    (root / "sub" / "c.py").unlink()
    (root / "broken.py").unlink()
    forbid_children(monkeypatch)
    m = load(root, cache_dir=tmp_path / "home")
    assert set(m.files) == {"a.py", "b.py"}
    assert set(m.assets) == {"alpha", "beta"}
    assert m.errors == {}


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"{not json", id="garbage"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe\x00binary", id="binary"),
        pytest.param(b'{"format": 3}', id="missing-keys"),
        pytest.param(b'{"format": 3, "helpers": "x", "results": {}}', id="wrong-helpers"),
        pytest.param(
            b"[]",
            id="a-list",
        ),
        pytest.param(
            b"null",
            id="null",
        ),
    ],
)
def test_a_corrupt_cache_file_is_ignored(tmp_path: Path, content: bytes) -> None:
    root = write(tmp_path / "pipelines", {"a.py": asset_file("alpha")})
    home = tmp_path / "home"
    home.mkdir()
    (home / CACHE_NAME).write_bytes(content)
    m = load(root, cache_dir=home)
    assert m.errors == {}
    assert set(m.assets) == {"alpha"}
    # ...and replaced by a good one.
    assert json.loads((home / CACHE_NAME).read_text())["results"]["a.py"]["sha256"]


def test_a_cache_with_malformed_results_is_ignored(tmp_path: Path) -> None:
    root = write(tmp_path / "pipelines", {"a.py": asset_file("alpha")})
    home = tmp_path / "home"
    load(root, cache_dir=home)
    data = json.loads((home / CACHE_NAME).read_text())
    data["results"]["a.py"]["result"] = {"file": "a.py"}
    (home / CACHE_NAME).write_text(json.dumps(data))
    assert set(load(root, cache_dir=home).assets) == {"alpha"}


def test_an_import_error_is_retried_once_the_missing_module_exists(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_method: str
) -> None:
    needs = """
        import extra_dep_for_dagtop_tests

        from engine import asset


        @asset
        def needs_dep():
            return extra_dep_for_dagtop_tests.VALUE
    """
    root = write(tmp_path / "pipelines", {"needs.py": needs})
    home = tmp_path / "home"
    m = load(root, cache_dir=home)
    assert "ModuleNotFoundError" in error(m, "needs.py", "import").message
    # "pip install" the missing module: the child inherits PYTHONPATH.
    site = write(tmp_path / "site", {"extra_dep_for_dagtop_tests.py": "VALUE = 1\n"})
    monkeypatch.setenv("PYTHONPATH", str(site))
    m = load(root, cache_dir=home)
    assert m.errors == {}
    assert "needs_dep" in m.assets


def test_the_cache_does_not_mix_up_two_folders_with_the_same_files(tmp_path: Path) -> None:
    text = """
        from engine import Pipeline, file_sensor, shell

        file_sensor("inbox", "inbox", "good_asset")

        with Pipeline("scripts"):
            shell("./run.sh", id="run", cwd="bin")
    """
    home = tmp_path / "home"
    roots = [tmp_path / "one", tmp_path / "two"]
    for root in roots:
        write(root, {"good.py": GOOD, "defs.py": text})
        (root / "inbox").mkdir()
    load(roots[0], cache_dir=home)
    m = load(roots[1], cache_dir=home)
    second = roots[1].resolve()
    assert m.sensors["inbox"].path == str(second / "inbox")
    assert m.pipelines["scripts"].tasks["run"].cwd == str(second / "bin")


# --- the manifest ------------------------------------------------------------------------------

FULL = """
    from engine import DailyPartitions, Pipeline, asset, check, file_sensor, schedule, shell, task

    days = DailyPartitions(start="2025-06-01", end="2025-06-08")


    @asset(group="weather", partitions=days, retries=2, memory_limit="1GiB", tags={"team": "d"})
    def readings(context):
        "Hourly readings."
        return [1.0]


    @asset(group="weather", partitions=days)
    def daily_mean(context, readings, good_asset=None):
        return 1.0


    @asset(deps=[readings], io="json", timeout=30)
    def summary(daily_mean):
        return {}


    @check(daily_mean, blocking=True)
    def plausible(daily_mean):
        return True


    schedule("@daily", [summary, "group:weather"], name="nightly_summary")
    file_sensor("inbox", "inbox", daily_mean, pattern="*.csv")

    with Pipeline("publish", schedule="0 6 * * 1", start="2025-01-01", retries=1):

        @task
        def render():
            return "r"

        @task(retries=3, timeout=10)
        def upload(context, render):
            return True

        done = shell("echo done", id="notify", cwd="scripts", env={"A": 1})
        upload >> done
"""


def test_a_loaded_manifest_describes_every_definition(tmp_path: Path) -> None:
    (tmp_path / "pipelines" / "inbox").mkdir(parents=True)
    m = load_files(tmp_path, {"full.py": FULL})
    root = tmp_path.resolve() / "pipelines"
    assert m.root == str(root)
    assert m.errors == {}
    readings, mean, summary = m.assets["readings"], m.assets["daily_mean"], m.assets["summary"]
    assert (readings.group, readings.retries, readings.memory_limit) == ("weather", 2, 1 << 30)
    assert readings.description == "Hourly readings."
    assert readings.partitions_def is not None and mean.partitions is not None
    assert readings.line == line_of(FULL, "def readings") - 1
    assert mean.inputs == ("readings",) and mean.optional_inputs == ("good_asset",)
    assert summary.deps == ("readings",) and summary.upstream == ("daily_mean", "readings")
    assert (summary.io, summary.timeout, summary.group) == ("json", 30.0, "default")
    assert m.checks["daily_mean"][0].name == "plausible" and m.checks["daily_mean"][0].blocking
    assert m.schedules["nightly_summary"].target == {
        "kind": "assets",
        "selection": ["summary", "group:weather"],
    }
    assert m.sensors["inbox"].path == str(root / "inbox")
    assert m.sensors["inbox"].target == {"kind": "assets", "selection": ["daily_mean"]}
    publish = m.pipelines["publish"]
    assert m.schedules["publish"].target == {"kind": "pipeline", "name": "publish"}
    assert m.schedules["publish"].cron == "0 6 * * 1"
    assert publish.tasks["upload"].upstream == ("render",)
    assert publish.tasks["notify"].upstream == ("upload",)
    assert publish.tasks["notify"].kind == "shell"
    assert publish.tasks["notify"].cwd == str(root / "scripts")
    assert publish.tasks["notify"].env == {"A": "1"}
    assert [t.retries for t in publish.tasks.values()] == [1, 3, 1]


def test_the_manifest_round_trips_through_a_dict_and_json(tmp_path: Path) -> None:
    (tmp_path / "pipelines" / "inbox").mkdir(parents=True)
    m = load_files(tmp_path, {"full.py": FULL, "bad.py": "1/0\n"})
    assert m.assets and m.errors and m.pipelines and m.schedules and m.sensors and m.checks
    assert Manifest.from_dict(m.to_dict()) == m
    assert Manifest.from_dict(json.loads(json.dumps(m.to_dict()))) == m


# --- code versions ------------------------------------------------------------------------------

VERSIONED = '''
    from engine import asset


    @asset(
        group="sql",
    )
    def report(good_asset):
        return f"""
    SELECT {good_asset}
    FROM events
    """


    @asset
    def model():
        # A comment above the last line.
        return "model"


    @asset(code_version="v3")
    def pinned():
        return "pinned"
'''


def versions(m: Manifest) -> dict[str, str]:
    assert m.errors == {}
    return {name: spec.code_version for name, spec in m.assets.items()}


def test_code_versions_are_the_same_in_every_loader_process(tmp_path: Path) -> None:
    first = versions(load_files(tmp_path, {"versioned.py": VERSIONED}))
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait, daemon=True)
    thread.start()  # so the loader starts a new interpreter instead of forking this process
    try:
        again = versions(load(tmp_path / "pipelines"))  # and no cache
    finally:
        stop.set()
        thread.join()
    assert again == first
    assert len({first["good_asset"], first["report"], first["model"]}) == 3


def test_editing_a_body_changes_its_version_and_moving_a_function_does_not(
    tmp_path: Path,
) -> None:
    before = versions(load_files(tmp_path, {"versioned.py": VERSIONED}))
    # The last lines of `report` are a string at column 0: where a function ends comes from
    # its code, not from indentation.
    edited = VERSIONED.replace("FROM events", "FROM events_v2")
    after = versions(load_files(tmp_path, {"versioned.py": edited}))
    assert after["report"] != before["report"]
    assert after["model"] == before["model"]  # one line further down, otherwise the same
    edited = edited.replace('return "model"', 'return "model v2"')
    last = versions(load_files(tmp_path, {"versioned.py": edited}))
    assert last["model"] != before["model"]
    assert last["report"] == after["report"]


def test_a_code_version_given_to_the_decorator_wins_over_the_source(tmp_path: Path) -> None:
    assert versions(load_files(tmp_path, {"versioned.py": VERSIONED}))["pinned"] == "v3"
    edited = VERSIONED.replace('return "pinned"', 'return "pinned, edited"')
    assert versions(load_files(tmp_path, {"versioned.py": edited}))["pinned"] == "v3"


def test_a_module_of_the_folder_imported_here_is_imported_afresh_by_the_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_method: str
) -> None:
    from engine.loading.modules import import_pipeline_module

    named = """
        from _names import NAME

        from engine import asset


        @asset(name=NAME)
        def named():
            return 1
    """
    root = write(tmp_path / "pipelines", {"named.py": named, "_names.py": "NAME = 'first'\n"})
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    import_pipeline_module(root.resolve(), "named.py")  # as engine.testing does in a user's test
    assert sys.modules["_names"].NAME == "first"
    (root / "_names.py").write_text("NAME = 'second'\n")
    assert set(load(root).assets) == {"second"}


def test_user_code_cannot_write_to_the_callers_descriptors(
    tmp_path: Path, start_method: str
) -> None:
    scribbler = """
        import os

        for fd in range(3, 1024):
            try:
                os.write(fd, b"scribbled\\n")
            except OSError:
                pass
    """
    read, write = os.pipe()  # stands for the caller's database, sockets and pipes
    os.set_blocking(read, False)
    try:
        m = load_files(tmp_path, {"scribbler.py": scribbler})
        with pytest.raises(BlockingIOError):
            os.read(read, 100)
    finally:
        os.close(read)
        os.close(write)
    assert_good_loaded(m)
