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


def test_a_dask_worker_needs_no_storage_to_start_steps() -> None:
    # A Dask worker imports `dask_task` for its first step, which starts it through `spawn`:
    # neither may pay for SQLModel (~0.35 s) or reach the UI.
    loaded = _modules_after("import engine.executor.dask_task, engine.executor.spawn")
    heavy = {"sqlmodel", "sqlalchemy", "pydantic", "textual", "apscheduler", "watchdog"}
    assert not heavy & {m.split(".")[0] for m in loaded}
    assert "engine.storage" not in loaded and "engine.executor.launch" not in loaded


def test_the_protocol_needs_only_the_standard_library() -> None:
    # Every step's worker imports the worker half before user code, and never the commands.
    loaded = _modules_after("import engine.protocol.worker") - _modules_after("pass")
    outside = {m.split(".")[0] for m in loaded} - set(sys.stdlib_module_names)
    assert outside == {"engine"}, outside
    assert {m for m in loaded if m.startswith("engine")} == {
        "engine",
        "engine.protocol",
        "engine.protocol.worker",
    }
    loaded = _modules_after("import engine.protocol.commands") - _modules_after("pass")
    assert {m.split(".")[0] for m in loaded} - set(sys.stdlib_module_names) == {"engine"}


def test_check_and_list_do_not_import_storage() -> None:
    loaded = _modules_after("import engine.cli.main, engine.cli.listing")
    assert "sqlmodel" not in loaded
