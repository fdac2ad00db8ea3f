"""The soak's pipeline module; tests/soak/soak.py copies it into a throw-away project.

Not a test module: it is loaded by the dagtop loader of that project, never by pytest. Every
source of randomness is seeded (by the run id, the partition key or the attempt), so a run's
behaviour can be predicted from what the soak passed it:

- `ticker`: the target of a `* * * * *` schedule with catchup;
- `chaos`: does what `context.params["mode"]` says (or a mode drawn from the run id): succeed,
  fail every attempt, fail only the first attempt, sleep past its timeout, blow its memory
  limit, exit without reporting, or print a lot; or leave processes behind: succeed leaving
  helpers in its process group, in a session of its own and orphaned (`helpers`), or time out
  with children that ignore SIGTERM (`stubborn`). Each such process carries `LEFTOVER_MARKER`
  on its command line, so the soak can tell whether any outlived its run; `chaos_report`
  depends on it;
- `daily` / `daily_sum`: daily partitions for backfills (random sleeps, ~10% random failures);
- `daily_range`: the same backfilled in runs of up to 5 days (a backfill policy);
- `ingest`: the target of the `drops` file sensor on `<project>/inbox`;
- `soak_tasks`: a small Airflow-style pipeline with a shell step;
- `feed` -> `feed_clean` -> `feed_summary`: an eager chain (`Auto.eager()`): every `feed` the
  soak materializes must bring the other two up to date, never twice for one update.
"""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine import (
    Auto,
    BackfillPolicy,
    CheckResult,
    DailyPartitions,
    Pipeline,
    StepContext,
    asset,
    check,
    file_sensor,
    schedule,
    shell,
    task,
)

# <project>/pipelines/soak_pipeline.py -> <project>/inbox
INBOX = Path(__file__).resolve().parent.parent / "inbox"
MODES = (
    "ok", "ok", "ok", "ok", "fail", "flaky", "timeout", "memory", "exit", "noisy", "helpers",
    "stubborn",
)  # fmt: skip
TIMEOUT = 4.0
MEMORY_LIMIT_MIB = 120
LEFTOVER_MARKER = f"dagtop-soak-leftover:{INBOX.parent}"
"""On the command line of every process a chaos step leaves behind (unique to the soak)."""


def chaos_mode(context: StepContext) -> str:
    mode = context.params.get("mode")
    if mode is None:
        mode = random.Random(context.run_id).choice(MODES)
    return str(mode)


@asset(group="soak")
def ticker(context: StepContext) -> dict[str, Any]:
    return {"at": time.time(), "run": context.run_id}


@asset(
    group="soak",
    retries=2,
    retry_delay=0.2,
    timeout=TIMEOUT,
    memory_limit=f"{MEMORY_LIMIT_MIB}MiB",
)
def chaos(context: StepContext) -> dict[str, Any]:
    mode = chaos_mode(context)
    context.log.info("mode %s, attempt %s", mode, context.attempt)
    if mode == "fail":
        raise RuntimeError("chaos: planned failure")
    if mode == "flaky" and context.attempt == 1:
        raise RuntimeError("chaos: flaky first attempt")
    if mode == "timeout":
        time.sleep(TIMEOUT * 10)
    if mode == "memory":
        # Filled (not calloc'ed) memory, so every page counts in the resident set.
        hog = b"\x01" * (MEMORY_LIMIT_MIB * 3 * 1024 * 1024)
        time.sleep(TIMEOUT * 10)
        del hog
    if mode == "exit":
        os._exit(3)
    if mode == "helpers":
        leave_helpers()
    if mode == "stubborn":
        start_stubborn_children()
        time.sleep(TIMEOUT * 10)
    if mode == "noisy":
        for i in range(2000):
            print(f"noisy line {i} " + "x" * 100)
    time.sleep(random.Random(f"{context.run_id}:{context.attempt}").uniform(0.0, 0.5))
    return {"mode": mode, "attempt": context.attempt}


# --- processes left behind (the leftovers faults) ---------------------------------------------

_SLEEPER = "import signal, sys, time\n{ignore}time.sleep(3600)\n"


def _helper(*, new_session: bool = False, ignore_term: bool = False) -> None:
    ignore = "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else ""
    code = _SLEEPER.format(ignore=ignore)
    subprocess.Popen(
        [sys.executable, "-c", code, LEFTOVER_MARKER],
        start_new_session=new_session,
        stdin=subprocess.DEVNULL,
    )


def leave_helpers() -> None:
    """Helpers the step never stops: one in its group, one that called setsid(), and one in
    a session of its own whose parent exits at once."""
    _helper()
    _helper(new_session=True)
    orphaner = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', {_SLEEPER.format(ignore='')!r}, sys.argv[1]],"
        " start_new_session=True)\n"
    )
    subprocess.run([sys.executable, "-c", orphaner, LEFTOVER_MARKER], check=True)


def start_stubborn_children() -> None:
    """Children that ignore SIGTERM, in the step's group: only SIGKILL ends them."""
    for _ in range(2):
        _helper(ignore_term=True)
    time.sleep(0.3)  # time for them to start ignoring SIGTERM


@check(asset="chaos")
def chaos_has_mode(chaos: dict[str, Any]) -> CheckResult:
    return CheckResult(passed="mode" in chaos, metadata={"mode": chaos.get("mode")})


@asset(group="soak")
def chaos_report(chaos: dict[str, Any]) -> str:
    return f"{chaos['mode']} after {chaos['attempt']} attempt(s)"


days = DailyPartitions(start="2024-01-01", end="2025-01-01")


@asset(group="soak", partitions=days, retries=1, retry_delay=0.1)
def daily(context: StepContext) -> dict[str, Any]:
    rng = random.Random(f"{context.partition}:{context.run_id}:{context.attempt}")
    time.sleep(rng.uniform(0.05, 0.6))
    if rng.random() < 0.1:
        raise RuntimeError(f"daily {context.partition}: random failure")
    return {"day": context.partition, "n": rng.randint(0, 1000)}


@asset(group="soak", partitions=days)
def daily_sum(daily: dict[str, Any]) -> int:
    return int(daily["n"]) * 2


@asset(
    group="soak", partitions=days, backfill_policy=BackfillPolicy.multi_run(5), retries=1,
    retry_delay=0.1,
)  # fmt: skip
def daily_range(context: StepContext) -> dict[str, dict[str, Any]]:
    """Runs of up to 5 days, each one call: a kill -9 or a failure lands mid-range."""
    first = context.partition_keys[0]
    rng = random.Random(f"{first}:{context.run_id}:{context.attempt}")
    for _day in context.partition_keys:
        time.sleep(rng.uniform(0.05, 0.3))
    if rng.random() < 0.1:
        raise RuntimeError(f"daily_range from {first}: random failure")
    return {day: {"day": day, "n": rng.randint(0, 1000)} for day in context.partition_keys}


@asset(group="soak")
def ingest(context: StepContext) -> dict[str, Any]:
    path = Path(context.params["path"])
    data = path.read_bytes()
    context.add_metadata({"file": path.name, "size": len(data)})
    return {"path": str(path), "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@asset(group="soak")
def feed(context: StepContext) -> dict[str, Any]:
    return {"seq": context.params.get("seq"), "run": context.run_id}


@asset(group="soak", auto=Auto.eager())
def feed_clean(feed: dict[str, Any]) -> dict[str, Any]:
    return {**feed, "clean": True}


@asset(group="soak", auto=Auto.eager())
def feed_summary(feed_clean: dict[str, Any]) -> str:
    return f"feed {feed_clean['seq']} from run {feed_clean['run']}"


schedule("* * * * *", "ticker", name="every_minute", catchup=True)
file_sensor("drops", path=str(INBOX), target="ingest")


with Pipeline("soak_tasks", retries=1, retry_delay=0.1):

    @task
    def produce(context: StepContext) -> int:
        return random.Random(context.run_id).randint(1, 100)

    @task
    def consume(produce: int) -> int:
        return produce * 2

    done = shell("echo done $DAGTOP_RUN_ID", id="done")
    produce >> consume >> done
