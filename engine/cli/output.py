"""What every `dagtop` command shares in how it answers: `--json`, JSON output with no
password in it, and an exit code."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click

from engine.redact import redact

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON")


def exit_with(code: int) -> NoReturn:
    raise SystemExit(code)


def emit_json(data: Any) -> None:
    # A value may quote a URL (an error, a setting): no password leaves in JSON either.
    sys.stdout.write(redact(json.dumps(data, indent=2, default=str)) + "\n")
