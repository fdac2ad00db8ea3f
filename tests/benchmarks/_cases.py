"""Generated pipeline source for the comparison benchmark: the same trivial pipelines written
for dagtop, Dagster and Luigi.

Every step returns a small number; the pipelines differ only in how each tool spells them.
Names are shared across tools: a chain is `s0 -> s1 -> ... -> s{n-1}` (each adds one to its
upstream), a fan-out is `f0 ... f{n-1}` (independent), a partitioned asset is `daily`, and the
large definitions module holds `groups` chains of `per_group` assets (`g{g}_{i}`).

Luigi has no value store: each task writes its value to a file under the folder named by the
environment variable `BENCH_LUIGI_OUT` (a fresh one per run, or Luigi would skip the tasks as
already complete).
"""

from __future__ import annotations

PARTITION_START = "2025-01-01"


def _join(lines: list[str]) -> str:
    return "\n".join(lines) + "\n"


# --- dagtop ------------------------------------------------------------------------------------


def dagtop_chain(n: int) -> str:
    lines = ["from engine import asset", "", "", "@asset", "def s0():", "    return 0", ""]
    for i in range(1, n):
        lines += ["", "@asset", f"def s{i}(s{i - 1}):", f"    return s{i - 1} + 1", ""]
    return _join(lines)


def dagtop_fanout(n: int) -> str:
    lines = ["from engine import asset", ""]
    for i in range(n):
        lines += ["", "@asset", f"def f{i}():", f"    return {i}", ""]
    return _join(lines)


def dagtop_partitioned() -> str:
    return _join(
        [
            "from engine import BackfillPolicy, DailyPartitions, asset",
            "",
            f'days = DailyPartitions(start="{PARTITION_START}")',
            "",
            "",
            "@asset(partitions=days)",
            "def daily(context):",
            "    return context.partition",
            "",
            "",
            "@asset(partitions=days, backfill_policy=BackfillPolicy.single_run())",
            "def daily_range(context):",
            "    return {key: key for key in context.partition_keys}",
        ]
    )


def dagtop_many(groups: int, per_group: int) -> str:
    lines = ["from engine import asset", ""]
    for g in range(groups):
        for i in range(per_group):
            up = f"g{g}_{i - 1}" if i else ""
            lines += ["", f'@asset(group="g{g}")', f"def g{g}_{i}({up}):", "    return 1", ""]
    return _join(lines)


# --- Dagster -------------------------------------------------------------------------------------
# The multiprocess executor is named explicitly (it is also Dagster's default): every step in
# its own process, the isolation dagtop gives.

_DAGSTER_HEAD = ["from dagster import Definitions, asset, multiprocess_executor", ""]


def _dagster_defs(names: list[str]) -> list[str]:
    return [
        "",
        "defs = Definitions(",
        "    assets=[" + ", ".join(names) + "],",
        "    executor=multiprocess_executor,",
        ")",
    ]


def dagster_chain(n: int) -> str:
    lines = [*_DAGSTER_HEAD, "", "@asset", "def s0():", "    return 0", ""]
    for i in range(1, n):
        lines += ["", "@asset", f"def s{i}(s{i - 1}):", f"    return s{i - 1} + 1", ""]
    return _join(lines + _dagster_defs([f"s{i}" for i in range(n)]))


def dagster_fanout(n: int) -> str:
    lines = list(_DAGSTER_HEAD)
    for i in range(n):
        lines += ["", "@asset", f"def f{i}():", f"    return {i}", ""]
    return _join(lines + _dagster_defs([f"f{i}" for i in range(n)]))


def dagster_partitioned() -> str:
    # `dagster asset materialize --partition-range` needs a single-run backfill policy: the
    # whole range is one step that receives every key (Dagster's fastest way to backfill).
    # Its default IO manager cannot store one value per partition from a single run, so the
    # step returns None (Dagster then stores nothing; dagtop stores each partition's value).
    # `daily_each` is the same asset for one run per partition, storing its value.
    return _join(
        [
            "from dagster import (",
            "    BackfillPolicy,",
            "    DailyPartitionsDefinition,",
            "    Definitions,",
            "    asset,",
            "    multiprocess_executor,",
            ")",
            "",
            f'days = DailyPartitionsDefinition(start_date="{PARTITION_START}")',
            "",
            "",
            "@asset(partitions_def=days, backfill_policy=BackfillPolicy.single_run())",
            "def daily(context) -> None:",
            "    assert context.partition_keys",
            "",
            "",
            "@asset(partitions_def=days)",
            "def daily_each(context):",
            "    return context.partition_key",
            "",
            *_dagster_defs(["daily", "daily_each"]),
        ]
    )


def dagster_many(groups: int, per_group: int) -> str:
    lines = list(_DAGSTER_HEAD)
    names = []
    for g in range(groups):
        for i in range(per_group):
            up = f"g{g}_{i - 1}" if i else ""
            names.append(f"g{g}_{i}")
            lines += ["", f'@asset(group_name="g{g}")', f"def g{g}_{i}({up}):", "    return 1", ""]
    return _join(lines + _dagster_defs(names))


# --- Luigi ---------------------------------------------------------------------------------------

_LUIGI_HEAD = [
    "import os",
    "",
    "import luigi",
    "from luigi.tools.range import RangeDaily  # noqa: F401 - registers the task for the CLI",
    "",
    'OUT = os.environ["BENCH_LUIGI_OUT"]',
    "",
    "",
    "class Step(luigi.Task):",
    "    def output(self):",
    '        return luigi.LocalTarget(os.path.join(OUT, self.task_id + ".txt"))',
    "",
    "    def upstream(self):",
    "        if not self.input():",
    "            return 0",
    "        with self.input().open() as fh:",
    "            return int(fh.read())",
    "",
    "    def run(self):",
    "        value = self.upstream() + 1",
    '        with self.output().open("w") as fh:',
    "            fh.write(str(value))",
    "",
]


def luigi_chain(n: int) -> str:
    lines = [*_LUIGI_HEAD, "", "class S0(Step):", "    pass", ""]
    for i in range(1, n):
        lines += [
            "",
            f"class S{i}(Step):",
            "    def requires(self):",
            f"        return S{i - 1}()",
            "",
        ]
    return _join(lines)


def luigi_fanout(n: int) -> str:
    lines = list(_LUIGI_HEAD)
    for i in range(n):
        lines += ["", f"class F{i}(Step):", "    pass", ""]
    lines += [
        "",
        "class All(luigi.WrapperTask):",
        "    def requires(self):",
        "        return [" + ", ".join(f"F{i}()" for i in range(n)) + "]",
    ]
    return _join(lines)


def luigi_partitioned() -> str:
    return _join(
        [
            *_LUIGI_HEAD,
            "",
            "class Daily(Step):",
            "    date = luigi.DateParameter()",
        ]
    )
