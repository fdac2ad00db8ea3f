"""The command palette (ctrl+p): every action of the current screen and of the app, and a jump
to anything by name.

`DagtopCommands` offers the actions: the bindings (so a key and its palette entry can never
disagree) plus each node's `PALETTE` list for actions without a key; an action its node's
`check_action` disables is left out, so the palette only offers what applies to the current
selection. `JumpCommands` finds assets (their page), runs by id prefix (the run), task
pipelines (their graph), schedules and sensors (their screen), and the actions on each by
name: materialize or backfill an asset, run a pipeline, turn a schedule or sensor on or off.
Textual's palette ranks every provider's hits together by the fuzzy match's score.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from operator import methodcaller
from typing import TYPE_CHECKING, Any

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode

from engine.units import glyph, plural
from tui.host import host_of
from tui.screens.help import bindings_of

if TYPE_CHECKING:
    from engine.client import RunView
    from tui.screens.home import HomeScreen

RUNS_SEARCHED = 500
"""Recent runs a run id prefix is looked up in."""
HEX = frozenset("0123456789abcdef")


class DagtopCommands(Provider):
    """Actions of the screen the palette was opened on, then the app's."""

    def commands(self) -> Iterator[tuple[str, str, DOMNode, str]]:
        """(title, help, node, action) of every action that applies right now."""
        seen: set[tuple[int, str]] = set()
        app = self.app
        for node in (self.screen, app):
            entries: list[tuple[str, str, str]] = []
            for binding in bindings_of(node):
                if binding.description:
                    key = app.get_key_display(binding)
                    entries.append(
                        (binding.description, binding.tooltip or f"key: {key}", binding.action)
                    )
            entries += list(getattr(node, "PALETTE", ()))
            for title, help_text, action in entries:
                name = action.split("(", 1)[0]
                if (id(node), name) in seen:
                    continue
                seen.add((id(node), name))
                if name in ("command_palette", "dismiss") or not node.check_action(name, ()):
                    continue
                yield title, help_text, node, action

    def _run(self, node: DOMNode, action: str) -> Callable[[], Awaitable[bool]]:
        return partial(self.app.run_action, action, node)

    async def discover(self) -> Hits:
        for title, help_text, node, action in self.commands():
            yield DiscoveryHit(title, self._run(node, action), help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, node, action in self.commands():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), self._run(node, action), help=help_text)


@dataclass(frozen=True, slots=True)
class Target:
    """One thing the palette can jump to or act on by name."""

    title: str
    help: str
    command: Callable[[], Any]


class JumpCommands(Provider):
    """Assets, runs by id prefix, task pipelines, schedules and sensors, and what to do to them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.targets: list[Target] = []
        self.runs: list[RunView] = []

    async def startup(self) -> None:
        """Read the definitions, the recent runs, schedules and sensors once per opening."""
        client = host_of(self.app).client

        def read() -> tuple[Any, list[RunView], list[Any], list[Any]]:
            manifest = client.load()
            runs = client.runs(RUNS_SEARCHED)
            try:
                schedules, sensors = client.schedules(), client.sensors()
            except Exception:  # noqa: BLE001 - the rest of the palette still works
                schedules, sensors = [], []
            return manifest, runs, schedules, sensors

        manifest, self.runs, schedules, sensors = await asyncio.to_thread(read)
        self.targets = list(self._targets(manifest, schedules, sensors))

    def _targets(self, manifest: Any, schedules: list[Any], sensors: list[Any]) -> Iterator[Target]:
        for spec in manifest.assets.values():
            kind = "partitioned asset" if spec.partitions else "asset"
            where = f"{kind} · group {spec.group} · {spec.file}"
            yield Target(spec.name, f"open its page · {where}", partial(self.open_asset, spec.name))
            yield Target(
                f"Materialize {spec.name}",
                f"run it now{' (asks for a key)' if spec.partitions else ''}",
                partial(self.on_home, methodcaller("materialize_asset", spec.name)),
            )
            if spec.partitions:
                yield Target(
                    f"Backfill {spec.name}",
                    "choose a range of its partitions",
                    partial(self.on_home, methodcaller("backfill_asset", spec.name)),
                )
        for pipeline in manifest.pipelines.values():
            tasks = plural(len(pipeline.tasks), "task")
            yield Target(
                pipeline.name,
                f"show its graph · task pipeline · {tasks} · {pipeline.file}",
                partial(self.on_home, partial(_show_pipeline, name=pipeline.name)),
            )
            yield Target(
                f"Run {pipeline.name}",
                "run the task pipeline now",
                partial(self.on_home, methodcaller("run_pipeline", pipeline.name)),
            )
        for kind, items in (("schedule", schedules), ("sensor", sensors)):
            for item in items:
                state = "on" if item.enabled else "off"
                yield Target(
                    item.name, f"{kind} · {state} · open Schedules & sensors", self.open_automation
                )
                flip = "off" if item.enabled else "on"
                yield Target(
                    f"Turn {kind} {item.name} {flip}",
                    f"it is {state} now",
                    partial(
                        self.on_home,
                        methodcaller("set_enabled", kind, item.name, not item.enabled),
                    ),
                )

    async def search(self, query: str) -> Hits:
        for run in self._runs_by_prefix(query):
            when = datetime.fromtimestamp(run.created_at).strftime("%Y-%m-%d %H:%M")
            title = f"run {run.id}  {run.target}"
            yield Hit(
                1.0,  # an id prefix is exact: above any fuzzy match
                title,
                partial(self.open_run, run.id),
                text=title,
                help=f"{glyph(run.status)} {run.status} · {run.trigger} · {when}",
            )
        matcher = self.matcher(query)
        for target in self.targets:
            score = matcher.match(target.title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(target.title),
                    target.command,
                    text=target.title,
                    help=target.help,
                )

    def _runs_by_prefix(self, query: str) -> list[RunView]:
        """Runs whose id starts with the query (`4f2a` or `run 4f2a`), newest first; at least
        two hex digits, so that a word is not read as an id."""
        text = query.strip().lower().removeprefix("run").strip()
        if len(text) < 2 or not set(text) <= HEX:
            return []
        return [run for run in self.runs if run.id.startswith(text)][:20]

    # --- what the hits do ---------------------------------------------------------------------

    def open_asset(self, name: str) -> None:
        from tui.screens.asset import AssetScreen

        self.app.push_screen(AssetScreen(name))

    def open_run(self, run_id: str) -> None:
        from tui.screens.run import RunScreen

        self.app.push_screen(RunScreen(run_id))

    def open_automation(self) -> None:
        from tui.screens.automation import AutomationScreen

        self.app.push_screen(AutomationScreen())

    def on_home(self, act: Callable[[HomeScreen], Any]) -> None:
        """Back to the home screen (closing what is above it), then `act` on it."""
        from tui.screens.home import HomeScreen

        app = self.app
        home = next((s for s in app.screen_stack if isinstance(s, HomeScreen)), None)
        if home is None:
            return
        while app.screen is not home:
            app.pop_screen()
        act(home)


def _show_pipeline(home: HomeScreen, name: str) -> None:
    """A task pipeline's graph on the home screen, the tree's cursor on its first task."""
    home.show_graph("pipeline", name)
    pipeline = home.manifest.pipelines.get(name) if home.manifest is not None else None
    if pipeline is not None and pipeline.tasks:
        home.pipelines.select_leaf("task", name, next(iter(pipeline.tasks)))


__all__ = ["DagtopCommands", "JumpCommands"]
