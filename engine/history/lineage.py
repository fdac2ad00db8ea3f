"""Lineage and staleness: how a value was produced, what depends on it, and what is out of date.

Every materialization records the run and attempt that produced it, the code version of its
asset and the ids of the upstream materializations it consumed (`launch.asset_inputs`); the
run holds the params. From those:

- the upstream tree of a materialization follows the consumed ids back to the roots;
- the downstream tree follows the definitions' edges and shows each dependent's newest
  materialization, and whether it consumed this value;
- a materialized partition is stale, as Dagster's "unsynced", when its code version changed
  since ("code changed"), when an upstream it reads was materialized after it ("upstream X
  newer"), or when such an upstream is stale itself ("upstream X stale"), so a change shows
  all the way down.

Every function takes an open session from the facade; storage is reached only through repo,
imported when first used: the views here are part of the facade, which `dagtop list` imports
without paying for SQLModel.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from engine.authoring.multi_partitions import link
from engine.authoring.partitions import InvalidPartitionKey
from engine.errors import EngineError, PartitionError
from engine.history.views import iso
from engine.loading.manifest import Manifest
from engine.status import Freshness, PartitionStatus
from engine.units import one_line

if TYPE_CHECKING:
    from sqlmodel import Session

CODE_CHANGED = "code changed"
VALUE_MISSING = "stored value missing"  # recorded, but its file is gone (deleted by hand, say)


@dataclass(frozen=True, slots=True)
class LineageNode:
    """One materialization in a lineage tree (or an asset never materialized, downstream)."""

    asset: str
    partition: str | None
    materialization_id: int | None  # None: never materialized (only in a downstream tree)
    run_id: str | None
    attempt_id: int | None
    created_at: float | None
    code_version: str | None
    current_code_version: str | None  # the definition's today (None: no longer defined)
    params: dict[str, Any] = field(default_factory=dict)  # the params of the run
    trigger: str | None = None  # manual | schedule | sensor | backfill | retry
    replaced: bool = False  # a newer materialization of the same partition replaced it
    stale: tuple[str, ...] = ()  # why this (current) value is stale
    consumed: bool | None = None  # downstream: it read its parent's current value (None: deps)
    repeat: bool = False  # shown in full earlier in the tree; its children are left out
    children: tuple[LineageNode, ...] = ()

    @property
    def code_changed(self) -> bool:
        """The asset's code changed since this value was produced."""
        return (
            self.code_version is not None
            and self.current_code_version is not None
            and self.code_version != self.current_code_version
        )

    def walk(self) -> Iterator[LineageNode]:
        """This node and every node below it, depth first."""
        yield self
        for child in self.children:
            yield from child.walk()

    def to_json(self) -> dict[str, Any]:
        return {
            "asset": self.asset,
            "partition": self.partition,
            "materialization_id": self.materialization_id,
            "run_id": self.run_id,
            "attempt_id": self.attempt_id,
            "created_at": iso(self.created_at),
            "code_version": self.code_version,
            "code_changed": self.code_changed,
            "params": self.params,
            "trigger": self.trigger,
            "replaced": self.replaced,
            "stale": list(self.stale),
            "consumed": self.consumed,
            "repeat": self.repeat,
            "children": [c.to_json() for c in self.children],
        }


@dataclass(frozen=True, slots=True)
class StaleState:
    """Whether one asset partition needs materializing, and why."""

    asset: str
    partition: str | None
    status: Freshness
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "asset": self.asset,
            "partition": self.partition,
            "status": self.status,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class AssetStaleness:
    """One asset's summary for `dagtop list`: every partition taken together."""

    status: Literal[PartitionStatus.MISSING, PartitionStatus.STALE, PartitionStatus.MATERIALIZED]
    reason: str | None = None
    stale_partitions: int = 0


def _inputs_of(mat: Any) -> list[int]:
    return [int(i) for i in json.loads(mat.inputs_json or "[]") if i]


class Staleness:
    """Staleness of asset partitions over one session, memoized.

    Current values are read as they are needed: one partition at a time (`current`), the
    partitions a read reports and what they depend on in a few queries (`preload_keys`), or
    every partition of many assets in one query (`preload`).
    """

    def __init__(self, session: Session, manifest: Manifest) -> None:
        self.session = session
        self.manifest = manifest
        self._latest: dict[str, dict[str | None, Any]] = {}  # every current value of an asset
        self._some: dict[str, dict[str | None, Any]] = {}  # the partitions read one by one
        self._memo: dict[tuple[str, str | None], tuple[str, ...]] = {}
        self._present: dict[str, bool] = {}

    def latest(self, asset: str) -> dict[str | None, Any]:
        """The current materialization of each partition of `asset`."""
        from engine.storage import repo

        found = self._latest.get(asset)
        if found is None:
            found = self._latest[asset] = repo.latest_per_partition(self.session, asset)
        return found

    def current(self, asset: str, key: str | None) -> Any:
        """The current materialization of one partition of `asset` (None: none)."""
        found = self._latest.get(asset)
        if found is not None:
            return found.get(key)
        some = self._some.setdefault(asset, {})
        if key not in some:
            self._load(asset, [key])
        return some[key]

    def _load(self, asset: str, keys: Iterable[str | None]) -> None:
        from engine.storage import repo

        some = self._some.setdefault(asset, {})
        unread = [k for k in dict.fromkeys(keys) if k not in some]
        if unread:
            found = repo.current_materializations(self.session, asset, unread)
            some.update({k: found.get(k) for k in unread})

    def preload(self, assets: Iterable[str]) -> None:
        """Read the current materializations of `assets` and of everything upstream of them
        (what `reasons` may look at) in one query, rather than one per asset as it goes."""
        from engine.storage import repo

        wanted: set[str] = set()
        todo = list(assets)
        while todo:
            name = todo.pop()
            if name in wanted:
                continue
            wanted.add(name)
            spec = self.manifest.assets.get(name)
            if spec is not None:
                todo.extend(up for up in spec.upstream if up in self.manifest.assets)
        unread = wanted - set(self._latest)
        if unread:
            self._latest.update(repo.latest_per_partition_of(self.session, unread))

    def preload_keys(self, asset: str, keys: Iterable[str | None]) -> None:
        """Read what `reasons(asset, key)` looks at for each of `keys`, and nothing more: see
        `preload_pairs`."""
        self.preload_pairs([(asset, keys)])

    def preload_pairs(self, pairs: Iterable[tuple[str, Iterable[str | None]]]) -> None:
        """Read what `reasons(asset, key)` looks at for each asset and its keys in `pairs`:
        those partitions of the asset and of its upstreams partitioned alike, the value of each
        unpartitioned upstream, every value of an upstream partitioned otherwise. Unpartitioned
        assets (one value each) are read together in one query."""
        wanted: dict[str, set[str | None]] = {}
        whole: set[str] = set()
        todo = [(name, tuple(keys)) for name, keys in pairs]
        while todo:
            name, keys = todo.pop()
            known = wanted.setdefault(name, set())
            if set(keys) <= known and known:
                continue
            known.update(keys)
            spec = self.manifest.assets.get(name)
            if spec is None:
                continue
            for up_name in spec.upstream:
                up = self.manifest.assets.get(up_name)
                if up is None:
                    continue
                by_dimension = link(up.partitions, spec.partitions)
                if up.partitions is None:
                    todo.append((up_name, (None,)))
                elif up.partitions == spec.partitions and None not in keys:
                    todo.append((up_name, keys))
                elif by_dimension is not None and not by_dimension.fan_in and None not in keys:
                    picked = {by_dimension.upstream_key(k) for k in keys if k is not None}
                    todo.append((up_name, tuple(picked)))
                else:
                    whole.add(up_name)
        single = [n for n, known in wanted.items() if known == {None} and n not in self._latest]
        self.preload([*whole, *single])
        for name, known in wanted.items():
            if name not in self._latest:
                self._load(name, known)

    def present(self, mat: Any) -> bool:
        """Whether a current value's file is still there. A value in a `values_dir` URL is
        taken on trust: asking a remote store about every value would cost a round trip each."""
        path = mat.value_path
        if not path or "://" in path:
            return bool(path)
        found = self._present.get(path)
        if found is None:
            found = self._present[path] = os.path.exists(path)
        return found

    def reasons(self, asset: str, key: str | None) -> tuple[str, ...]:
        """Why the current value of `asset` [key] is stale; empty when it is current or was
        never materialized."""
        memo_key = (asset, key)
        if memo_key not in self._memo:
            self._memo[memo_key] = self._reasons(asset, key)
        return self._memo[memo_key]

    def _reasons(self, asset: str, key: str | None) -> tuple[str, ...]:
        mat = self.current(asset, key)
        spec = self.manifest.assets.get(asset)
        if mat is None or spec is None:
            return ()
        out = []
        if mat.code_version and mat.code_version != spec.code_version:
            out.append(CODE_CHANGED)
        for name in spec.upstream:
            up = self.manifest.assets.get(name)
            if up is None:
                continue
            by_dimension = None if key is None else link(up.partitions, spec.partitions)
            picked = None if by_dimension is None or key is None else by_dimension.upstream_key(key)
            if up.partitions is None or (up.partitions == spec.partitions and key is not None):
                one = self.current(name, key if up.partitions is not None else None)
                read = [one] if one is not None else []
            elif picked is not None:  # a dimension of a MultiPartitions key: that one key
                one = self.current(name, picked)
                read = [one] if one is not None else []
            elif by_dimension is not None:  # the upstream keys with this key in a dimension
                read = [m for k, m in self.latest(name).items() if by_dimension.reads(k, key)]
            else:  # every materialized partition, seen as {key: value}
                read = list(self.latest(name).values())
            if any(m.created_at > mat.created_at for m in read):
                out.append(f"upstream {name} newer")
            elif any(self.reasons(name, m.partition) for m in read):
                out.append(f"upstream {name} stale")
        return tuple(out)


def toposort(manifest: Manifest, names: Iterable[str]) -> list[str]:
    """`names` in manifest order, except that each comes after the ones it depends on."""
    chosen = set(names)
    out: list[str] = []
    placed: set[str] = set()

    def place(name: str) -> None:
        if name in placed:
            return
        placed.add(name)  # the manifest has no cycles: validation drops them
        for up in manifest.assets[name].upstream:
            if up in chosen:
                place(up)
        out.append(name)

    for name in manifest.assets:
        if name in chosen:
            place(name)
    return out


def stale_states(
    session: Session, manifest: Manifest, names: Iterable[str], partition: str | None
) -> list[StaleState]:
    """Each asset of `names` in dependency order: missing, stale or current.

    A partitioned asset is judged at `partition`, an unpartitioned one as a whole. An asset
    downstream of one that will be materialized (missing or stale) is stale too: running it
    first is what "in order" means.
    """
    ev = Staleness(session, manifest)
    ordered = toposort(manifest, names)
    ev.preload_pairs(
        (name, [partition if manifest.assets[name].partitions is not None else None])
        for name in ordered
    )
    due: set[str] = set()
    out = []
    for name in ordered:
        spec = manifest.assets[name]
        key = partition if spec.partitions is not None else None
        mat = ev.current(name, key)
        if mat is None:
            state = StaleState(name, key, Freshness.MISSING, ("never materialized",))
        elif not ev.present(mat):
            state = StaleState(name, key, Freshness.MISSING, (VALUE_MISSING,))
        else:
            reasons = list(ev.reasons(name, key))
            for up in spec.upstream:
                if up in due and not any(r.startswith(f"upstream {up} ") for r in reasons):
                    reasons.append(f"upstream {up} runs first")
            fresh = Freshness.STALE if reasons else Freshness.CURRENT
            state = StaleState(name, key, fresh, tuple(reasons))
        if state.status != Freshness.CURRENT:
            due.add(name)
        out.append(state)
    return out


def asset_staleness(session: Session, manifest: Manifest) -> dict[str, AssetStaleness]:
    """Per asset, whether it (or how many of its partitions) is stale, for `dagtop list`."""
    ev = Staleness(session, manifest)
    ev.preload(manifest.assets)
    out = {}
    for name in toposort(manifest, manifest.assets):  # upstreams first: shallow recursion
        spec = manifest.assets[name]
        mats = ev.latest(name)
        if not mats:
            out[name] = AssetStaleness(PartitionStatus.MISSING)
            continue
        # An unpartitioned asset's one value is checked on disk; the partitions of the others
        # are, by `dagtop partitions` (a stat per key would be most of this read).
        if spec.partitions is None and None in mats and not ev.present(mats[None]):
            out[name] = AssetStaleness(PartitionStatus.MISSING, VALUE_MISSING)
            continue
        stale = {key: ev.reasons(name, key) for key in mats}
        stale = {key: why for key, why in stale.items() if why}
        if not stale:
            out[name] = AssetStaleness(PartitionStatus.MATERIALIZED)
            continue
        why = ", ".join(dict.fromkeys(r for reasons in stale.values() for r in reasons))
        if spec.partitions is not None:
            why = f"{len(stale)} partition{'s' if len(stale) > 1 else ''}: {why}"
        out[name] = AssetStaleness(PartitionStatus.STALE, why, len(stale) if spec.partitions else 0)
    return out


def check_partition(manifest: Manifest, asset: str, partition: str | None) -> None:
    """Raises: PartitionError: the key is missing for a partitioned asset, given for an
    unpartitioned one, or not one of its keys."""
    pdef = manifest.assets[asset].partitions_def
    if pdef is None:
        if partition is not None:
            raise PartitionError(f"asset {asset!r} is not partitioned: drop --partition")
        return
    if partition is None:
        raise PartitionError(f"asset {asset!r} is partitioned: pass --partition KEY")
    try:
        pdef.validate_key(partition)
    except InvalidPartitionKey as exc:
        raise PartitionError(f"asset {asset!r}: {exc}") from None


class _Builder:
    """Turns materialization rows into nodes, with the runs' params and staleness."""

    def __init__(self, session: Session, manifest: Manifest) -> None:
        self.manifest = manifest
        self.ev = Staleness(session, manifest)
        self.session = session
        self.runs: dict[str, Any] = {}

    def load_runs(self, mats: Iterable[Any]) -> None:
        from engine.storage import repo

        wanted = {m.run_id for m in mats if m is not None} - set(self.runs)
        self.runs.update(repo.runs_by_id(self.session, wanted))

    def node(
        self,
        asset: str,
        partition: str | None,
        mat: Any,
        children: tuple[LineageNode, ...] = (),
        consumed: bool | None = None,
        repeat: bool = False,
    ) -> LineageNode:
        spec = self.manifest.assets.get(asset)
        current = spec.code_version if spec is not None else None
        if mat is None:
            return LineageNode(
                asset, partition, None, None, None, None, None, current,
                consumed=consumed, repeat=repeat, children=children,
            )  # fmt: skip
        run = self.runs.get(mat.run_id)
        latest = self.ev.current(asset, mat.partition)
        is_current = latest is not None and latest.id == mat.id
        return LineageNode(
            asset=asset,
            partition=mat.partition,
            materialization_id=mat.id,
            run_id=mat.run_id,
            attempt_id=mat.attempt_id,
            created_at=mat.created_at,
            code_version=mat.code_version,
            current_code_version=current,
            params=json.loads(run.params or "{}") if run is not None else {},
            trigger=run.trigger if run is not None else None,
            replaced=not is_current,
            stale=self.ev.reasons(asset, mat.partition) if is_current else (),
            consumed=consumed,
            repeat=repeat,
            children=children,
        )


def upstream_lineage(
    session: Session,
    manifest: Manifest,
    asset: str,
    partition: str | None,
    materialization: int | None = None,
) -> LineageNode:
    """The current materialization of `asset` [partition] (or the one whose id is
    `materialization`, current or not) and, below it, the materializations it consumed, back to
    the roots. A materialization reached twice (a diamond) is expanded once.

    Raises:
        PartitionError: see `check_partition`.
        EngineError: the asset partition was never materialized, or `asset` has no
            materialization `materialization`.
    """
    from engine.storage import repo

    check_partition(manifest, asset, partition)
    if materialization is not None:
        root = repo.materializations_by_id(session, [materialization]).get(materialization)
        if root is None or root.asset != asset or root.partition != partition:
            raise EngineError(
                f"asset {asset!r} has no materialization {materialization}",
                title="No such materialization",
            )
    else:
        root = repo.latest_materialization(session, asset, partition)
    if root is None:
        where = f" for partition {partition}" if partition is not None else ""
        raise EngineError(
            f"asset {asset!r} has no materialization{where} yet", title="Never materialized"
        )
    assert root.id is not None  # a row read back always has its key
    mats = {root.id: root}
    frontier = [root]
    while frontier:  # one query per level of the tree
        wanted = {i for m in frontier for i in _inputs_of(m)} - set(mats)
        found = repo.materializations_by_id(session, wanted)
        mats.update(found)
        frontier = list(found.values())
    build = _Builder(session, manifest)
    build.load_runs(mats.values())
    expanded: set[int] = set()

    def visit(mat: Any) -> LineageNode:
        if mat.id in expanded:
            return build.node(mat.asset, mat.partition, mat, repeat=True)
        expanded.add(mat.id)
        consumed = [mats[i] for i in dict.fromkeys(_inputs_of(mat)) if i in mats]
        first_seen = {a: n for n, a in enumerate(dict.fromkeys(m.asset for m in consumed))}
        consumed.sort(key=lambda m: (first_seen[m.asset], m.partition or ""))
        return build.node(mat.asset, mat.partition, mat, tuple(visit(m) for m in consumed))

    return visit(root)


def downstream_lineage(
    session: Session, manifest: Manifest, asset: str, partition: str | None
) -> LineageNode:
    """`asset` [partition] and, below it, every asset that depends on it (transitively), each
    with its newest materialization of the matching partition: the same key for the same
    partitions, the whole asset for an unpartitioned one, and the newest partition otherwise.

    Raises:
        PartitionError: see `check_partition`.
    """
    check_partition(manifest, asset, partition)
    build = _Builder(session, manifest)
    downstream = manifest.downstream()
    seen: set[tuple[str, str | None]] = set()

    def current(name: str, key: str | None) -> Any:
        return build.ev.current(name, key)

    def visit(name: str, key: str | None, mat: Any, parent: tuple[str, Any] | None) -> LineageNode:
        consumed = None
        if parent is not None:
            parent_name, parent_mat = parent
            spec = manifest.assets[name]
            if parent_name in (*spec.inputs, *spec.optional_inputs):
                consumed = (
                    mat is not None
                    and parent_mat is not None
                    and (parent_mat.id in _inputs_of(mat))
                )
        build.load_runs([mat])
        if (name, key) in seen:
            return build.node(name, key, mat, consumed=consumed, repeat=True)
        seen.add((name, key))
        spec = manifest.assets[name]
        children = []
        for child in downstream.get(name, []):
            cspec = manifest.assets[child]
            if cspec.partitions is None:
                ckey: str | None = None
                cmat = current(child, None)
            elif cspec.partitions == spec.partitions and key is not None:
                ckey, cmat = key, current(child, key)
            elif key is not None and (by := link(spec.partitions, cspec.partitions)) is not None:
                if by.fan_in:  # the child is partitioned by one dimension of this key
                    ckey = by.downstream_key(key)
                    cmat = None if ckey is None else current(child, ckey)
                else:  # the child is MultiPartitions: its newest key with this part
                    with_part = [m for k, m in build.ev.latest(child).items() if by.reads(key, k)]
                    cmat = max(with_part, key=lambda m: m.created_at, default=None)
                    ckey = cmat.partition if cmat is not None else None
            else:
                mats = build.ev.latest(child).values()
                cmat = max(mats, key=lambda m: m.created_at, default=None)
                ckey = cmat.partition if cmat is not None else None
            children.append(visit(child, ckey, cmat, (name, mat)))
        return build.node(name, key, mat, tuple(children), consumed=consumed)

    return visit(asset, partition, current(asset, partition), None)


def render_lineage(root: LineageNode, downstream: bool = False) -> list[str]:
    """A lineage tree as text lines, one node a line (`dagtop lineage` and the UI show it)."""
    lines: list[str] = []

    def show(node: LineageNode, lead: str, indent: str) -> None:
        lines.append(lead + _line(node, downstream))
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            branch, rest = ("└── ", "    ") if last else ("├── ", "│   ")
            show(child, indent + branch, indent + rest)

    show(root, "", "")
    return lines


def _line(node: LineageNode, downstream: bool) -> str:
    name = node.asset + (f" [{node.partition}]" if node.partition else "")
    if node.materialization_id is None:
        return f"{name}  never materialized"
    when = datetime.fromtimestamp(node.created_at or 0).strftime("%Y-%m-%d %H:%M:%S")
    parts = [name, f"run {node.run_id}", when, f"code {(node.code_version or '?')[:8]}"]
    if node.code_changed:
        parts[-1] += " (changed since)"
    if node.params:
        # A value is data and may hold a newline: escaped, so the node stays one line.
        parts.append("params " + " ".join(one_line(f"{k}={v}") for k, v in node.params.items()))
    if node.replaced:
        parts.append("replaced by a newer value")
    if node.stale:
        parts.append("stale: " + ", ".join(node.stale))
    if downstream and node.consumed is False:
        parts.append("built from an older value")
    if node.repeat:
        parts.append("(shown above)")
    return "  ".join(parts)
