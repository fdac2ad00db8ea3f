"""Unit-testing pipelines without the orchestrator (as Dagster's `materialize([...])`).

    from engine.testing import build_context, load_module, materialize

    ml = load_module("pipelines/ml_training.py")
    result = materialize([ml.raw_digits, ml.features], home=tmp_path)
    assert result.success
    assert result.values["features"]["x_train"].shape[1] == 64

`materialize` runs a selection of assets in this process, in dependency order, against a
temporary home folder: each value goes through its asset's IO manager and back (so a value the
engine could not store fails here too), its return type is checked, and the checks defined for
it run, as in a real run. No database, no subprocess, no engine. `build_context` makes the
`context` to call one asset function directly.
"""

from __future__ import annotations

import graphlib
import sys
import tempfile
import types
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.authoring import definitions, iomanager
from engine.authoring.backfill_policy import range_values
from engine.authoring.context import build_context
from engine.authoring.definitions import AssetDef, CheckDef, CheckResult, ResourceDef
from engine.authoring.multi_partitions import DimensionLink, dimensions_of, link
from engine.authoring.output_types import OutputTypeError, check_output
from engine.authoring.partitions import InvalidPartitionKey, safe_key
from engine.authoring.resources import OpenResources, ResourceBuildError
from engine.authoring.typed_config import ConfigParamError, config_param
from engine.errors import PartitionError


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """The result of one asset check in a test run."""

    asset: str
    partition: str | None
    name: str
    passed: bool
    blocking: bool
    metadata: dict[str, Any] = field(default_factory=dict)
    description: str | None = None
    error: str | None = None  # the check raised, or returned something else than a result


@dataclass
class MaterializeResult:
    """What `materialize` ran.

    Attributes:
        values: Each asset's value. A partitioned asset run for several keys has `{key: value}`.
        metadata: What each asset passed to `context.add_metadata`, in the same shape.
        checks: Every check's outcome, in the order run.
        failures: Assets whose function raised (only with `raise_on_error=False`).
        skipped: Assets not run, and why (an upstream failed, or a blocking check failed).
        home: The home folder the run used (`context.home`; values are stored under it).
    """

    values: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    checks: list[CheckOutcome] = field(default_factory=list)
    failures: dict[str, BaseException] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    home: Path = field(default_factory=Path)

    @property
    def success(self) -> bool:
        """Every asset ran and no blocking check failed (a failing non-blocking check is a
        warning, as in a real run: look at `checks`)."""
        blocked = any(c.blocking and not c.passed for c in self.checks)
        return not self.failures and not self.skipped and not blocked

    def check(self, name: str, partition: str | None = None) -> CheckOutcome:
        """The outcome of the check `name` (of one partition, when several ran).

        Raises:
            KeyError: no such check ran.
        """
        for outcome in self.checks:
            if outcome.name == name and (partition is None or outcome.partition == partition):
                return outcome
        raise KeyError(f"no check {name!r} ran (ran: {', '.join(c.name for c in self.checks)})")


def load_module(path: str | Path) -> types.ModuleType:
    """Import a pipeline file as dagtop does (as `dagtop_pipelines.<name>`, with its folder on
    the path for its helpers), for a test. Its definitions are the module's attributes.
    """
    from engine.loading.modules import import_pipeline_module

    path = Path(path).resolve()
    # The registry is how the loader collects definitions; a test holds them as attributes.
    registered = len(definitions._registry.items)
    try:
        return import_pipeline_module(path.parent, path.name)
    finally:
        del definitions._registry.items[registered:]


def _module_resources(found: dict[str, AssetDef]) -> dict[str, ResourceDef]:
    """The resources defined in (or imported into) the modules of the assets run."""
    out: dict[str, ResourceDef] = {}
    for defn in found.values():
        module = sys.modules.get(defn.fn.__module__)
        for value in vars(module).values() if module is not None else ():
            if isinstance(value, ResourceDef):
                out.setdefault(value.name, value)
    return out


def _collect(assets: Any) -> tuple[dict[str, AssetDef], list[CheckDef]]:
    single = isinstance(assets, AssetDef | CheckDef | types.ModuleType)
    items = [assets] if single else list(assets)
    found: dict[str, AssetDef] = {}
    checks: list[CheckDef] = []
    modules: list[types.ModuleType] = []
    for item in items:
        if isinstance(item, types.ModuleType):
            modules.append(item)
            for value in vars(item).values():
                if isinstance(value, AssetDef):
                    _add(found, value)
        elif isinstance(item, AssetDef):
            _add(found, item)
            module = sys.modules.get(item.fn.__module__)
            if module is not None:
                modules.append(module)
        elif isinstance(item, CheckDef):
            checks.append(item)
        else:
            raise TypeError(f"materialize takes assets, checks or modules, not {item!r}")
    # The checks defined beside the assets run with them, as the engine runs them.
    for module in modules:
        checks.extend(v for v in vars(module).values() if isinstance(v, CheckDef))
    unique: dict[tuple[str, str], CheckDef] = {}
    for c in checks:
        if c.asset in found:
            unique.setdefault((c.asset, c.name), c)
    return found, list(unique.values())


def _add(found: dict[str, AssetDef], defn: AssetDef) -> None:
    other = found.get(defn.name)
    if other is not None and other is not defn:
        raise ValueError(f"two assets named {defn.name!r}: {other.file} and {defn.file}")
    found[defn.name] = defn


def _order(found: dict[str, AssetDef]) -> list[str]:
    graph = {
        name: [u for u in (*d.inputs, *d.optional_inputs, *d.deps) if u in found]
        for name, d in found.items()
    }
    try:
        return list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        raise ValueError(f"the assets form a cycle: {' -> '.join(exc.args[1])}") from None


def _keys(partition: str | Sequence[str] | None, found: dict[str, AssetDef]) -> list[str]:
    keys = [partition] if isinstance(partition, str) else list(partition or [])
    for defn in found.values():
        if defn.partitions is None:
            continue
        if not keys:
            raise PartitionError(f"asset {defn.name!r} is partitioned: pass partition=KEY")
        for key in keys:
            try:
                defn.partitions.validate_key(key)
            except InvalidPartitionKey as exc:
                raise PartitionError(f"asset {defn.name!r}: {exc}") from None
    return keys


def materialize(
    assets: AssetDef | CheckDef | types.ModuleType | Iterable[Any],
    partition: str | Sequence[str] | None = None,
    params: dict[str, Any] | None = None,
    resources: dict[str, Any] | None = None,
    *,
    resource_config: dict[str, dict[str, Any]] | None = None,
    inputs: dict[str, Any] | None = None,
    home: str | Path | None = None,
    raise_on_error: bool = True,
) -> MaterializeResult:
    """Run assets in this process, in dependency order, as a real run would.

    Args:
        assets: AssetDefs, modules (every asset in them) or CheckDefs, or a list of them. The
            checks defined in the assets' modules run too.
        partition: The key for partitioned assets, or several keys: each partitioned asset
            runs once per key, and an unpartitioned one downstream sees `{key: value}`.
        params: The run's params (`context.params`); an asset with a typed config gets them
            validated into it, as in a real run.
        resources: Resources by name, replacing those defined (a fake client): a parameter
            named after one receives it, and `context.resources` holds them. A resource not
            replaced is built from its `@resource` (found in the assets' modules) and torn
            down after each call.
        resource_config: The `context.config` of the resources built, by name (what
            `[resources.NAME]` of dagtop.toml gives a real run).
        inputs: Values for upstream assets that are not run, by name (fixtures).
        home: The home folder (`context.home`, and where values are stored); default a new
            temporary folder. In pytest, pass `tmp_path`.
        raise_on_error: Raise an asset's exception (default), or record it in `failures` and
            skip what is downstream of it.

    Returns:
        A `MaterializeResult`: values, metadata, check outcomes, `success`.

    Raises:
        ValueError: an asset reads an upstream that is neither run nor given in `inputs`.
        PartitionError: a partitioned asset without a key, or an invalid key.
        ConfigParamError: the params do not validate against an asset's typed config.
        ResourceBuildError: a resource's function raised.
        OutputTypeError: a value does not match its asset's return annotation.
    """
    found, checks = _collect(assets)
    order = _order(found)
    keys = _keys(partition, found)
    given = dict(inputs or {})
    overrides = dict(resources or {})
    defined = _module_resources(found)
    configs = _typed_configs(found, params or {})
    needs: dict[str, list[str]] = {}  # each asset's resources, by parameter
    for name in order:
        defn = found[name]
        typed = configs[name]
        config_name = typed[0] if typed is not None else None
        for up in (*defn.inputs, *defn.optional_inputs):
            if up in found or up in given or up == config_name:
                continue
            if up in overrides or up in defined:
                needs.setdefault(name, []).append(up)
            elif up in defn.inputs:
                raise ValueError(
                    f"asset {name!r} reads {up!r}, which is neither run nor given (nor a "
                    f"resource): add it to the assets, or pass inputs={{{up!r}: ...}} or "
                    f"resources={{{up!r}: ...}}"
                )
    root = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="dagtop-test-"))
    run_id = "test-" + uuid.uuid4().hex[:8]
    result = MaterializeResult(home=root)
    stored: dict[tuple[str, str | None], Any] = {}  # what downstream assets read
    multi = len(keys) > 1
    for name in order:
        defn = found[name]
        reason = _skip_reason(defn, result, found)
        if reason is not None:
            result.skipped[name] = reason
            continue
        ranged = _ranged(defn) and bool(keys)
        # What each call of the function covers: the whole range for an asset with a
        # BackfillPolicy, else one key per call (none for an unpartitioned asset).
        calls = [keys] if ranged else [[k] for k in keys] if defn.partitions else [[]]
        for call_keys in calls:
            key = call_keys[0] if len(call_keys) == 1 else None
            kwargs = _inputs(defn, call_keys if ranged else key, found, stored, given)
            ctx = build_context(
                partition=key, params=params, run_id=run_id, key=name, home=root,
                resources=overrides, partition_keys=call_keys,
                dimensions=dimensions_of(defn.partitions, key),
            )  # fmt: skip
            typed = configs[name]
            if typed is not None:
                kwargs[typed[0]] = typed[1]
            opened = OpenResources(ctx.log, root)
            try:
                try:
                    for res in needs.get(name, ()):
                        kwargs[res] = overrides[res] if res in overrides else opened.build(
                            defined[res], (resource_config or {}).get(res)
                        )  # fmt: skip
                    ctx.resources.update(opened.values)
                    value = defn.fn(ctx, **kwargs) if defn.takes_context else defn.fn(**kwargs)
                finally:
                    opened.close()  # torn down after the call, whether it succeeded or not
                check_output(defn.fn, value, f"asset {name!r}", ctx.log)
                parts = range_values(value, keys, f"asset {name!r}") if ranged else {key: value}
                for k, part in parts.items():
                    stored[(name, k)] = _round_trip(defn, part, root, k, run_id)
            except Exception as exc:
                if raise_on_error:
                    raise
                result.failures[name] = exc
                break
            for k, part in parts.items():
                if multi and k is not None:
                    result.values.setdefault(name, {})[k] = part
                    result.metadata.setdefault(name, {})[k] = dict(ctx.metadata)
                else:
                    result.values[name] = part
                    result.metadata[name] = dict(ctx.metadata)
            for c in checks:
                if c.asset == name:
                    outcome = _run_check(c, value, ctx, key)
                    result.checks += [replace(outcome, partition=k) for k in parts]
    return result


def _typed_configs(
    found: dict[str, AssetDef], params: dict[str, Any]
) -> dict[str, tuple[str, Any] | None]:
    """(parameter, config object) of each asset with a typed config, None for the others;
    the params checked as the engine checks a run's: against all these assets' configs."""
    from engine.authoring.typed_config import check_run_params, describe_config, instantiate

    typed = {name: p for name, defn in found.items() if (p := config_param(defn.fn)) is not None}
    described = [(name, describe_config(param, cls)) for name, (param, cls) in typed.items()]
    values = check_run_params(described, params)
    return {
        name: (typed[name][0], instantiate(typed[name][1], values)) if name in typed else None
        for name in found
    }


def _ranged(defn: AssetDef) -> bool:
    return defn.backfill_policy is not None and defn.backfill_policy.ranged


def _skip_reason(
    defn: AssetDef, result: MaterializeResult, found: dict[str, AssetDef]
) -> str | None:
    for up in (*defn.inputs, *defn.optional_inputs, *defn.deps):
        if up not in found:
            continue
        if up in result.failures:
            return f"upstream {up} failed"
        if up in result.skipped:
            return f"upstream {up} skipped"
        failed = [c for c in result.checks if c.asset == up and c.blocking and not c.passed]
        if failed:
            return f"blocking check {failed[0].name} on {up} failed"
    return None


def _inputs(
    defn: AssetDef,
    key: str | list[str] | None,
    found: dict[str, AssetDef],
    stored: dict[tuple[str, str | None], Any],
    given: dict[str, Any],
) -> dict[str, Any]:
    """Each input's value, as the engine resolves it (see launch.asset_inputs); `key` is a
    list for a ranged asset."""
    kwargs: dict[str, Any] = {}
    for up in (*defn.inputs, *defn.optional_inputs):
        if up in found:
            updef = found[up]
            if updef.partitions is None:
                kwargs[up] = stored[(up, None)]
            elif updef.partitions == defn.partitions and isinstance(key, list):
                kwargs[up] = {k: stored[(up, k)] for k in key}
            elif updef.partitions == defn.partitions and isinstance(key, str):
                kwargs[up] = stored[(up, key)]
            elif isinstance(key, str) and (by := _link(updef, defn)) is not None:
                # One dimension of a MultiPartitions asset, as the engine maps it.
                picked = by.upstream_key(key)
                if picked is not None:
                    kwargs[up] = stored[(up, picked)]
                else:
                    mine = {k: v for (a, k), v in stored.items() if a == up}
                    kwargs[up] = {k: v for k, v in mine.items() if by.reads(k, key)}
            else:
                kwargs[up] = {k: v for (a, k), v in stored.items() if a == up}
        elif up in given:
            kwargs[up] = given[up]
    return kwargs


def _link(up: AssetDef, down: AssetDef) -> DimensionLink | None:
    if up.partitions is None or down.partitions is None:
        return None
    return link(up.partitions.to_spec(), down.partitions.to_spec())


def _round_trip(defn: AssetDef, value: Any, home: Path, key: str | None, run_id: str) -> Any:
    """Store the value with the asset's IO manager and read it back, as downstream steps do."""
    io = iomanager.resolve(defn.io)
    part = safe_key(key) if key is not None else "_"
    path = home / "values" / defn.name / part / f"{run_id}.{getattr(io, 'extension', 'bin')}"
    iomanager.store(io, value, path)
    return iomanager.load(io, path)


def _run_check(c: CheckDef, value: Any, ctx: Any, key: str | None) -> CheckOutcome:
    passed, metadata, description, error = False, {}, None, None
    try:
        kwargs = {c.asset: value} if c.takes_value else {}
        outcome = c.fn(ctx, **kwargs) if c.takes_context else c.fn(**kwargs)
        if isinstance(outcome, CheckResult):
            passed, metadata = bool(outcome.passed), dict(outcome.metadata or {})
            description = outcome.description
        elif isinstance(outcome, bool):
            passed = outcome
        else:
            error = f"a check must return a bool or CheckResult, got {outcome!r:.80}"
    except Exception as exc:  # noqa: BLE001 - a check that raises is a failed check, as in a run
        error = f"{type(exc).__name__}: {exc}"
    return CheckOutcome(
        asset=c.asset,
        partition=key,
        name=c.name,
        passed=passed and not error,
        blocking=c.blocking,
        metadata=metadata,
        description=description,
        error=error,
    )


__all__ = [
    "CheckOutcome",
    "ConfigParamError",
    "MaterializeResult",
    "OutputTypeError",
    "ResourceBuildError",
    "build_context",
    "load_module",
    "materialize",
]

# Task pipelines, with the executor's rules (imported lazily there: assets-only tests pay nothing).
from engine.testing_tasks import PipelineResult, run_pipeline  # noqa: E402

__all__ += ["PipelineResult", "run_pipeline"]
