"""Task pipelines that map, branch, short-circuit and follow trigger rules, through real step
processes and real SQLite (the pipelines are in tests/fixtures/pipelines/task_flow.py)."""

from __future__ import annotations

import pickle
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select

from engine.client import Client, RunView
from engine.status import RunStatus, StepStatus
from engine.storage.db import read_scope, session_scope
from engine.storage.models import Step, StepAttempt
from tests.engine.test_executor import log_text, make_project, step
from tests.engine.test_recovery import all_rows, dagtop
from tests.waiting import wait_for

pytestmark = pytest.mark.serial


@pytest.fixture
def client(tmp_path: Path) -> Client:
    return make_project(tmp_path, "task_flow")


def returned(client: Client, run: RunView, key: str) -> Any:
    """What a task returned in `run` (its newest attempt's stored value)."""
    with read_scope(client.db) as s:
        query = select(StepAttempt).where(StepAttempt.run_id == run.id, StepAttempt.key == key)
        attempts = s.exec(query.order_by(col(StepAttempt.id))).all()
    assert attempts and attempts[-1].output_path, f"{key} stored no value"
    with open(attempts[-1].output_path, "rb") as fh:
        return pickle.load(fh)


def update_params(run_id: str) -> Any:
    from sqlmodel import update

    from engine.storage.models import Run

    return update(Run).where(col(Run.id) == run_id).values(params='{"files": ["a.csv", "b.csv"]}')


def outcome(view: RunView) -> dict[str, tuple[str, str | None]]:
    return {s.key: (s.status.value, s.error) for s in view.steps}


# --- mapping ------------------------------------------------------------------------------------


def test_each_element_is_a_step_of_its_own_and_the_downstream_gets_them_in_order(
    client: Client,
) -> None:
    files = ["a.csv", "flaky.csv", "c.csv"]
    view = client.run_pipeline("per_file", params={"files": files})

    assert view.status == RunStatus.SUCCESS
    keys = [s.key for s in view.steps]
    assert keys == ["list_files", "process[0]", "process[1]", "process[2]", "summarize", "tidy"]
    assert returned(client, view, "summarize") == {"seen": ["A.CSV", "FLAKY.CSV", "C.CSV"]}
    # Each its own process, log and retries: only the flaky one needed a second attempt.
    assert [step(view, f"process[{i}]").attempts for i in range(3)] == [1, 2, 1]
    assert "processing a.csv" in log_text(view, "process[0]")
    assert "processing c.csv" not in log_text(view, "process[0]")
    assert step(view, "process[2]").upstream == ("list_files",)
    assert step(view, "summarize").upstream == ("process[0]", "process[1]", "process[2]")


def test_an_empty_list_maps_to_no_step_and_the_downstream_gets_an_empty_list(
    client: Client,
) -> None:
    view = client.run_pipeline("per_file", params={"files": []})

    assert view.status == RunStatus.SUCCESS
    assert [s.key for s in view.steps] == ["list_files", "summarize", "tidy"]
    assert returned(client, view, "summarize") == {"seen": []}


def test_a_failed_instance_skips_what_needs_all_and_all_done_still_runs(client: Client) -> None:
    view = client.run_pipeline("per_file", params={"files": ["a.csv", "bad.csv"]})

    assert view.status == RunStatus.FAILED
    assert step(view, "process[0]").status == StepStatus.SUCCESS
    assert step(view, "process[1]").status == StepStatus.FAILED
    assert step(view, "process[1]").attempts == 2  # its own retries
    assert outcome(view)["summarize"] == ("skipped", "upstream process[1] failed")
    assert returned(client, view, "tidy") == 1  # all_done: the instances that returned


def test_a_mapped_task_over_something_not_a_list_fails_its_upstream_clearly(
    client: Client,
) -> None:
    view = client.run_pipeline("per_file", params={"files": "a.csv"})

    assert view.status == RunStatus.FAILED
    error = step(view, "list_files").error or ""
    assert "task 'list_files' is mapped over: it must return a list, not str" in error
    assert outcome(view)["process"] == ("skipped", "upstream list_files failed")


# --- branches and short-circuits -------------------------------------------------------------


def test_a_branch_runs_the_path_it_chose_and_the_run_succeeds(client: Client) -> None:
    good = client.run_pipeline("branching", params={"score": 0.9})
    assert good.status == RunStatus.SUCCESS
    assert outcome(good)["report_bad"] == ("skipped", "not chosen by choose")
    assert returned(client, good, "deploy") == "deployed model"
    assert step(good, "notify").status == StepStatus.SUCCESS  # none_failed_min_one_success

    bad = client.run_pipeline("branching", params={"score": 0.1})
    assert bad.status == RunStatus.SUCCESS
    assert outcome(bad)["train"] == ("skipped", "not chosen by choose")
    assert outcome(bad)["deploy"] == ("skipped", "upstream train skipped")
    assert step(bad, "report_bad").status == StepStatus.SUCCESS
    assert step(bad, "notify").status == StepStatus.SUCCESS


def test_a_branch_may_choose_several_or_none(client: Client) -> None:
    both = client.run_pipeline("branching", params={"pick": ["train", "report_bad"]})
    assert all(s.status == StepStatus.SUCCESS for s in both.steps)

    none = client.run_pipeline("branching", params={"pick": None})
    assert none.status == RunStatus.SUCCESS
    assert outcome(none)["notify"] == (
        "skipped", "every upstream was skipped (trigger rule none_failed_min_one_success)",
    )  # fmt: skip


def test_a_branch_that_names_no_direct_downstream_task_fails(client: Client) -> None:
    view = client.run_pipeline("branching", params={"pick": "deploy"})

    assert view.status == RunStatus.FAILED
    error = step(view, "choose").error or ""
    assert "chose 'deploy', which is not a direct downstream task" in error, error
    assert "train, report_bad" in error
    assert outcome(view)["train"] == ("skipped", "upstream choose failed")


def test_a_false_short_circuit_skips_everything_downstream_even_all_done(client: Client) -> None:
    closed = client.run_pipeline("gated", params={"open": 0})

    assert closed.status == RunStatus.SUCCESS
    assert outcome(closed)["after_gate"] == ("skipped", "short-circuited by gate")
    # Airflow's default (ignore_downstream_trigger_rules=True): its rule does not save it.
    assert outcome(closed)["cleanup_after"] == ("skipped", "short-circuited by gate")
    assert step(closed, "beside").status == StepStatus.SUCCESS

    opened = client.run_pipeline("gated", params={"open": 1})
    assert all(s.status == StepStatus.SUCCESS for s in opened.steps)


# --- trigger rules ------------------------------------------------------------------------------


def test_trigger_rules_after_a_failure(client: Client) -> None:
    view = client.run_pipeline("rules")

    assert view.status == RunStatus.FAILED
    assert outcome(view) == {
        "ok": ("success", None),
        "broken": ("failed", "RuntimeError: broken on purpose"),
        "cleanup": ("success", None),  # all_done
        "needs_all": ("skipped", "upstream broken failed"),  # all_success: upstream_failed
        "alert": ("success", None),  # one_failed
        "any_ok": ("success", None),  # one_success
        "no_failure": ("skipped", "upstream broken failed"),  # none_failed
        "after_skip": ("skipped", "upstream needs_all skipped"),
    }
    assert returned(client, view, "cleanup") == "cleaned"


def test_rerun_from_failure_keeps_what_a_branch_skipped(client: Client) -> None:
    view = client.run_pipeline("branching", params={"score": 0.9, "deploy_fails": 1})
    assert view.status == RunStatus.FAILED
    assert outcome(view)["notify"] == ("skipped", "upstream deploy failed")

    again = client.rerun_from_failure(view.id)

    # The failure and what it skipped run again; what the branch did not choose stays skipped.
    assert outcome(again)["report_bad"] == ("skipped", "not chosen by choose")
    assert step(again, "deploy").attempts == 2
    assert step(again, "choose").attempts == 1
    with read_scope(client.db) as s:
        rows = s.exec(select(Step).where(Step.run_id == view.id)).all()
    assert {r.key: r.skip for r in rows if r.status == StepStatus.SKIPPED} == {
        "report_bad": "branch", "notify": "upstream_failed",
    }  # fmt: skip


@pytest.mark.timeout(90)
def test_an_engine_killed_among_mapped_instances_is_finished_by_a_rerun(client: Client) -> None:
    engine = subprocess.Popen(
        dagtop(client, "run", "per_file", "--param", 'files=["a.csv","b.csv"]',
               "--param", "sleep=30"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def instances_running() -> list[StepAttempt] | None:
            if not (client.paths.home / "dagtop.db").exists():
                return None
            attempts = [a for a in all_rows(client, StepAttempt) if a.key.startswith("process[")]
            return attempts if len(attempts) == 2 and all(a.pid for a in attempts) else None

        running = wait_for(instances_running, 30, "both mapped instances to start")
        engine.send_signal(signal.SIGKILL)
        assert engine.wait(timeout=5) == -signal.SIGKILL
    finally:
        if engine.poll() is None:
            engine.kill()
            engine.wait()
    run_id = running[0].run_id
    with session_scope(client.db) as s:
        s.exec(update_params(run_id))  # the re-run need not sleep again

    view = Client(home=client.paths.home, pipelines=client.paths.pipelines).rerun_from_failure(
        run_id
    )

    assert view.status == RunStatus.SUCCESS, outcome(view)
    # Expanded once: the same two instances, each run again after the crash.
    assert [s.key for s in view.steps] == [
        "list_files", "process[0]", "process[1]", "summarize", "tidy",
    ]  # fmt: skip
    assert [step(view, f"process[{i}]").attempts for i in range(2)] == [2, 2]
    assert returned(client, view, "summarize") == {"seen": ["A.CSV", "B.CSV"]}


def test_a_task_taking_the_value_of_an_upstream_that_did_not_run_fails_saying_so(
    client: Client,
) -> None:
    view = client.run_pipeline("takes_a_skipped_value")

    assert view.status == RunStatus.FAILED
    error = step(view, "wants_it").error or ""
    assert error.startswith("upstream task 'never' skipped (not chosen by choose_none)"), error
