"""The command palette (ctrl+p): every action of the current screen and of the app.

Commands come from the bindings (so a key and its palette entry can never disagree) plus each
node's `PALETTE` list for actions without a key. An action its node's `check_action` disables
is left out, so the palette only offers what applies to the current selection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.dom import DOMNode

from tui.screens.help import bindings_of


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


__all__ = ["DagtopCommands"]
