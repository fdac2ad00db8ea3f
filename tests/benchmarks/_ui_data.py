"""Data for the UI benchmark: generated pipeline files, a seeded run history, a big log file.

The history goes through the engine's own code: `plan` builds each run and its steps from the
real manifest, `transition_*` moves them to where a finished run ends, and `repo.add_run`
records them, a few thousand runs per transaction so that 10,000 runs take seconds.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

LOG_LINE = (
    "2026-01-15 03:12:{sec:02d},{ms:03d} INFO  trainer  epoch {epoch:>3} batch {batch:>6} "
    "loss={loss:.4f} lr=0.00030 throughput={rate:>5} samples/s\n"
)
LAST_LINE = "the last line of the log"


def layered_dag(prefix: str, n: int, group: str, seed: int, width: int = 15) -> str:
    """A pipeline file of `n` trivial assets in one group, in layers of about `width`: each
    asset reads one or two of the layer before, and now and then one from further up (a long
    edge), as real feature and training graphs do."""
    rng = random.Random(seed)
    names = [f"{prefix}_{i:03d}" for i in range(n)]
    layers = [names[i : i + width] for i in range(0, n, width)]
    lines = ["from engine import asset", ""]
    for depth, layer in enumerate(layers):
        for name in layer:
            ups: list[str] = []
            if depth:
                above = layers[depth - 1]
                ups = rng.sample(above, k=min(len(above), rng.randint(1, 2)))
                if depth > 2 and rng.random() < 0.15:
                    far = rng.choice(layers[rng.randrange(0, depth - 1)])
                    ups.append(far)
            args = ", ".join(dict.fromkeys(ups))
            lines += ["", f'@asset(group="{group}")', f"def {name}({args}):", "    return 1", ""]
    return "\n".join(lines) + "\n"


def chatty_asset(rate: int, seconds: float) -> str:
    """An asset that prints `rate` lines a second for `seconds`, each line carrying the time it
    was written (so the UI's lag behind the writer can be read off the screen)."""
    return f"""\
import sys
import time

from engine import asset
from engine.status import RunStatus, StepStatus

RATE = {rate}
SECONDS = {seconds}


@asset(group="tail")
def chatty():
    total = int(RATE * SECONDS)
    start = time.monotonic()
    n = 0
    out = sys.stdout
    while n < total:
        due = min(total, int((time.monotonic() - start) * RATE) + 1)
        now = time.time()
        while n < due:
            line = f"{{now:.3f}} INFO  chatty line {{n:>8}} of {{total}}"
            out.write(f"{{line}}: loss=0.{{n % 9973:04d}}\\n")
            n += 1
        out.flush()  # lines reach the log file as they are written, not in 8 KiB blocks
        time.sleep(0.005)
    return n
"""


def seed_history(client: Any, runs: int, seed: int = 7, chunk: int = 2_500) -> int:
    """Record `runs` finished runs over the last 30 days (most succeed, some fail, a few are
    canceled), with a materialization for every step that succeeded. Returns the step count."""
    from engine.history.plan import RunRequest, plan
    from engine.status import RunStatus, StepStatus, transition_run, transition_step
    from engine.storage import repo
    from engine.storage.db import session_scope
    from engine.storage.models import Materialization

    manifest = client.load()
    names = sorted(manifest.assets)
    rng = random.Random(seed)
    now = time.time()
    start = now - 30 * 86_400
    times = sorted(rng.uniform(start, now - 60) for _ in range(runs))
    requests = []
    for t in times:
        name = rng.choice(names)
        # Most runs are one asset (a schedule, a sensor, a key press); some bring upstream along.
        selection = f"*{name}" if rng.random() < 0.2 else name
        trigger = rng.choice(("manual", "schedule", "schedule", "sensor"))
        requests.append((t, RunRequest(selection=(selection,), trigger=trigger)))
    # Only the newest materialization of an asset keeps its value, as the engine leaves it.
    planned = []
    for t, request in requests:
        run, steps = plan(manifest, request, now=t)
        planned.append((t, run, steps))
    outcome = [rng.random() for _ in planned]
    newest: dict[str, int] = {}
    for i, (_t, _run, steps) in enumerate(planned):
        if outcome[i] >= 0.08:
            for step in steps:
                newest[step.key] = i
    values = client.paths.home / "values"
    total_steps = 0
    for lo in range(0, len(planned), chunk):
        with session_scope(client.db) as s:
            mats = []
            for i in range(lo, min(lo + chunk, len(planned))):
                t, run, steps = planned[i]
                failed_at = rng.randrange(len(steps)) if outcome[i] < 0.08 else None
                canceled = outcome[i] < 0.01
                transition_run(run, RunStatus.RUNNING)
                run.started_at = clock = t + rng.uniform(0.01, 0.2)
                for k, step in enumerate(steps):
                    if failed_at is not None and k > failed_at:
                        why = f"upstream {steps[failed_at].key} failed"
                        transition_step(
                            step, StepStatus.CANCELED if canceled else StepStatus.SKIPPED
                        )
                        step.error = "canceled" if canceled else why
                        continue
                    transition_step(step, StepStatus.RUNNING)
                    step.attempts = 1
                    step.started_at = clock
                    clock += rng.uniform(0.02, 30.0)
                    step.ended_at = clock
                    step.peak_rss_bytes = rng.randint(40, 900) << 20
                    step.cpu_seconds = round((clock - step.started_at) * 0.9, 2)
                    if k == failed_at:
                        transition_step(step, StepStatus.FAILED)
                        step.exit_code = 1
                        step.error = "ValueError: input has 3 rows with a null id"
                        continue
                    transition_step(step, StepStatus.SUCCESS)
                    step.exit_code = 0
                    keep = newest.get(step.key) == i
                    mats.append(
                        Materialization(
                            asset=step.key,
                            run_id=run.id,
                            created_at=clock,
                            metadata_json=json.dumps({"rows": rng.randint(10, 10**6)}),
                            code_version=manifest.assets[step.key].code_version,
                            value_path=str(values / step.key / f"{run.id}.1.pkl") if keep else None,
                            value_size=rng.randint(100, 10**7),
                        )
                    )
                if failed_at is None:
                    transition_run(run, RunStatus.SUCCESS)
                else:
                    transition_run(run, RunStatus.CANCELED if canceled else RunStatus.FAILED)
                    run.error = f"step {steps[failed_at].key} failed"
                run.ended_at = run.updated_at = clock
                repo.add_run(s, run, steps)
                total_steps += len(steps)
            s.add_all(mats)
    return total_steps


def seed_finished_attempt(client: Any, asset: str) -> tuple[str, Path]:
    """Record one finished run of `asset` with one attempt; returns (run id, its log path)."""
    from engine.executor.launch import log_path_for
    from engine.history.plan import RunRequest, plan
    from engine.status import RunStatus, StepStatus, transition_run, transition_step
    from engine.storage import repo
    from engine.storage.db import session_scope
    from engine.storage.models import StepAttempt

    now = time.time()
    run, steps = plan(client.load(), RunRequest(selection=(asset,)), now=now - 120)
    (step,) = steps
    log_path = log_path_for(client.paths, run.id, asset, 1)
    transition_run(run, RunStatus.RUNNING)
    transition_step(step, StepStatus.RUNNING)
    run.started_at = step.started_at = now - 119
    transition_step(step, StepStatus.SUCCESS)
    transition_run(run, RunStatus.SUCCESS)
    run.ended_at = run.updated_at = step.ended_at = now - 5
    step.attempts, step.exit_code, step.log_path = 1, 0, str(log_path)
    with session_scope(client.db) as s:
        repo.add_run(s, run, steps)
        s.flush()
        s.add(
            StepAttempt(
                step_id=step.id or 0,
                run_id=run.id,
                key=asset,
                attempt=1,
                status=StepStatus.SUCCESS,
                log_path=str(log_path),
                started_at=now - 119,
                ended_at=now - 5,
                exit_code=0,
                worker="local",
            )
        )
    return run.id, log_path


def write_big_log(path: Path, size: int) -> int:
    """Write a log of about `size` bytes (a block of realistic lines, repeated) ending with
    `LAST_LINE`; returns its number of lines."""
    block_lines = []
    for i in range(8_000):
        block_lines.append(
            LOG_LINE.format(
                sec=i % 60, ms=i % 1000, epoch=i // 500, batch=i, loss=1 / (i + 1), rate=9000 + i
            )
        )
    block = "".join(block_lines).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    repeats = max(1, size // len(block))
    with path.open("wb") as fh:
        for _ in range(repeats):
            fh.write(block)
        fh.write(LAST_LINE.encode() + b"\n")
    os.sync()  # written back now, not while the UI reads it
    return repeats * len(block_lines) + 1
