"""Tests for the authoring API (engine.authoring.definitions) in-process, and for asset selections.

Decorators only describe: they build definition objects and register them. Selections are
resolved against a manifest loaded from a small pipelines folder.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.authoring import definitions as d
from engine.authoring import tasks
from engine.authoring.context import StepContext
from engine.authoring.definitions import AssetDef, CheckDef, asset, check
from engine.authoring.schedules import (
    Definition,
    ScheduleDef,
    SensorDef,
    file_sensor,
    schedule,
    target_spec,
)
from engine.authoring.tasks import Pipeline, TaskDef, shell, task
from engine.errors import DefinitionError, SelectionError
from engine.loading.loader import load
from engine.loading.manifest import Manifest
from engine.loading.selection import resolve


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    d._registry.reset()
    tasks._pipeline_stack.clear()
    yield
    d._registry.reset()
    tasks._pipeline_stack.clear()


def registered() -> list[Definition]:
    return list(d._registry.items)


# --- assets ------------------------------------------------------------------------------------


def test_asset_without_parentheses() -> None:
    @asset
    def raw() -> list[int]:
        """Raw rows."""
        return [1, 2]

    assert isinstance(raw, AssetDef)
    assert raw.name == "raw"
    assert raw.group == "default"
    assert (raw.inputs, raw.optional_inputs, raw.deps) == ((), (), ())
    assert raw.takes_context is False
    assert raw.description == "Raw rows."
    assert raw.io == "pickle"
    assert raw.file == __file__
    assert raw.line == raw.fn.__code__.co_firstlineno
    assert registered() == [raw]


def test_asset_with_parentheses_and_options() -> None:
    @asset(
        name="renamed",
        group="g",
        retries=2,
        retry_delay=0.5,
        timeout=3,
        pool="gpu",
        tags={"team": "ml"},
        description="override",
        code_version="v7",
    )
    def original(upstream: int) -> int:
        "ignored docstring"
        return upstream

    assert original.name == "renamed"
    assert (original.group, original.retries, original.retry_delay) == ("g", 2, 0.5)
    assert (original.timeout, original.pool, original.tags) == (3.0, "gpu", {"team": "ml"})
    assert original.description == "override"
    assert original.code_version == "v7"
    assert original.inputs == ("upstream",)
    assert registered() == [original]


def test_asset_empty_parentheses() -> None:
    @asset()
    def plain() -> int:
        return 1

    assert plain.name == "plain"
    assert plain.memory_limit is None


def test_context_first_is_not_an_input() -> None:
    @asset
    def with_context(context: StepContext, raw: int, extra: int) -> int:
        return raw

    assert with_context.takes_context is True
    assert with_context.inputs == ("raw", "extra")


def test_context_elsewhere_is_an_error() -> None:
    with pytest.raises(DefinitionError, match="`context` must be the first parameter"):

        @asset
        def late_context(raw: int, context: StepContext) -> int:
            return raw


def test_star_args_are_an_error() -> None:
    with pytest.raises(DefinitionError, match=r"\*args and \*\*kwargs"):

        @asset
        def variadic(*rows: int) -> tuple[int, ...]:
            return rows

    with pytest.raises(DefinitionError, match=r"\*args and \*\*kwargs"):

        @asset
        def keywords(**rows: int) -> dict[str, int]:
            return rows


def test_params_with_defaults_are_optional_inputs() -> None:
    @asset
    def model(
        context: StepContext,
        features: int,
        labels: int,
        weights: int | None = None,
        seed: int = 0,
    ) -> int:
        return features

    assert model.inputs == ("features", "labels")
    assert model.optional_inputs == ("weights", "seed")


def test_keyword_only_and_positional_only_params_are_inputs() -> None:
    @asset
    def scaled(
        context: StepContext,
        raw: int,
        /,
        weights: int | None = None,
        *,
        offset: int,
        scale: int = 2,
    ) -> int:
        return raw

    assert scaled.takes_context is True
    assert scaled.inputs == ("raw", "offset")
    assert scaled.optional_inputs == ("weights", "scale")


def test_a_wrapped_function_has_the_inputs_of_the_function_it_wraps() -> None:
    def logged(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return wrapper

    @asset
    @logged
    def cleaned(raw: list[int], limit: int = 10) -> list[int]:
        return raw[:limit]

    assert (cleaned.inputs, cleaned.optional_inputs) == (("raw",), ("limit",))
    assert cleaned([1, 2, 3], limit=2) == [1, 2]


def test_deps_by_name_or_asset_def() -> None:
    @asset
    def raw() -> int:
        return 1

    @asset(deps=["external_table", raw])
    def report() -> int:
        return 2

    assert report.deps == ("external_table", "raw")
    assert report.inputs == ()


@pytest.mark.parametrize(
    ("limit", "expected"),
    [
        ("512MiB", 536870912),
        ("2GB", 2_000_000_000),
        ("1.5g", 1_500_000_000),
        ("1 GiB", 1 << 30),
        (4096, 4096),
        (None, None),
    ],
)
def test_memory_limit_parsing(limit: Any, expected: int | None) -> None:
    @asset(memory_limit=limit)
    def sized() -> int:
        return 1

    assert sized.memory_limit == expected


@pytest.mark.parametrize("limit", ["lots", "12 parsecs", "-1GB", 0, -5, True, ""])
def test_bad_memory_limit_is_a_definition_error(limit: Any) -> None:
    with pytest.raises(DefinitionError, match=r"asset 'sized': memory_limit: "):

        @asset(memory_limit=limit)
        def sized() -> int:
            return 1

    assert registered() == []


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"retries": -1}, r"retries must be a whole number >= 0, got -1"),
        ({"retries": 1.5}, r"retries must be a whole number"),
        ({"retries": True}, r"retries must be a whole number"),
        ({"retry_delay": -1}, r"retry_delay must be seconds >= 0"),
        ({"timeout": 0}, r"timeout must be a number of seconds > 0"),
        ({"timeout": "soon"}, r"timeout must be a number of seconds > 0"),
        ({"name": "not an identifier"}, r"a name must be a Python identifier"),
    ],
)
def test_bad_asset_options_are_definition_errors(options: dict[str, Any], pattern: str) -> None:
    with pytest.raises(DefinitionError, match=pattern):

        @asset(**options)
        def opt() -> int:
            return 1


def test_calling_an_asset_calls_the_function() -> None:
    @asset
    def double(raw: int, factor: int = 2) -> int:
        return raw * factor

    assert double(21) == 42
    assert double(raw=2, factor=5) == 10


def test_code_version_follows_the_source() -> None:
    @asset
    def one() -> int:
        return 1

    @asset
    def two() -> int:
        return 2

    assert len(one.code_version) == 12
    assert one.code_version != two.code_version


def test_code_version_hashes_the_text_getsource_gives() -> None:
    """Versions recorded while the hash came from inspect.getsource stay valid."""

    @asset(
        group="g",
        retries=1,
    )
    def decorated(x: int) -> int:
        y = x + 1  # a comment
        return y

    @asset
    def with_sql() -> str:
        return """
SELECT 1
FROM t
"""

    @asset
    def nested() -> int:
        def inner() -> int:
            return 2

        return inner()

    for defn in (decorated, with_sql, nested):
        source = inspect.getsource(defn.fn)
        assert defn.code_version == hashlib.sha256(source.encode()).hexdigest()[:12], source


# --- checks ------------------------------------------------------------------------------------


def test_check_with_and_without_the_value() -> None:
    @asset
    def scores() -> list[int]:
        return [1]

    @check(scores, blocking=True)
    def not_empty(context: StepContext, scores: list[int]) -> bool:
        """Has rows."""
        return bool(scores)

    @check("scores", name="exists")
    def ran() -> bool:
        return True

    assert isinstance(not_empty, CheckDef)
    assert (not_empty.asset, not_empty.name, not_empty.blocking) == ("scores", "not_empty", True)
    assert not_empty.takes_context and not_empty.takes_value
    assert not_empty.description == "Has rows."
    assert (ran.asset, ran.name) == ("scores", "exists")
    assert not ran.takes_value and not ran.blocking
    assert not_empty(None, [1]) is True
    assert registered() == [scores, not_empty, ran]


def test_check_parameter_must_name_its_asset() -> None:
    with pytest.raises(DefinitionError, match=r"must be named 'scores'"):

        @check("scores")
        def wrong(values: list[int]) -> bool:
            return True


# --- task pipelines ----------------------------------------------------------------------------


def noop() -> int:
    return 1


def make_tasks(pipeline: Pipeline, *ids: str) -> list[TaskDef]:
    with pipeline:
        return [task(noop, id=i) for i in ids]


def test_rshift_sets_upstream_and_returns_the_right_side() -> None:
    a, b = make_tasks(Pipeline("p"), "a", "b")
    assert (a >> b) is b
    assert b.upstream == ["a"]
    assert a.upstream == []


def test_rshift_to_a_list_fans_out() -> None:
    a, b, c = make_tasks(Pipeline("p"), "a", "b", "c")
    result = a >> [b, c]
    assert result == [b, c]
    assert (b.upstream, c.upstream) == (["a"], ["a"])


def test_a_list_rshift_fans_in() -> None:
    a, b, c = make_tasks(Pipeline("p"), "a", "b", "c")
    assert ([a, b] >> c) is c
    assert c.upstream == ["a", "b"]


def test_lshift_points_the_other_way() -> None:
    a, b, c, e = make_tasks(Pipeline("p"), "a", "b", "c", "e")
    assert (a << b) is b
    assert a.upstream == ["b"] and b.upstream == []
    assert ([c, e] << a) is a
    assert (c.upstream, e.upstream) == (["a"], ["a"])
    e << [b, c]
    assert e.upstream == ["a", "b", "c"]


def test_chains_link_each_step() -> None:
    a, b, c, e = make_tasks(Pipeline("p"), "a", "b", "c", "e")
    a >> b >> [c, e]
    assert (a.upstream, b.upstream, c.upstream, e.upstream) == ([], ["a"], ["b"], ["b"])


def test_linking_twice_does_not_duplicate_upstream() -> None:
    a, b = make_tasks(Pipeline("p"), "a", "b")
    a >> b
    a >> b
    b << a
    assert b.upstream == ["a"]


def test_linking_something_else_is_a_definition_error() -> None:
    (a,) = make_tasks(Pipeline("p"), "a")
    # What an untyped pipeline file may write:
    name: Any = "b"
    mixed: Any = [a, 3]
    with pytest.raises(DefinitionError, match=r">> and << link tasks"):
        a >> name
    with pytest.raises(DefinitionError, match=r">> and << link tasks"):
        a >> mixed


def test_linking_tasks_of_two_pipelines_is_a_definition_error() -> None:
    (a,) = make_tasks(Pipeline("left"), "a")
    (b,) = make_tasks(Pipeline("right"), "b")
    with pytest.raises(DefinitionError, match=r"'a' to 'b': they are in different pipelines"):
        a >> b
    assert b.upstream == []


def test_task_parameters_become_upstream() -> None:
    with Pipeline("p") as p:

        @task
        def extract() -> list[int]:
            return [1]

        @task(retries=2, timeout=5, memory_limit="1MiB", pool="db")
        def transform(context: StepContext, extract: list[int], scale: int = 1) -> list[int]:
            return extract

        @task(id="load_rows")
        def store(transform: list[int]) -> list[int]:
            return transform

        extract >> store

    assert isinstance(transform, TaskDef)
    assert transform.takes_context
    assert transform.inputs == ("extract",)
    assert transform.upstream == ["extract"]
    assert store.id == "load_rows"
    assert store.upstream == ["transform", "extract"]
    assert (transform.retries, transform.timeout, transform.memory_limit) == (2, 5.0, 1 << 20)
    assert transform.pool == "db"
    assert extract.retries is None  # the pipeline's default applies later
    assert list(p.tasks) == ["extract", "transform", "load_rows"]
    assert transform(None, [3]) == [3]


def test_task_outside_a_pipeline_is_a_definition_error() -> None:
    with pytest.raises(DefinitionError, match=r"task 'lonely' must be created inside"):

        @task
        def lonely() -> int:
            return 1

    with Pipeline("p"):
        pass
    with pytest.raises(DefinitionError, match=r"inside a `with Pipeline"):
        shell("echo hi", id="after")


def test_two_tasks_with_one_id_is_a_definition_error() -> None:
    with Pipeline("p"), pytest.raises(DefinitionError, match=r"two tasks with id 'same'"):
        task(noop, id="same")
        task(noop, id="same")


@pytest.mark.parametrize("kind", ["task", "shell"])
def test_negative_task_retries_are_a_definition_error(kind: str) -> None:
    with Pipeline("p"), pytest.raises(DefinitionError, match=r"retries"):
        if kind == "task":
            task(noop, id="t", retries=-1)
        else:
            shell("echo hi", id="s", retries=-1)


def test_shell_relative_cwd_resolves_against_the_defining_file() -> None:
    here = Path(__file__).parent
    with Pipeline("p"):
        rel = shell("./build.sh", id="rel", cwd="scripts/tools", env={"N": 3})
        absolute = shell("make", id="absolute", cwd="/srv/build")
        none = shell("true", id="none")
    assert rel.cwd == str(here / "scripts" / "tools")
    assert rel.env == {"N": "3"}
    assert (rel.fn, rel.command, rel.file) == (None, "./build.sh", __file__)
    assert absolute.cwd == "/srv/build"
    assert none.cwd is None
    with pytest.raises(TypeError, match="not callable"):
        rel()


@pytest.mark.parametrize(
    ("command", "task_id", "pattern"),
    [("", "x", "non-empty"), ("   ", "x", "non-empty"), ("echo", "bad id", "identifier")],
)
def test_bad_shell_tasks_are_definition_errors(command: str, task_id: str, pattern: str) -> None:
    with Pipeline("p"), pytest.raises(DefinitionError, match=pattern):
        shell(command, id=task_id)


def test_pipeline_registers_itself_and_its_schedule_on_exit() -> None:
    with Pipeline("nightly", schedule="@daily", start="2025-01-01", catchup=True) as p:
        assert registered() == []
        task(noop, id="t")
    pipeline, sched = registered()
    assert pipeline is p
    assert isinstance(sched, ScheduleDef)
    assert (sched.name, sched.cron, sched.target, sched.catchup) == ("nightly", "@daily", p, True)
    assert sched.start == "2025-01-01"
    assert (p.file, sched.file) == (__file__, __file__)


def test_a_pipeline_left_by_an_exception_is_not_registered() -> None:
    with pytest.raises(ZeroDivisionError), Pipeline("half"):
        task(noop, id="t")
        1 / 0  # noqa: B018
    assert registered() == []
    assert tasks._pipeline_stack == []


@pytest.mark.parametrize(
    ("options", "pattern"),
    [
        ({"name": "has space"}, "identifier"),
        ({"name": "p", "retries": -1}, "retries"),
        ({"name": "p", "retry_delay": -0.5}, "retry_delay"),
    ],
)
def test_bad_pipeline_options_are_definition_errors(options: dict[str, Any], pattern: str) -> None:
    with pytest.raises(DefinitionError, match=pattern):
        Pipeline(**options)


# --- schedules, sensors and targets ------------------------------------------------------------


def test_target_spec_forms() -> None:
    @asset
    def raw() -> int:
        return 1

    @asset
    def clean(raw: int) -> int:
        return raw

    with Pipeline("publish") as p:
        task(noop, id="t")

    assets = "assets"
    assert target_spec("raw") == {"kind": assets, "selection": ["raw"]}
    assert target_spec(["raw", "*clean"]) == {"kind": assets, "selection": ["raw", "*clean"]}
    assert target_spec(("raw",)) == {"kind": assets, "selection": ["raw"]}
    assert target_spec("group:ml") == {"kind": assets, "selection": ["group:ml"]}
    assert target_spec(raw) == {"kind": assets, "selection": ["raw"]}
    assert target_spec([raw, clean]) == {"kind": assets, "selection": ["raw", "clean"]}
    assert target_spec([raw, "group:x"]) == {"kind": assets, "selection": ["raw", "group:x"]}
    assert target_spec(p) == {"kind": "pipeline", "name": "publish"}


@pytest.mark.parametrize("target", [[], [3], [None], [["nested"]]], ids=repr)
def test_target_spec_rejects_what_names_nothing(target: Any) -> None:
    with pytest.raises(DefinitionError, match="target"):
        target_spec(target)


def test_schedule_names_default_to_the_target() -> None:
    @asset
    def raw() -> int:
        return 1

    with Pipeline("publish") as p:
        task(noop, id="t")
    d._registry.reset()

    schedule("@daily", "raw")
    schedule("0 3 * * *", "group:ml")
    schedule("@hourly", [raw, "clean"])
    schedule("@weekly", p, catchup=True)
    schedule("@daily", raw, name="explicit")
    items = [s for s in registered() if isinstance(s, ScheduleDef)]
    assert len(items) == len(registered())
    names = [s.name for s in items]
    assert names == [
        "raw_schedule",
        "group_ml_schedule",
        "raw_clean_schedule",
        "publish_schedule",
        "explicit",
    ]
    assert [s.cron for s in items][:2] == ["@daily", "0 3 * * *"]
    assert items[3].catchup is True
    assert {s.file for s in items} == {__file__}


def test_file_sensor_resolves_a_relative_folder() -> None:
    here = Path(__file__).parent
    file_sensor("inbox", "data/inbox", "raw", pattern="*.csv", recursive=True)
    file_sensor("abs", "/var/drop", ["raw"])
    rel, absolute = registered()
    assert isinstance(rel, SensorDef) and isinstance(absolute, SensorDef)
    assert rel.path == str(here / "data" / "inbox")
    assert (rel.pattern, rel.recursive, rel.target) == ("*.csv", True, "raw")
    assert absolute.path == "/var/drop"


# --- selections --------------------------------------------------------------------------------

SELECTION_PIPELINES = {
    "graph.py": """
        from engine import Pipeline, asset, task


        @asset(group="ingest")
        def raw():
            return 1


        @asset(group="ingest")
        def clean(raw):
            return raw


        @asset(group="report")
        def stats(raw):
            return raw


        @asset(group="ml")
        def features(clean):
            return clean


        @asset(group="ml", deps=["stats"])
        def model(features):
            return features


        @asset(group="report")
        def report(model):
            return model


        @asset(group="misc")
        def lonely():
            return 0


        with Pipeline("nightly"):
            task(lambda: 1, id="t")
    """,
}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    root = tmp_path_factory.mktemp("selection") / "pipelines"
    for rel, text in SELECTION_PIPELINES.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text).lstrip("\n"))
    m = load(root)
    assert m.errors == {}
    assert list(m.assets) == ["raw", "clean", "stats", "features", "model", "report", "lonely"]
    return m


RESOLVE_CASES = [
    (["clean"], ["clean"]),
    (["+features"], ["clean", "features"]),
    (["*features"], ["raw", "clean", "features"]),
    (["+model"], ["stats", "features", "model"]),
    (["*model"], ["raw", "clean", "stats", "features", "model"]),
    (["clean+"], ["clean", "features"]),
    (["clean*"], ["clean", "features", "model", "report"]),
    (["raw+"], ["raw", "clean", "stats"]),
    (["+features+"], ["clean", "features", "model"]),
    (["*features*"], ["raw", "clean", "features", "model", "report"]),
    (["*stats*"], ["raw", "stats", "model", "report"]),
    (["group:ml"], ["features", "model"]),
    (["group:report"], ["stats", "report"]),
    (["*"], ["raw", "clean", "stats", "features", "model", "report", "lonely"]),
    (["lonely", "group:ingest"], ["raw", "clean", "lonely"]),
    (["report", " raw ", ""], ["raw", "report"]),
    (["model+", "+model"], ["stats", "features", "model", "report"]),
]


@pytest.mark.parametrize(
    ("selection", "expected"), RESOLVE_CASES, ids=[",".join(s) for s, _ in RESOLVE_CASES]
)
def test_resolve(manifest: Manifest, selection: list[str], expected: list[str]) -> None:
    assert resolve(manifest, selection) == expected


@pytest.mark.parametrize(
    ("selection", "fragments"),
    [
        (["modle"], ["unknown asset 'modle'", "(did you mean model?)"]),
        (["*featurs+"], ["unknown asset 'featurs'", "did you mean features"]),
        (["group:mll"], ["no asset group named 'mll'", "did you mean ml"]),
        (["group:"], ["no asset group named ''"]),
        (["nightly"], ["'nightly' is a task pipeline", "dagtop run nightly"]),
        ([], ["the selection is empty"]),
        (["  "], ["the selection is empty"]),
    ],
)
def test_resolve_errors(manifest: Manifest, selection: list[str], fragments: list[str]) -> None:
    with pytest.raises(SelectionError) as excinfo:
        resolve(manifest, selection)
    for fragment in fragments:
        assert fragment in excinfo.value.msg
    assert "\n" not in excinfo.value.msg


def test_resolve_does_not_suggest_far_names(manifest: Manifest) -> None:
    with pytest.raises(SelectionError, match=r"^unknown asset 'qqqq'$"):
        resolve(manifest, ["qqqq"])
