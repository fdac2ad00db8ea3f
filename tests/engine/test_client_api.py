"""The real facade implements what the UI is typed against (`engine.client_api.ClientAPI`).

The assignment below is the check that matters, and mypy makes it: a method of the protocol
that `Client` drops, renames or answers with another type fails `mypy` here, before any UI
code runs. The test itself checks what can be checked at run time: every member is there.
"""

from __future__ import annotations

from pathlib import Path

from engine.client import Client
from engine.client_api import ClientAPI


def test_client_implements_the_ui_protocol(tmp_path: Path) -> None:
    client: ClientAPI = Client(home=tmp_path / "home", pipelines=tmp_path / "pipelines")
    assert isinstance(client, ClientAPI)
    assert client.engine is None  # nothing embedded until the UI starts one
