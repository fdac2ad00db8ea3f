"""The executor's rules, read from its state in memory alone: no storage, no process."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from engine.executor.state import (
    MAP,
    MAX_RETRY_DELAY,
    Counts,
    Ending,
    RunState,
    StepState,
    may_claim,
    retry_delay,
    trigger,
)
from engine.loading.manifest import Manifest
from engine.protocol.worker import EventKind
from engine.status import RunStatus, SkipKind, StepStatus

if TYPE_CHECKING:
    from engine.protocol.worker import CheckEvent, Event

NOW = 1_000.0
UPSTREAM_FAILED = SkipKind.UPSTREAM_FAILED
FAILED = Ending(StepStatus.FAILED, "ValueError: no", None, retry=True)


def step(key: str, *upstream: str, status: StepStatus = StepStatus.QUEUED) -> StepState:
    return StepState(0, key, list(upstream), status, attempts=0, max_attempts=1, retry_at=None)


def run_of(*steps: StepState, canceling: bool = False) -> RunState:
    return RunState(
        id="r1", steps={st.key: st for st in steps}, partition=None, schedule=None,
        pipeline=None, canceling=canceling,
    )  # fmt: skip


def no_manifest() -> Manifest:
    return Manifest(root="/nowhere")  # every definition is gone: the defaults apply


def attempt(st: StepState, number: int, of: int) -> StepState:
    st.status, st.attempts, st.max_attempts = StepStatus.RUNNING, number, of
    return st


def check(name: str, passed: bool, blocking: bool) -> CheckEvent:
    return {
        "e": EventKind.CHECK, "t": NOW, "name": name, "passed": passed, "metadata": {},
        "description": None, "error": None, "blocking": blocking,
    }  # fmt: skip


def test_a_failure_retries_with_a_doubling_backoff_while_attempts_are_left() -> None:
    st = attempt(step("a"), 2, of=3)
    run = run_of(st)

    outcome = run.outcome(st, FAILED, no_manifest, NOW)

    assert (outcome.step_status, outcome.retry_in, outcome.retry_at) == (
        StepStatus.RETRYING, 2.0, NOW + 2.0,
    )  # fmt: skip
    run.ended(st, outcome)
    assert (st.status, st.retry_at, run.next_retry()) == (StepStatus.RETRYING, NOW + 2, NOW + 2)


def test_the_last_attempt_a_cancel_or_a_wrong_type_ends_the_step() -> None:
    last = attempt(step("a"), 3, of=3)
    assert run_of(last).outcome(last, FAILED, no_manifest, NOW).step_status == StepStatus.FAILED
    st = attempt(step("a"), 1, of=3)
    canceling = run_of(st, canceling=True)
    assert canceling.outcome(st, FAILED, no_manifest, NOW).retry_in is None
    wrong_type = Ending(StepStatus.FAILED, "returned a str", None, retry=False)
    assert run_of(st).outcome(st, wrong_type, no_manifest, NOW).step_status == StepStatus.FAILED


def test_the_backoff_is_capped() -> None:
    assert [retry_delay(None, n) for n in (1, 2, 3)] == [1.0, 2.0, 4.0]
    assert retry_delay(10.0, 20) == MAX_RETRY_DELAY


def test_a_failed_blocking_check_blocks_what_is_downstream_of_a_success() -> None:
    a, b = attempt(step("a"), 1, of=1), step("b", "a")
    run = run_of(a, b)
    events: list[Event] = [check("fresh", True, True), check("positive", False, True)]
    success = Ending(StepStatus.SUCCESS, None, None, retry=True)

    outcome = run.outcome(a, success, no_manifest, NOW, events)
    run.ended(a, outcome)

    assert outcome.blocks == "blocking check positive on a failed"
    assert run.unrunnable() == {
        "b": (StepStatus.SKIPPED, "blocking check positive on a failed", UPSTREAM_FAILED)
    }
    assert not run.ready(b, NOW)
    assert run.final_status() == RunStatus.FAILED


def test_a_failed_check_that_does_not_block_blocks_nothing() -> None:
    a = attempt(step("a"), 1, of=1)
    success = Ending(StepStatus.SUCCESS, None, None, retry=True)
    outcome = run_of(a).outcome(a, success, no_manifest, NOW, [check("warn", False, False)])
    assert outcome.blocks is None


def test_skips_go_through_the_whole_graph_at_once() -> None:
    run = run_of(
        step("a", status=StepStatus.FAILED), step("b", "a"), step("c", "b"), step("d"),
    )  # fmt: skip

    updates = run.unrunnable()

    assert updates == {
        "b": (StepStatus.SKIPPED, "upstream a failed", UPSTREAM_FAILED),
        "c": (StepStatus.SKIPPED, "upstream b skipped", UPSTREAM_FAILED),
    }
    run.apply(updates)
    assert [st.status for st in run.steps.values()][1:3] == [StepStatus.SKIPPED] * 2


def test_a_cancel_ends_every_step_still_waiting() -> None:
    run = run_of(
        step("a", status=StepStatus.RUNNING), step("b", "a"),
        step("c", status=StepStatus.RETRYING), canceling=True,
    )  # fmt: skip
    assert run.unrunnable() == {
        "b": (StepStatus.CANCELED, "canceled by user", None),
        "c": (StepStatus.CANCELED, "canceled by user", None),
    }


def test_a_run_is_claimed_only_from_no_live_engine() -> None:
    def alive(owner: str) -> bool:
        return owner == "live"

    assert may_claim(RunStatus.QUEUED, None, "me", alive)
    assert may_claim(RunStatus.RUNNING, "me", "me", alive)
    assert may_claim(RunStatus.RUNNING, "dead", "me", alive)
    assert not may_claim(RunStatus.RUNNING, "live", "me", alive)
    assert not may_claim(RunStatus.SUCCESS, None, "me", alive)


# --- trigger rules, branches, short-circuits and mapping ----------------------------------------

SUCCESS = Ending(StepStatus.SUCCESS, None, None, retry=True)
OK, FAIL, SKIP, UFAIL, WAIT = "success", "failed", "skipped", "upstream_failed", "queued"


def upstream_of(*states: str) -> Counts:
    return Counts(
        len(states), states.count(OK), states.count(FAIL) + states.count(UFAIL), states.count(SKIP)
    )


# Each rule against upstream states, and what Airflow's TriggerRuleDep decides (with upstream
# failures flagged): True runs, a SkipKind ends the task so, None waits.
AIRFLOW = [
    ("all_success", (OK, OK), True),
    ("all_success", (OK, WAIT), None),
    ("all_success", (FAIL, WAIT), SkipKind.UPSTREAM_FAILED),  # at once, not waiting
    ("all_success", (UFAIL, OK), SkipKind.UPSTREAM_FAILED),
    ("all_success", (SKIP, WAIT), SkipKind.SKIPPED),
    ("all_success", (SKIP, FAIL), SkipKind.UPSTREAM_FAILED),  # failure wins over skip
    ("all_done", (OK, FAIL), True),
    ("all_done", (SKIP, UFAIL), True),
    ("all_done", (FAIL, WAIT), None),
    ("one_success", (OK, WAIT), True),  # does not wait for the rest
    ("one_success", (FAIL, WAIT), None),
    ("one_success", (FAIL, SKIP), SkipKind.UPSTREAM_FAILED),
    ("one_success", (SKIP, SKIP), SkipKind.SKIPPED),
    ("one_failed", (FAIL, WAIT), True),  # does not wait either
    ("one_failed", (UFAIL, OK), True),
    ("one_failed", (OK, WAIT), None),
    ("one_failed", (OK, SKIP), SkipKind.SKIPPED),
    ("none_failed", (OK, SKIP), True),
    ("none_failed", (SKIP, SKIP), True),
    ("none_failed", (OK, WAIT), None),
    ("none_failed", (UFAIL, WAIT), SkipKind.UPSTREAM_FAILED),
    ("none_failed_min_one_success", (OK, SKIP), True),
    ("none_failed_min_one_success", (SKIP, SKIP), SkipKind.SKIPPED),
    ("none_failed_min_one_success", (FAIL, OK), SkipKind.UPSTREAM_FAILED),
    ("none_failed_min_one_success", (SKIP, WAIT), None),
    ("one_failed", (), True),  # no upstream: nothing to wait for
]


@pytest.mark.parametrize(("rule", "states", "expected"), AIRFLOW)
def test_trigger_rules_decide_as_airflow_does(
    rule: str, states: tuple[str, ...], expected: object
) -> None:
    assert trigger(rule, upstream_of(*states)) == expected


def skipped(key: str, kind: SkipKind | None, *upstream: str) -> StepState:
    st = step(key, *upstream, status=StepStatus.SKIPPED)
    st.skip = kind
    return st


def test_a_step_skipped_by_a_failure_counts_as_failed_downstream() -> None:
    run = run_of(
        skipped("a", SkipKind.UPSTREAM_FAILED), skipped("b", SkipKind.BRANCH),
        step("either", "a", "b"), step("none", "a", "b"), step("alert", "a", "b"),
    )  # fmt: skip
    run.rules = {"either": "none_failed_min_one_success", "none": "none_failed",
                 "alert": "one_failed"}  # fmt: skip
    updates = run.unrunnable()
    assert updates["either"] == (StepStatus.SKIPPED, "upstream a skipped", UPSTREAM_FAILED)
    assert updates["none"].skip == UPSTREAM_FAILED
    assert "alert" not in updates and run.ready(run.steps["alert"], NOW)


def test_a_branch_skips_the_direct_downstream_it_did_not_choose() -> None:
    choose = attempt(step("choose"), 1, of=1)
    run = run_of(
        choose, step("a", "choose"), step("b", "choose"), step("c", "choose"),
        step("after_b", "b"), step("join", "a", "b"),
    )  # fmt: skip
    run.rules = {"join": "none_failed_min_one_success"}
    chose: list[Event] = [{"e": EventKind.RESULT, "t": NOW, "value": ["a", "c"]}]

    outcome = run.outcome(choose, SUCCESS, no_manifest, NOW, chose)
    run.ended(choose, outcome)

    assert outcome.skips == {"b": (StepStatus.SKIPPED, "not chosen by choose", SkipKind.BRANCH)}
    assert run.unrunnable() == {
        "after_b": (StepStatus.SKIPPED, "upstream b skipped", SkipKind.SKIPPED)
    }
    assert run.ready(run.steps["a"], NOW) and not run.ready(run.steps["join"], NOW)
    for key in ("a", "c"):
        run.steps[key].status = StepStatus.SUCCESS
    run.apply(run.unrunnable())
    assert run.ready(run.steps["join"], NOW)
    run.steps["join"].status = StepStatus.SUCCESS
    assert run.final_status() == RunStatus.SUCCESS  # skips a branch chose fail nothing


def test_a_false_short_circuit_skips_everything_downstream_whatever_its_rule() -> None:
    gate = attempt(step("gate"), 1, of=1)
    run = run_of(
        gate, step("a", "gate"), step("cleanup", "a", "other"), step("other"),
    )  # fmt: skip
    run.rules = {"cleanup": "all_done"}
    closed: list[Event] = [{"e": EventKind.RESULT, "t": NOW, "value": False}]

    outcome = run.outcome(gate, SUCCESS, no_manifest, NOW, closed)

    why = (StepStatus.SKIPPED, "short-circuited by gate", SkipKind.SHORT_CIRCUIT)
    assert outcome.skips == {"a": why, "cleanup": why}
    opened: list[Event] = [{"e": EventKind.RESULT, "t": NOW, "value": True}]
    assert run.outcome(gate, SUCCESS, no_manifest, NOW, opened).skips == {}


def test_a_run_with_a_step_skipped_by_a_failure_fails() -> None:
    run = run_of(step("a", status=StepStatus.SUCCESS), skipped("b", SkipKind.UPSTREAM_FAILED))
    assert run.final_status() == RunStatus.FAILED
    legacy = run_of(skipped("b", None))  # recorded before skips had kinds: a failure's
    assert legacy.final_status() == RunStatus.FAILED
    chosen = run_of(skipped("b", SkipKind.SHORT_CIRCUIT), skipped("c", SkipKind.SKIPPED))
    assert chosen.final_status() == RunStatus.SUCCESS


def test_a_mapped_step_waits_for_its_list_then_becomes_its_instances() -> None:
    source = step("list_files")
    mapped = step("process", "list_files")
    mapped.kind = MAP
    run = run_of(source, mapped, step("summarize", "process", "list_files"))
    run.maps = {"process": "list_files"}

    assert run.expansions() == [] and not run.ready(mapped, NOW)
    source.status = StepStatus.SUCCESS
    assert not run.ready(mapped, NOW)  # it never starts a process of its own
    assert run.expansions() == [("process", "list_files")]

    run.expanded("process", [(7, 0), (8, 1)], kind="python")

    assert list(run.steps) == ["list_files", "summarize", "process[0]", "process[1]"]
    assert run.steps["summarize"].upstream == ["process[0]", "process[1]", "list_files"]
    assert run.ready(run.steps["process[1]"], NOW)


def test_an_empty_list_maps_to_no_step_and_the_downstream_runs() -> None:
    source = step("list_files", status=StepStatus.SUCCESS)
    mapped = step("process", "list_files")
    mapped.kind = MAP
    run = run_of(source, mapped, step("summarize", "process"))
    run.maps = {"process": "list_files"}

    run.expanded("process", [], kind="python")

    assert run.steps["summarize"].upstream == []
    assert run.ready(run.steps["summarize"], NOW)


def test_a_mapped_step_whose_list_never_came_is_skipped_as_its_upstream() -> None:
    mapped = step("process", "list_files")
    mapped.kind = MAP
    run = run_of(step("list_files", status=StepStatus.FAILED), mapped)
    run.maps = {"process": "list_files"}
    run.rules = {"process": "all_done"}
    assert run.unrunnable() == {
        "process": (StepStatus.SKIPPED, "nothing to map over: upstream list_files failed",
                    UPSTREAM_FAILED),
    }  # fmt: skip
