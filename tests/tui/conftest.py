"""Fixtures of the UI tests: local times in UTC, the example pipelines' manifest, a fake client
over it and a frozen clock."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from engine.loading.manifest import Manifest
from tests.tui.fakes import NOW, FakeClient, build_manifest, example_automation, sample_runs


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Times on screen are local times: pin the zone so snapshots match on every machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture(scope="session")
def examples_manifest(tmp_path_factory: pytest.TempPathFactory) -> Manifest:
    """The example pipelines plus a broken file, loaded once by the real loader."""
    return build_manifest(tmp_path_factory.mktemp("examples"))


@pytest.fixture
def clock() -> Callable[[], float]:
    return lambda: NOW


@pytest.fixture
def fake_client(examples_manifest: Manifest) -> FakeClient:
    """The example pipelines, five runs (`sample_runs`), their schedules and their sensor (off)."""
    schedules, sensors = example_automation(examples_manifest)
    return FakeClient(examples_manifest, sample_runs(), schedules=schedules, sensors=sensors)
