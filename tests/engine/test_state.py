"""The executor's rules, read from its state in memory alone: no storage, no process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.executor.state import (
    MAX_RETRY_DELAY,
    Ending,
    RunState,
    StepState,
    may_claim,
    retry_delay,
)
from engine.loading.manifest import Manifest
from engine.protocol.worker import EventKind
from engine.status import RunStatus, StepStatus

if TYPE_CHECKING:
    from engine.protocol.worker import CheckEvent, Event

NOW = 1_000.0
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
    assert run.unrunnable() == {"b": (StepStatus.SKIPPED, "blocking check positive on a failed")}
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
        "b": (StepStatus.SKIPPED, "upstream a failed"),
        "c": (StepStatus.SKIPPED, "upstream b skipped"),
    }
    run.apply(updates)
    assert [st.status for st in run.steps.values()][1:3] == [StepStatus.SKIPPED] * 2


def test_a_cancel_ends_every_step_still_waiting() -> None:
    run = run_of(
        step("a", status=StepStatus.RUNNING), step("b", "a"),
        step("c", status=StepStatus.RETRYING), canceling=True,
    )  # fmt: skip
    assert run.unrunnable() == {
        "b": (StepStatus.CANCELED, "canceled by user"),
        "c": (StepStatus.CANCELED, "canceled by user"),
    }


def test_a_run_is_claimed_only_from_no_live_engine() -> None:
    def alive(owner: str) -> bool:
        return owner == "live"

    assert may_claim(RunStatus.QUEUED, None, "me", alive)
    assert may_claim(RunStatus.RUNNING, "me", "me", alive)
    assert may_claim(RunStatus.RUNNING, "dead", "me", alive)
    assert not may_claim(RunStatus.RUNNING, "live", "me", alive)
    assert not may_claim(RunStatus.SUCCESS, None, "me", alive)
