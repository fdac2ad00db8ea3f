"""The key bar at the bottom of every screen: Textual's Footer, updated in place.

Textual's `Footer` recomposes itself (removes every key widget, mounts new ones, applies their
CSS, lays the screen out again) whenever the screen's bindings may have changed, which is on
every focus change and every `refresh_bindings`. That cost ~20-170 ms a time, so a `tab` on the
run screen took longer than a key press should. Most of those changes leave the same keys on
show and at most dim or undim some: this footer then only flips their `-disabled` class, and
recomposes only when the keys themselves change. It looks exactly like Textual's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from rich.cells import cell_len
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey  # the key widget Footer composes

Shown = tuple[tuple[Any, ...], ...]


class KeyFooter(Footer):
    """A `Footer` that recomposes only when the keys it shows change (see the module doc)."""

    def __init__(self, *children: Widget, **kwargs: Any) -> None:
        super().__init__(*children, **kwargs)
        self._shown: Shown | None = None
        """What the composed keys show, enabled or not (None: not composed yet)."""
        self._fitted_to = 0
        """The width the keys were last fitted to."""

    def _keys(self) -> Iterator[tuple[tuple[Any, ...], str, bool]]:
        """(what a key widget shows, its action, enabled) for each key `compose` would yield,
        in its order (the first binding of each action, then the command palette's)."""
        app = self.app
        active = self.screen.active_bindings
        seen: set[str] = set()
        for _, binding, enabled, tooltip in active.values():
            if binding.show and binding.action not in seen:
                seen.add(binding.action)
                group = (
                    (binding.group.description, binding.group.compact) if binding.group else None
                )
                shown = (binding.key, app.get_key_display(binding), binding.description, tooltip)
                yield (binding.action, *shown, group), binding.action, enabled
        if self.show_command_palette and app.ENABLE_COMMAND_PALETTE:
            palette = active.get(app.COMMAND_PALETTE_BINDING)
            if palette is not None:
                binding, enabled = palette.binding, palette.enabled
                keys = (binding.key, app.get_key_display(binding), binding.description)
                yield ("palette", *keys, binding.tooltip), binding.action, enabled

    def compose(self) -> ComposeResult:
        if self._bindings_ready:
            self._shown = tuple(shown for shown, _, _ in self._keys())
        widgets = list(super().compose())
        self._fit(widgets)
        yield from widgets

    def on_resize(self) -> None:
        if self._shown is not None and self.size.width != self._fitted_to:
            self.refresh(recompose=True)  # fit the keys to the new width

    def _fit(self, widgets: list[Widget]) -> None:
        """Hide the keys that would not fit whole before the palette key (in order): on a
        narrow terminal the line ends cleanly rather than in half a word. Measured from the
        keys' text and the footer's CSS, before layout, so that every frame is the same."""
        self._fitted_to = width = self.app.size.width  # the footer spans the screen
        keys = [w for w in widgets if isinstance(w, FooterKey)]
        if len(keys) != len(widgets):
            return  # key groups (dagtop has none): as Textual lays them out

        def cells(key: FooterKey) -> int:
            described = cell_len(key.description) + 1 if key.description else 0
            if key.has_class("-command-palette"):
                return cell_len(key.key_display) + described + 2 + (0 if self.compact else 2)
            if self.compact:  # padding before the description, a margin after the key
                return cell_len(key.key_display) + described + 1
            return cell_len(key.key_display) + 2 + described  # padding around the key

        palette = [key for key in keys if key.has_class("-command-palette")]
        used = sum(cells(key) for key in palette)
        for key in keys:
            if key not in palette:
                used += cells(key)
                key.display = used <= width

    def bindings_changed(self, screen: Screen[Any]) -> None:
        if self._shown is None or not self.app.app_focus:
            super().bindings_changed(screen)
            return
        if not (self.is_attached and screen is self.screen):
            return
        keys = list(self._keys())
        if tuple(shown for shown, _, _ in keys) != self._shown:
            super().bindings_changed(screen)  # other keys: compose them
            return
        enabled = {action: on for _, action, on in keys}
        for key in self.query(FooterKey):
            on = enabled.get(key.action, True)
            if key._disabled == on:
                key._disabled = not on
                key.set_class(not on, "-disabled")


__all__ = ["KeyFooter"]
