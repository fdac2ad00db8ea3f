"""Typed config and resources without the command line: planning against the manifest's
schema, `engine.testing`, and a schedule whose tick cannot make the config."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from engine.authoring.definitions import ResourceDef
from engine.authoring.resources import ResourceBuildError
from engine.authoring.typed_config import ConfigParamError
from engine.automation.scheduler import Scheduler
from engine.history import plan
from engine.loading.loader import load
from engine.loading.manifest import Manifest
from engine.storage import repo
from engine.storage.db import open_db, read_scope
from engine.storage.models import Run
from engine.testing import build_context, load_module, materialize

PIPELINE = textwrap.dedent(
    """
    from dataclasses import dataclass
    from typing import Literal

    from pydantic import BaseModel, ConfigDict, Field

    from engine import StaticPartitions, asset, resource, schedule


    class Inner(BaseModel):
        depth: int = 3


    class TrainConfig(BaseModel):
        C: float = Field(1.0, gt=0)
        max_iter: int = 200
        tags: list[str] = []
        solver: Literal["lbfgs", "saga"] = "lbfgs"
        name: str = "model"
        note: str | None = None
        inner: Inner = Inner()


    class Loose(BaseModel):
        model_config = ConfigDict(extra="allow")
        k: int = 1


    class Holder:
        pass


    class Odd(BaseModel):  # a field with no JSON schema
        model_config = ConfigDict(arbitrary_types_allowed=True)
        holder: Holder | None = None
        k: int = 1


    @dataclass
    class Needed:
        days: int


    calls = []


    @resource
    def store(context):
        calls.append(("built", dict(context.config)))
        yield {"kind": "real"}
        calls.append(("torn down", None))


    @asset
    def trained(config: TrainConfig):
        return config


    @asset(partitions=StaticPartitions(["a", "b"]))
    def per_key(config: TrainConfig):
        return config.C


    @asset
    def loose(cfg: Loose):
        return cfg


    @asset
    def odd(cfg: Odd):
        return cfg.k


    @asset
    def needed(n: Needed):
        return n.days


    @asset
    def saved(trained, store):
        if store.get("fail"):
            raise RuntimeError("store refused")
        return store["kind"]


    schedule("@daily", needed, name="needed_daily")
    schedule("@daily", trained, name="trained_daily")
    """
)


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("typed") / "pipelines"
    root.mkdir()
    (root / "typed.py").write_text(PIPELINE)
    return root


@pytest.fixture(scope="module")
def manifest(pipelines: Path) -> Manifest:
    m = load(pipelines)
    assert m.ok, m.errors
    return m


def unregistered(name: str, fn: Callable[..., Any]) -> ResourceDef:
    """A resource made in a test, kept out of the registry pipeline modules fill."""
    return ResourceDef(name=name, fn=fn, takes_context=False, description=None, file="", line=0)


def checked(m: Manifest, names: list[str], **params: Any) -> dict[str, Any]:
    return plan.check_config(m, names, params)


def test_params_are_read_by_the_field_type(manifest: Manifest) -> None:
    assert checked(manifest, ["trained"], C="0.5", max_iter="7", tags='["a","b"]') == {
        "C": 0.5, "max_iter": 7, "tags": ["a", "b"],
    }  # fmt: skip
    # A string field keeps the string, even one that reads as JSON.
    assert checked(manifest, ["trained"], name="12") == {"name": "12"}
    assert checked(manifest, ["trained"], note="null") == {"note": "null"}
    assert checked(manifest, ["trained"], inner='{"depth": 5}') == {"inner": {"depth": 5}}
    assert checked(manifest, ["trained"]) == {}  # defaults apply in the step


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"C": "-1"}, ["field 'C'", "greater than 0"]),
        ({"C": "abc"}, ["field 'C'", "valid number"]),
        ({"solver": "adam"}, ["field 'solver'", "'lbfgs' or 'saga'"]),
        ({"tags": "a,b"}, ["field 'tags'", "valid list"]),
        ({"inner": '{"depth": "x"}'}, ["field 'inner.depth'"]),
        ({"inner": '{"width": 1}'}, ["field 'inner.width'"]),
        ({"max_iters": "3"}, ["no field 'max_iters'", "did you mean max_iter?"]),
    ],
)
def test_a_bad_value_is_one_line_naming_the_field(
    manifest: Manifest, params: dict[str, str], words: list[str]
) -> None:
    with pytest.raises(ConfigParamError) as caught:
        checked(manifest, ["trained"], **params)
    message = caught.value.msg
    assert "\n" not in message and message.startswith("asset 'trained': ")
    for word in words:
        assert word in message, message


def test_a_model_that_allows_extras_takes_other_params(manifest: Manifest) -> None:
    assert checked(manifest, ["loose"], k="2", other="x") == {"k": 2, "other": "x"}


def test_a_model_without_a_json_schema_still_has_its_names_checked(manifest: Manifest) -> None:
    assert checked(manifest, ["odd"], k="2") == {"k": "2"}  # its value is checked in the step
    with pytest.raises(ConfigParamError, match="config Odd has no field 'kk'"):
        checked(manifest, ["odd"], kk="2")


def test_no_typed_config_leaves_params_alone(manifest: Manifest) -> None:
    assert checked(manifest, ["saved"], anything="1") == {"anything": "1"}


def test_a_refused_backfill_records_nothing(manifest: Manifest, tmp_path: Path) -> None:
    db = open_db(f"sqlite:///{tmp_path / 'dagtop.db'}")
    from engine.storage.db import session_scope

    request = plan.RunRequest(selection=("per_key",), params={"C": "no"}, trigger="backfill")
    with pytest.raises(ConfigParamError), session_scope(db) as s:
        plan.record_many(s, manifest, request, ["a", "b"], 0.0)
    with read_scope(db) as s:
        assert s.exec(select(Run)).all() == []
    db.dispose()


def test_a_schedule_tick_that_cannot_make_the_config_is_recorded_failed(
    manifest: Manifest, tmp_path: Path
) -> None:
    db = open_db(f"sqlite:///{tmp_path / 'dagtop.db'}")
    clock = [datetime(2025, 1, 5, 12, tzinfo=UTC)]
    started: list[str] = []

    def record(session: Any, request: plan.RunRequest) -> str:
        return plan.record(session, manifest, request, clock[0].timestamp())

    sched = Scheduler(db, record, started.append, clock=lambda: clock[0], timezone="UTC")
    sched.sync(manifest)
    clock[0] = datetime(2025, 1, 6, 0, 1, tzinfo=UTC)
    assert sched.run_due("needed_daily") == []
    with read_scope(db) as s:
        (tick,) = repo.schedule_ticks(s, "needed_daily", limit=10)
        assert s.exec(select(Run)).all() == []
    assert tick.status == "failed" and tick.run_id is None
    assert "field 'days'" in (tick.reason or "") and "required" in (tick.reason or "")
    # A config whose fields all have defaults runs; the schedule's own param is no field.
    (run_id,) = sched.run_due("trained_daily")
    with read_scope(db) as s:
        run = s.get(Run, run_id)
    assert run is not None and list(json.loads(run.params)) == ["scheduled_for"]
    db.dispose()


def test_testing_builds_resources_and_validates_config(pipelines: Path, tmp_path: Path) -> None:
    mod = load_module(pipelines / "typed.py")
    mod.calls.clear()
    result = materialize([mod.trained, mod.saved], params={"C": "0.25"}, home=tmp_path,
                         resource_config={"store": {"bucket": "b"}})  # fmt: skip
    assert result.success
    assert result.values["trained"] == mod.TrainConfig(C=0.25)
    assert result.values["saved"] == "real"
    assert mod.calls == [("built", {"bucket": "b"}), ("torn down", None)]


def test_testing_checks_params_against_every_selected_config_together(
    pipelines: Path, tmp_path: Path
) -> None:
    """As a run does: a param is a field of one of the selected assets' configs."""
    mod = load_module(pipelines / "typed.py")
    result = materialize([mod.trained, mod.needed], params={"C": "0.5", "days": "3"},
                         home=tmp_path)  # fmt: skip
    assert result.success
    assert result.values == {"trained": mod.TrainConfig(C=0.5), "needed": 3}
    with pytest.raises(ConfigParamError, match="has no field 'epochs'"):
        materialize([mod.trained, mod.needed], params={"C": "0.5", "days": "3", "epochs": "2"},
                    home=tmp_path)  # fmt: skip


def test_testing_replaces_a_resource(pipelines: Path, tmp_path: Path) -> None:
    mod = load_module(pipelines / "typed.py")
    mod.calls.clear()
    result = materialize([mod.saved], inputs={"trained": None}, home=tmp_path,
                         resources={"store": {"kind": "fake"}})  # fmt: skip
    assert result.values["saved"] == "fake"
    assert mod.calls == []  # the real one is never built
    ctx = build_context(resources={"store": {"kind": "fake"}})
    assert ctx.resources["store"] == {"kind": "fake"}


def test_testing_tears_down_after_a_failure(pipelines: Path, tmp_path: Path) -> None:
    mod = load_module(pipelines / "typed.py")
    mod.calls.clear()

    def failing() -> Iterator[dict[str, bool]]:  # a failing client, replacing the module's
        yield {"fail": True}
        mod.calls.append(("fake torn down", None))

    setattr(mod, "store", unregistered("store", failing))  # noqa: B010 - unknown to the checker
    result = materialize([mod.saved], inputs={"trained": None}, home=tmp_path,
                         raise_on_error=False)  # fmt: skip
    assert "saved" in result.failures
    assert mod.calls == [("fake torn down", None)]


def test_testing_refuses_bad_config_and_names_a_failing_resource(
    pipelines: Path, tmp_path: Path
) -> None:
    mod = load_module(pipelines / "typed.py")
    with pytest.raises(ConfigParamError, match="field 'C'"):
        materialize([mod.trained], params={"C": "x"}, home=tmp_path)

    def refused() -> None:
        raise OSError("no bucket")

    setattr(mod, "store", unregistered("store", refused))  # noqa: B010 - unknown to the checker
    with pytest.raises(ResourceBuildError, match="resource 'store' failed to build: OSError"):
        materialize([mod.saved], inputs={"trained": None}, home=tmp_path)


def test_a_typed_config_is_found_beside_an_annotation_that_does_not_resolve(
    tmp_path: Path,
) -> None:
    root = tmp_path / "pipelines"
    root.mkdir()
    (root / "hinted.py").write_text(
        textwrap.dedent(
            """
            from __future__ import annotations

            from dataclasses import dataclass
            from typing import TYPE_CHECKING

            from engine import asset

            if TYPE_CHECKING:
                import pandas as pd


            @dataclass
            class Cfg:
                n: int = 1


            @asset
            def up():
                return 1


            @asset
            def down(up: pd.DataFrame, cfg: Cfg) -> pd.DataFrame:
                return up
            """
        )
    )
    m = load(root)
    assert m.ok, m.errors
    down = m.assets["down"]
    assert down.inputs == ("up",) and down.config is not None and down.config["param"] == "cfg"


@dataclass
class _Knobs:
    rate: float = 0.1


def test_the_step_context_is_no_typed_config_though_it_is_a_dataclass() -> None:
    from engine.authoring.context import StepContext
    from engine.authoring.typed_config import config_param

    def plain(context: StepContext) -> None: ...

    def tuned(context: StepContext, knobs: _Knobs) -> None: ...

    assert config_param(plain) is None
    assert config_param(tuned) == ("knobs", _Knobs)
