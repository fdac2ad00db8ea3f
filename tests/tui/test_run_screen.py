"""The run screen: snapshots against the fake client with frozen data, keys, and one real run.

The fake serves one run, its attempts and their samples, built from the facade's own view
classes with fixed times; the app's clock is frozen, and TZ is UTC (conftest.py), so every
snapshot is stable.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual import events
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Label, Static
from textual.widgets._footer import FooterKey

from engine.client import AttemptView, Client, RunRequest, RunView, SampleView, StepView
from engine.client_api import ClientAPI
from engine.status import RunStatus, StepStatus
from tests.tui.fakes import FakeClient, Host
from tests.tui.waits import until
from tui.screens.confirm import ConfirmScreen
from tui.screens.run import RunCommands, RunScreen, default_step
from tui.widgets.footer import KeyFooter
from tui.widgets.log_view import LogView

T0 = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC
MiB = 1 << 20


# --- a run, its attempts and their samples ------------------------------------------------


def step_view(
    key: str, status: StepStatus, attempts: int, max_attempts: int, **kw: Any
) -> StepView:
    base: dict[str, Any] = dict(
        key=key, kind="asset", status=StepStatus(status), attempts=attempts,
        max_attempts=max_attempts,
        exit_code=None, error=None, peak_rss_bytes=None, cpu_seconds=None, log_path=None,
        started_at=None, ended_at=None, upstream=(),
    )  # fmt: skip
    base.update(kw)
    return StepView(**base)


def attempt_view(
    attempt_id: int,
    key: str,
    attempt: int,
    status: StepStatus,
    start: float,
    end: float | None,
    log: Path,
    **kw: Any,
) -> AttemptView:
    base: dict[str, Any] = dict(
        id=attempt_id, run_id="4f2a9c1e77b0", key=key, attempt=attempt,
        status=StepStatus(status),
        started_at=start, ended_at=end, pid=4242, exit_code=None, error=None,
        peak_rss_bytes=None, cpu_seconds=None, log_path=str(log),
    )  # fmt: skip
    base.update(kw)
    return AttemptView(**base)


TRAIN_LOG = """\
15:06:44.120 INFO    loading 1,437 digits from raw_digits
15:06:44.305 INFO    fitting RandomForestClassifier(n_estimators=200) on 1,437 rows
15:06:45.002 WARNING feature 'pixel_0' is constant; dropped
15:06:45.113 DEBUG   tree 1/200 depth=14
15:06:46.870 INFO    out-of-bag score 0.971
allocating the confusion matrix cache
15:06:47.500 ERROR   worker ran out of memory while caching predictions
Traceback (most recent call last):
  File "/srv/ml-project/pipelines/ml_training.py", line 88, in trained_model
    cache = np.zeros((n, n, 64))
            ^^^^^^^^^^^^^^^^^^^^
MemoryError: Unable to allocate 2.1 GiB for an array with shape (1437, 1437, 64)
dagtop: step failed: memory limit exceeded: peak 2.1 GiB of 2 GiB
"""


def failed_run(tmp: Path) -> FakeClient:
    """trained_model failed three times (the last by memory); deployed was skipped."""
    logs = tmp / "logs"
    logs.mkdir(exist_ok=True)
    (logs / "raw_digits.1.log").write_text("15:06:41.010 INFO    read 1,797 rows\n")
    (logs / "validated_digits.1.log").write_text("15:06:42.210 INFO    360 rows held out\n")
    for n in (1, 2):
        (logs / f"trained_model.{n}.log").write_text(
            f"15:06:4{n}.000 INFO    attempt {n}\ndagtop: step failed: killed by SIGKILL\n"
        )
    (logs / "trained_model.3.log").write_text(TRAIN_LOG)
    reason = "memory limit exceeded: peak 2.1 GiB of 2 GiB"
    success, failed = StepStatus.SUCCESS, StepStatus.FAILED
    attempts = [
        attempt_view(1, "raw_digits", 1, success, T0 + 0.2, T0 + 0.6, logs / "raw_digits.1.log",
                     peak_rss_bytes=82 * MiB, cpu_seconds=0.3),
        attempt_view(2, "validated_digits", 1, success, T0 + 0.7, T0 + 0.9,
                     logs / "validated_digits.1.log", peak_rss_bytes=80 * MiB, cpu_seconds=0.1),
        attempt_view(3, "trained_model", 1, failed, T0 + 1.0, T0 + 2.5,
                     logs / "trained_model.1.log", error="killed by SIGKILL"),
        attempt_view(4, "trained_model", 2, failed, T0 + 3.5, T0 + 4.0,
                     logs / "trained_model.2.log", error="killed by SIGKILL"),
        attempt_view(5, "trained_model", 3, failed, T0 + 4.2, T0 + 8.3,
                     logs / "trained_model.3.log", error=reason,
                     peak_rss_bytes=2150 * MiB, cpu_seconds=7.9),
    ]  # fmt: skip
    steps = (
        step_view("raw_digits", success, 1, 1, started_at=T0 + 0.2, ended_at=T0 + 0.6,
                  peak_rss_bytes=82 * MiB, cpu_seconds=0.3),
        step_view("validated_digits", success, 1, 1, started_at=T0 + 0.7, ended_at=T0 + 0.9,
                  peak_rss_bytes=80 * MiB, cpu_seconds=0.1, upstream=("raw_digits",)),
        step_view("trained_model", failed, 3, 3, started_at=T0 + 1.0, ended_at=T0 + 8.3,
                  peak_rss_bytes=2150 * MiB, cpu_seconds=7.9, error=reason,
                  upstream=("validated_digits",)),
        step_view("deployed", StepStatus.SKIPPED, 0, 1, error="upstream trained_model failed",
                  upstream=("trained_model",)),
    )  # fmt: skip
    run = RunView(
        id="4f2a9c1e77b0", kind="assets", status=RunStatus.FAILED, target="*trained_model",
        partition=None, params={}, trigger="manual", created_at=T0, started_at=T0 + 0.1,
        ended_at=T0 + 8.4, steps=steps, checks=(),
    )  # fmt: skip
    samples = {
        5: [SampleView(T0 + 4.2 + i * 0.25, cpu, rss * MiB) for i, (cpu, rss) in enumerate(
            [(12, 90), (97, 300), (99, 700), (98, 1100), (99, 1500), (100, 1800), (99, 2150)]
        )],
    }  # fmt: skip
    return FakeClient(runs=[run], attempts=attempts, samples=samples)


def running_run(tmp: Path) -> FakeClient:
    """The same run, still in trained_model's first attempt (the clock is frozen at T0 + 9)."""
    client = failed_run(tmp)
    attempts = [a for a in client.attempt_list if a.key != "trained_model"]
    log = tmp / "logs" / "trained_model.run.log"
    log.write_text("".join(TRAIN_LOG.splitlines(keepends=True)[:5]))
    attempts.append(
        attempt_view(3, "trained_model", 1, StepStatus.RUNNING, T0 + 1.0, None, log,
                     peak_rss_bytes=612 * MiB, cpu_seconds=7.9)
    )  # fmt: skip
    failed = client.runs_list[0]
    steps = list(failed.steps)
    steps[2] = replace(steps[2], status=StepStatus.RUNNING, attempts=1, ended_at=None,
                       error=None, peak_rss_bytes=612 * MiB)  # fmt: skip
    steps[3] = replace(steps[3], status=StepStatus.QUEUED, error=None)
    running = replace(failed, status=RunStatus.RUNNING, ended_at=None, steps=tuple(steps))
    client.runs_list = [running]
    client.attempt_list = attempts
    client.sample_lists = {3: [SampleView(T0 + 1 + i, c, r * MiB) for i, (c, r) in enumerate(
        [(10, 100), (80, 250), (97, 400), (99, 520), (98, 600), (99, 612)])]}  # fmt: skip
    return client


class RunApp(Host):
    """A host for the run screen of one run (its name is the title in the snapshots)."""

    def __init__(
        self, client: ClientAPI, run_id: str, step: str | None = None, now: float = T0 + 9
    ) -> None:
        super().__init__(client, lambda: RunScreen(run_id, step), now)


async def settle(pilot: Pilot[None], lines: int = 1) -> RunScreen:
    """Wait until the run is shown and its log read; the run screen."""
    app = pilot.app
    deadline = time.monotonic() + 15  # a bound for a loaded machine; it returns once read
    while time.monotonic() < deadline:
        await pilot.pause(0.02)
        screen = app.screen
        if isinstance(screen, RunScreen) and screen.run is not None:
            log = screen.query_one(LogView)
            if log.line_count >= lines and not log._source.scanning:
                break
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, RunScreen)
    return screen


# --- snapshots --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(160, 48), (100, 30)])
def test_snapshot_failed_run(snap_compare: Any, tmp_path: Path, size: tuple[int, int]) -> None:
    app = RunApp(failed_run(tmp_path), "4f2a")
    assert snap_compare(app, terminal_size=size, run_before=lambda pilot: settle(pilot, 13))


def test_snapshot_running_run(snap_compare: Any, tmp_path: Path) -> None:
    app = RunApp(running_run(tmp_path), "4f2a")
    assert snap_compare(app, terminal_size=(160, 48), run_before=lambda pilot: settle(pilot, 5))


# --- behaviour with the fake ------------------------------------------------------------------


def test_default_step_prefers_asked_then_failed_then_running_then_last(tmp_path: Path) -> None:
    run = failed_run(tmp_path).runs_list[0]
    assert default_step(run, "raw_digits") == "raw_digits"
    assert default_step(run, None) == "trained_model"
    assert default_step(run, "nope") == "trained_model"
    running = running_run(tmp_path).runs_list[0]
    assert default_step(running, None) == "trained_model"
    succeeded = tuple(replace(s, status=StepStatus.SUCCESS) for s in running.steps[:2])
    done = replace(running, steps=succeeded)
    assert default_step(done, None) == "validated_digits"


async def test_failed_step_shows_reason_and_its_last_attempt(tmp_path: Path) -> None:
    client = failed_run(tmp_path)
    app = RunApp(client, "4f2a")
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await settle(pilot, 13)
        assert screen.step == "trained_model"
        table = screen.query_one("#steps", DataTable)
        assert "memory limit exceeded" in str(table.get_cell("trained_model", "reason"))
        assert "upstream trained_model failed" in str(table.get_cell("deployed", "reason"))
        panel = screen.query_one("#log-panel")
        assert panel.border_title == "trained_model · attempt 3 of 3 · failed"
        log = screen.query_one(LogView)
        assert log.line_text(log.line_count - 1).startswith("dagtop: step failed: memory limit")
        assert screen.check_action("rerun", ()) is True
        assert screen.check_action("cancel_run", ()) is False  # a finished run can't be canceled

        await pilot.press("left_square_bracket")  # attempt 2
        await settle(pilot)
        assert panel.border_title == "trained_model · attempt 2 of 3 · failed"
        assert log.line_text(0) == "15:06:42.000 INFO    attempt 2"
        await pilot.press("left_square_bracket", "left_square_bracket")  # stops at attempt 1
        await settle(pilot)
        assert panel.border_title.startswith("trained_model · attempt 1 of 3")
        await pilot.press("right_square_bracket", "right_square_bracket")
        await settle(pilot)
        assert screen.attempt_no is None  # back on the latest: follows new retries
        assert panel.border_title.startswith("trained_model · attempt 3 of 3")

        await pilot.press("r")  # re-run failed
        await app.workers.wait_for_complete()
        assert client.reruns == ["4f2a9c1e77b0"]


async def test_the_log_header_says_where_the_attempt_ran(tmp_path: Path) -> None:
    client = running_run(tmp_path)
    client.attempt_list = [
        replace(a, host="gpu-box", worker="tcp://10.0.0.7:40211") for a in client.attempt_list
    ]
    app = RunApp(client, "4f2a")
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await settle(pilot, 5)

        def info() -> str:
            return str(screen.query_one("#log-info", Label).render())

        await until(lambda: info() == "pid 4242 on gpu-box (tcp://10.0.0.7:40211)", pilot)
        await pilot.press("tab", "up", "up")  # raw_digits: finished, on the same worker
        await until(lambda: screen.step == "raw_digits", pilot)
        await until(lambda: info() == "ran on gpu-box (tcp://10.0.0.7:40211)", pilot)


async def test_selecting_a_step_switches_the_log(tmp_path: Path) -> None:
    app = RunApp(failed_run(tmp_path), "4f2a")
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await settle(pilot, 13)
        await pilot.press("tab")
        assert screen.query_one("#steps", DataTable).has_focus
        await pilot.press("up", "up")  # raw_digits
        await settle(pilot)
        assert screen.step == "raw_digits"
        log = screen.query_one(LogView)
        assert log.visible_text() == ["15:06:41.010 INFO    read 1,797 rows"]
        await pilot.press("down", "down", "down")  # deployed never ran: a placeholder
        await pilot.pause(0.1)
        assert screen.step == "deployed"
        assert log.line_count == 0 and "skipped" in log.placeholder
        await pilot.press("tab")
        assert log.has_focus


async def test_cancel_asks_first_then_reaches_the_facade(tmp_path: Path) -> None:
    client = running_run(tmp_path)
    app = RunApp(client, "4f2a")
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot, 5)
        assert isinstance(app.screen, RunScreen)
        assert app.screen.check_action("rerun", ()) is False
        await pilot.press("c")
        await pilot.pause()
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")  # keep running
        await pilot.pause()
        assert client.canceled == []
        await pilot.press("c")
        await pilot.pause()
        await pilot.press("y")
        await pilot.pause(0.1)
        await app.workers.wait_for_complete()
        assert client.canceled == ["4f2a9c1e77b0"]
        assert isinstance(app.screen, RunScreen)


async def test_search_from_the_screen_and_escape(tmp_path: Path) -> None:
    client = failed_run(tmp_path)
    app = RunApp(client, "4f2a")
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await settle(pilot, 13)
        log = screen.query_one(LogView)
        search = screen.query_one("#search", Input)
        await pilot.press("slash", "x", "escape")  # escape first closes the search box
        assert isinstance(app.screen, RunScreen) and not search.display
        assert screen.check_action("next_match", ()) is False  # no term: n/N hidden
        await pilot.press("slash")
        assert search.has_focus
        await pilot.press(*"fitting", "enter")  # typing "f", "g"... must not trigger bindings
        await pilot.pause(0.2)
        assert log.follow is False or log.match_line is not None
        assert log.match_line == 1
        assert not search.display and log.has_focus
        assert screen.check_action("next_match", ()) is True
        assert "/fitting" in str(screen.query_one("#log-panel").border_subtitle)
        # Typed in one burst (fast, or pasted), the letters after "/" are still the term:
        # on this failed run, "r" reaching the screen would re-run it.
        for char in "/error":
            app.post_message(events.Key("slash" if char == "/" else char, char))
        await until(lambda: search.value == "error", pilot)
        assert search.has_focus and client.reruns == []
        await pilot.press("slash")  # in the box "/" is text
        assert search.value == "error/"
        await pilot.press("escape", "escape")
        await pilot.pause()
        assert not isinstance(app.screen, RunScreen)  # escape went back


async def test_unknown_run_says_so_without_crashing(tmp_path: Path) -> None:
    app = RunApp(failed_run(tmp_path), "zzzz")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.3)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        title = screen.query_one("#run-title")
        assert "no run 'zzzz'" in str(title.render())


async def test_missing_log_file_shows_a_note_and_appears_later(tmp_path: Path) -> None:
    client = running_run(tmp_path)
    log_path = Path(client.attempt_list[-1].log_path)
    log_path.unlink()
    app = RunApp(client, "4f2a")
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.3)
        screen = app.screen
        assert isinstance(screen, RunScreen)
        log = screen.query_one(LogView)
        assert log.missing and log.line_count == 0
        log_path.write_text("15:06:44.120 INFO    finally\n")
        await settle(pilot)
        assert log.visible_text() == ["15:06:44.120 INFO    finally"]


# --- a real engine ----------------------------------------------------------------------------

CHATTY = """
import time

from engine import asset


@asset
def chatty():
    for i in range(75):
        print(f"chatty line {i:03d}")
        time.sleep(0.02)
    print("chatty done")
    return 75
"""


@pytest.fixture
def real_client(tmp_path: Path) -> Iterator[Client]:
    pipelines = tmp_path / "project" / "pipelines"
    pipelines.mkdir(parents=True)
    (pipelines / "chatty.py").write_text(CHATTY)
    (tmp_path / "project" / "dagtop.toml").write_text("max_workers = 2\n")
    client = Client(home=tmp_path / "home", pipelines=pipelines)
    engine = client.start_engine()
    try:
        yield client
    finally:
        engine.stop()


@pytest.mark.serial
@pytest.mark.timeout(60)
async def test_real_run_log_grows_while_following_then_ends(
    real_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown: list[int] = []  # the line count after each batch the log view published
    publish = LogView._publish

    def spy(self: LogView, *args: Any) -> None:
        publish(self, *args)
        shown.append(self.line_count)

    monkeypatch.setattr(LogView, "_publish", spy)
    run_id = real_client.submit(RunRequest(selection=("chatty",)))
    app = RunApp(real_client, run_id)
    app.clock = time.time
    seen: list[int] = []
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        assert isinstance(screen, RunScreen)
        log = screen.query_one(LogView)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            await pilot.pause(0.1)
            seen.append(log.line_count)
            if screen.run is not None and screen.run.finished and not log.live:
                break
        await settle(pilot, 77)
        assert screen.run is not None and screen.run.status == RunStatus.SUCCESS, screen.run
        assert log.follow
        assert log.line_count == 77  # the step's 76 lines, then dagtop's on how it ended
        assert log.visible_text()[-2:] == ["chatty done", "dagtop: step succeeded"]
        # It grew while the step ran and we followed: batches on the way up to 76.
        growing = sorted(set(n for n in shown if 0 < n < 76))
        assert len(growing) >= 2, (shown, seen)
        assert screen.query_one("#log-panel").border_title == "chatty · attempt 1 · success"


async def test_follow_toggle_shows_in_the_title_and_palette_lists_actions(tmp_path: Path) -> None:
    app = RunApp(running_run(tmp_path), "4f2a")
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await settle(pilot, 5)
        panel = screen.query_one("#log-panel")
        assert panel.border_title == "trained_model · attempt 1 · following"
        assert "▼ live" in str(panel.border_subtitle)
        await pilot.press("f")
        await pilot.pause()
        assert panel.border_title == "trained_model · attempt 1 · paused"
        assert "⏸" in str(panel.border_subtitle)
        await pilot.press("G")
        await pilot.pause()
        assert panel.border_title.endswith("following")

        provider = RunCommands(screen)
        names = [str(hit.prompt) async for hit in provider.discover()]
        assert "Cancel run" in names and "Search log" in names
        assert "Re-run failed steps" not in names  # the run is still going


async def test_polling_an_unchanged_run_leaves_the_footer_alone(tmp_path: Path) -> None:
    # Textual rebuilds the whole footer on every bindings refresh: done on every poll, that
    # cost a full re-layout twice a second while a run was active (and slowed the live log).
    client = running_run(tmp_path)
    app = RunApp(client, "4f2a")
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await settle(pilot, 5)
        refreshed: list[object] = []
        screen.bindings_updated_signal.subscribe(screen, refreshed.append)
        reads = len(client.reads)
        while len(client.reads) < reads + 3:  # three more polls of the same, still running run
            await pilot.pause(0.1)
        await pilot.pause()
        assert refreshed == []
        await pilot.press("slash")
        await pilot.press(*"INFO", "enter")  # a search: n/N become available
        await pilot.pause()
        assert refreshed


async def test_the_footer_dims_its_keys_in_place_and_rebuilds_only_for_other_keys(
    tmp_path: Path,
) -> None:
    # Textual's Footer remounts every key on each focus change (~20-170 ms a time).
    app = RunApp(failed_run(tmp_path), "4f2a")
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot, 13)
        footer = app.screen.query_one(KeyFooter)

        def keys() -> dict[str, FooterKey]:
            return {key.action: key for key in footer.query(FooterKey)}

        before = keys()
        assert before["next_attempt"].has_class("-disabled")  # the last attempt is shown
        assert not before["prev_attempt"].has_class("-disabled")
        await pilot.press("tab")  # the focus moves, the keys stay
        await pilot.press("left_square_bracket")  # attempt 2 of 3: `]` applies now
        await settle(pilot)
        after = keys()
        assert after.keys() == before.keys()
        assert all(after[action] is key for action, key in before.items())
        assert not after["next_attempt"].has_class("-disabled")
        assert not after["next_attempt"]._disabled

        await pilot.press("slash", *"INFO", "enter")  # a search: n and N join the keys
        deadline = time.monotonic() + 5
        while "next_match" not in keys() and time.monotonic() < deadline:
            await pilot.pause(0.05)
        assert {"next_match", "prev_match"} <= keys().keys()


async def test_an_automated_run_says_why_it_was_requested(tmp_path: Path) -> None:
    client = failed_run(tmp_path)
    client.runs_list = [
        replace(client.runs_list[0], trigger="auto", reason="upstream cleaned updated at 09:01")
    ]
    app = RunApp(client, "4f2a")
    async with app.run_test(size=(160, 48)) as pilot:
        screen = await settle(pilot, 13)
        title = str(screen.query_one("#run-title", Static).render())
        assert "  auto  " in title and title.endswith("(upstream cleaned updated at 09:01)")
