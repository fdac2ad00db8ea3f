"""Typed outputs: an asset's return annotation is checked after it runs, before its value is
stored, so nothing downstream ever sees a value of the wrong shape."""

from __future__ import annotations

import dataclasses
import logging
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Optional

import pydantic
import pytest

from engine.authoring.output_types import OutputTypeError, check_output, mismatch, type_name
from engine.client import Client, RunView
from engine.status import PartitionStatus, RunStatus, StepStatus

TYPED = textwrap.dedent(
    """
    from __future__ import annotations

    from dataclasses import dataclass
    from typing import TYPE_CHECKING

    import pydantic

    from engine import asset

    if TYPE_CHECKING:
        import pandas as pd


    @dataclass
    class Stats:
        n: int


    class Report(pydantic.BaseModel):
        total: float
        days: int


    @asset
    def counts(context) -> dict[str, int]:
        return context.params.get("counts", {"a": 1, "b": 2})


    @asset
    def stats(counts) -> Stats | None:
        return Stats(n=len(counts))


    @asset
    def report(context) -> Report:
        return context.params.get("report", {"total": 1.5, "days": 2})


    @asset
    def frame() -> pd.DataFrame:
        return {"not": "a frame"}


    @asset
    def after(counts):
        return sorted(counts)
    """
)


@dataclasses.dataclass
class Point:
    x: int


class Model(pydantic.BaseModel):
    a: int


@pytest.mark.parametrize(
    ("expected", "value", "problem"),
    [
        (dict, {}, None),
        (dict[str, int], {"a": "not checked: items are not walked"}, None),
        (dict[str, int], [1], "expected dict[str, int], got list"),
        (Sequence[int], (1, 2), None),
        (float, 3, None),  # an int is a fine float
        (int, 2.5, "expected int, got float"),
        (Point | None, None, None),
        (Optional[Point], {"x": 1}, "expected Point | None, got dict"),  # noqa: UP045
        (Point, Point(1), None),
        (Model, {"a": 1}, None),
        (Model, Model(a=1), None),
        (Literal["a", "b"], "c", "expected Literal['a', 'b'], got str"),
        (type(None), 0, "expected None, got int"),
        (Any, object(), None),
    ],
)
def test_a_value_matches_its_type_or_says_why(
    expected: Any, value: Any, problem: str | None
) -> None:
    assert mismatch(expected, value) == problem


def test_a_pydantic_model_validates_a_dict_and_names_the_field() -> None:
    problem = mismatch(Model, {"a": "many"})
    assert problem is not None
    assert problem.startswith("expected Model, got dict (1 validation error for Model: a: ")
    assert type_name(dict[str, list[int]]) == "dict[str, list[int]]"


def test_an_unresolvable_annotation_is_skipped_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Three functions wrong on purpose, as a pipeline file may be (hence the ignores): an
    # annotation that names nothing, none at all, and one the value does not match.
    def frame() -> pd.DataFrame:  # type: ignore[name-defined]  # noqa: F821
        return {}

    def no_annotation():  # type: ignore[no-untyped-def]
        return 1

    def typed() -> int:
        return "x"  # type: ignore[return-value]

    log = logging.getLogger("test.typed")
    with caplog.at_level(logging.WARNING, logger="test.typed"):
        check_output(frame, {}, "asset 'frame'", log)
    assert "cannot be resolved, so it is not checked" in caplog.text
    check_output(no_annotation, object(), "asset 'no_annotation'", log)
    with pytest.raises(OutputTypeError, match="^output of asset 'typed' does not match its type"):
        check_output(typed, typed(), "asset 'typed'", log)


# --- in real runs ------------------------------------------------------------------------------


@pytest.fixture
def client(tmp_path: Path) -> Client:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "typed.py").write_text(TYPED)
    return Client(home=tmp_path / "home", pipelines=pipelines)


def steps(view: RunView) -> dict[str, tuple[str, str | None]]:
    return {s.key: (s.status, s.error) for s in view.steps}


@pytest.mark.serial
def test_typed_outputs_pass_and_an_unresolvable_type_only_warns(client: Client) -> None:
    view = client.materialize(["*"])
    assert view.status == RunStatus.SUCCESS, steps(view)
    frame = next(s for s in view.steps if s.key == "frame")
    assert frame.log_path is not None
    assert "cannot be resolved, so it is not checked" in Path(frame.log_path).read_text()


@pytest.mark.serial
def test_a_value_of_the_wrong_type_fails_its_step_before_anything_downstream_sees_it(
    client: Client,
) -> None:
    view = client.materialize(["counts", "stats", "after"], params={"counts": ["a", "b"]})
    assert view.status == RunStatus.FAILED
    got = steps(view)
    assert got["counts"] == (
        StepStatus.FAILED,
        "output of asset 'counts' does not match its type: expected dict[str, int], got list",
    )
    assert got["stats"] == (StepStatus.SKIPPED, "upstream counts failed")
    assert got["after"] == (StepStatus.SKIPPED, "upstream counts failed")
    assert client.partitions("counts")[0].status == PartitionStatus.FAILED  # nothing stored

    view = client.materialize(["report"], params={"report": {"total": "lots", "days": 2}})
    status, error = steps(view)["report"]
    assert status == StepStatus.FAILED and error is not None
    assert error.startswith("output of asset 'report' does not match its type: expected Report,")
    assert "total" in error


@pytest.mark.serial
def test_a_type_failure_is_not_retried(tmp_path: Path) -> None:
    pipelines = tmp_path / "pipelines"
    pipelines.mkdir()
    (pipelines / "retrying.py").write_text(
        "from engine import asset\n\n\n@asset(retries=3, retry_delay=0)\n"
        "def wrong() -> dict:\n    return [1]\n"
    )
    view = Client(home=tmp_path / "home", pipelines=pipelines).materialize(["wrong"])
    (step,) = view.steps
    assert step.status == StepStatus.FAILED and step.attempts == 1, (step.status, step.attempts)
    assert step.error is not None and "does not match its type" in step.error
