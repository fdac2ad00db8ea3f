"""Asset selections, as Dagster users write them.

`name`, `+name` (with direct upstreams), `*name` (with all upstreams), `name+`, `name*`
(downstream), both sides at once (`*name*`), `group:NAME`, and `*` for everything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from engine.errors import SelectionError, suggest
from engine.loading.manifest import Manifest


def _walk(start: str, edges: dict[str, list[str]], depth: int | None) -> set[str]:
    seen: set[str] = set()
    frontier = [start]
    level = 0
    while frontier and (depth is None or level < depth):
        nxt = []
        for node in frontier:
            for other in edges.get(node, ()):
                if other not in seen:
                    seen.add(other)
                    nxt.append(other)
        frontier = nxt
        level += 1
    return seen


def broken_cause(manifest: Manifest, name: str) -> str:
    """Why `name` is not defined when a pipeline file that names it failed to load ("" if no
    broken file names it): that file's failure is the cause to tell, not the unknown name."""
    word = re.compile(rf"\b{re.escape(name)}\b")
    for file, error in sorted(manifest.errors.items()):
        try:
            source = (Path(manifest.root) / file).read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if word.search(source):
            message = error.message.strip().splitlines()[-1] if error.message.strip() else ""
            message = message or f"{error.kind} error"
            if error.line and f"line {error.line}" not in message:
                message += f" (line {error.line})"
            return (
                f"{file} failed to load, so {name!r} is not defined: {message}; "
                "`dagtop check` shows the whole error"
            )
    return ""


def resolve(manifest: Manifest, selection: Iterable[str]) -> list[str]:
    """The asset names a selection means, in a stable topological-ish (manifest) order.

    Raises:
        SelectionError: a term names no asset or group; the message suggests close names.
    """
    upstream = {name: list(spec.upstream) for name, spec in manifest.assets.items()}
    downstream = manifest.downstream()
    chosen: set[str] = set()
    terms = [t.strip() for t in selection if t and t.strip()]
    if not terms:
        raise SelectionError("the selection is empty: name an asset, group:NAME or *")
    for term in terms:
        if term == "*":
            chosen.update(manifest.assets)
            continue
        if term.startswith("group:"):
            group = term[len("group:") :]
            members = [n for n, s in manifest.assets.items() if s.group == group]
            if not members:
                groups = {s.group for s in manifest.assets.values()}
                raise SelectionError(f"no asset group named {group!r}" + suggest(group, groups))
            chosen.update(members)
            continue
        name = term
        # How many levels to walk up and down: 0 not at all, None all the way.
        up_depth: int | None = 0
        down_depth: int | None = 0
        if name.startswith("*"):
            name, up_depth = name[1:], None
        elif name.startswith("+"):
            name, up_depth = name[1:], 1
        if name.endswith("*"):
            name, down_depth = name[:-1], None
        elif name.endswith("+"):
            name, down_depth = name[:-1], 1
        if name not in manifest.assets:
            hint = suggest(name, manifest.assets)
            if name in manifest.pipelines:
                hint = f" ({name!r} is a task pipeline: use `dagtop run {name}`)"
            raise SelectionError(broken_cause(manifest, name) or f"unknown asset {name!r}{hint}")
        chosen.add(name)
        if up_depth != 0:
            chosen |= _walk(name, upstream, up_depth)
        if down_depth != 0:
            chosen |= _walk(name, downstream, down_depth)
    return [name for name in manifest.assets if name in chosen]
