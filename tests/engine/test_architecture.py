"""The boundaries that keep dagtop fast and its engine UI-free, checked in fresh interpreters."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize(
    "module",
    [
        "engine",
        "engine.cli.main",
        "engine.client",
        "engine.executor.coordinator",
        "engine.loading.loader",
    ],
)
def test_engine_never_imports_the_ui(module: str) -> None:
    loaded = _modules_after(f"import {module}")
    assert not {m for m in loaded if m == "textual" or m.startswith(("textual.", "tui"))}


def test_a_worker_imports_neither_storage_nor_psutil() -> None:
    # Every step pays for what its worker imports before running user code.
    loaded = _modules_after("import engine, engine.executor.worker")
    heavy = {"sqlmodel", "sqlalchemy", "psutil", "textual", "apscheduler", "watchdog", "pydantic"}
    assert not heavy & {m.split(".")[0] for m in loaded}


def test_check_and_list_do_not_import_storage() -> None:
    loaded = _modules_after("import engine.cli.main, engine.cli.listing")
    assert "sqlmodel" not in loaded
