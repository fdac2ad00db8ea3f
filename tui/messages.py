"""Messages between the engine bridge, screens and widgets (past tense: things that happened)."""

from __future__ import annotations

from textual.message import Message


class EngineChanged(Message):
    """The engine reported a change (a run, a backfill, a reload, a schedule or sensor).

    Posted from engine threads through the thread-safe `post_message`; many arrive in a burst
    while steps run, so consecutive ones replace each other in the queue.
    """

    def __init__(self, kind: str, ref: str | None = None, forwarded: bool = False) -> None:
        super().__init__()
        self.kind = kind
        self.ref = ref
        self.forwarded = forwarded
        """Handed down by the app to a screen (which lets it bubble back up to the app)."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, EngineChanged)
