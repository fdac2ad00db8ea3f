"""The one fake client implements what the UI is typed against, and the apps that host the
screens implement what screens need of them.

The typed assignments are the checks that matter, and mypy makes them: a member of
`ClientAPI` the fake lacks, or answers with another type, fails `mypy` here (the real client is
checked the same way in tests/engine/test_client_api.py). At run time the test checks that
every member is there.
"""

from __future__ import annotations

from textual.screen import Screen

from engine.client_api import ClientAPI
from engine.loading.manifest import Manifest
from tests.tui.fakes import FakeClient, Host
from tui.app import DagtopApp
from tui.host import Host as ScreenHost


def test_the_fake_and_the_hosts_implement_the_protocols(examples_manifest: Manifest) -> None:
    client: ClientAPI = FakeClient(examples_manifest)
    assert isinstance(client, ClientAPI)
    hosts: list[ScreenHost] = [Host(client, Screen), DagtopApp(client, mode="offline")]
    assert all(host.client is client for host in hosts)
