"""Messages between the engine bridge, screens and widgets (past tense: things that happened)."""

from __future__ import annotations

from textual.message import Message


class EngineChanged(Message):
    """The engine reported a change (a run, a backfill, a reload, a schedule or sensor, the
    engine stopping), or the app's engine mode changed ("mode").

    Posted from engine threads through the thread-safe `post_message`; many "run" changes
    arrive in a burst while steps run, so a queued one gives way to the next "run" change
    (whoever handles it reads what changed since its last read). Any other kind (a reload,
    the engine stopping, a toggle) is handled on its own, never dropped for another.
    """

    def __init__(self, kind: str, ref: str | None = None, forwarded: bool = False) -> None:
        super().__init__()
        self.kind = kind
        self.ref = ref
        self.forwarded = forwarded
        """Handed down by the app to a screen (which lets it bubble back up to the app)."""

    def can_replace(self, message: Message) -> bool:
        # Textual drops this message when the one queued behind it may replace it.
        return (
            isinstance(message, EngineChanged)
            and self.kind == message.kind == "run"
            and self.forwarded == message.forwarded
        )
