"""The `dagtop` command line. Every command reaches the engine through `engine.client`.

A user's mistake (an unknown asset, a bad partition key, a malformed --param, an unusable home
folder) is one line on stderr and exit code 2; a failed run or a broken pipeline file is exit
code 1. Tracebacks are for dagtop's own bugs only.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from engine.cli import assets as cli_assets
from engine.cli import automation as cli_automation
from engine.cli import db as cli_db
from engine.cli import logs as cli_logs
from engine.cli.output import JSON_OPTION, emit_json, exit_with
from engine.client import Client, RunView, iso
from engine.errors import EngineError
from engine.redact import RedactingFormatter, redact
from engine.status import BackfillStatus, Freshness, RunStatus, StepStatus
from engine.units import (
    GLYPHS,
    control_character,
    format_bytes,
    format_duration,
    glyph,
    one_line,
    plural,
)

if TYPE_CHECKING:
    from engine.history.lineage import StaleState


def _parse_params(items: Sequence[str] | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise EngineError(f"--param {item!r} is not KEY=VALUE", title="Bad parameter")
        try:
            value: Any = json.loads(raw)
        except (ValueError, RecursionError):
            value = raw  # anything that is not JSON (that we can read) is a plain string
        params[key.strip()] = value
    return params


def _warn_unread_params(
    client: Client, params: dict[str, Any], selection: Sequence[str] = (), pipeline: str = ""
) -> None:
    """Warn of a --param that the target's files never name: most likely a typo, which would
    otherwise be recorded with the run and silently ignored. Only a name that appears nowhere
    in those files is reported, so a parameter read in any way is never warned about."""
    if not params:
        return
    import re

    from engine.loading.selection import resolve

    manifest = client.load()
    if pipeline:
        spec = manifest.pipelines.get(pipeline)
        files = {spec.file} if spec is not None else set()
    else:
        try:
            names = resolve(manifest, selection)
        except EngineError:
            return  # the run itself says what is wrong with the selection
        if any(manifest.assets[name].config is not None for name in names):
            return  # a typed config checks every param itself, and refuses an unknown one
        files = {manifest.assets[name].file for name in names}
    sources = []
    for file in sorted(files):
        try:
            sources.append((Path(manifest.root) / file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return  # unreadable: cannot tell, so say nothing
    for key in params:
        if control_character(key) is not None:
            continue  # refused with its own message when the run is planned
        if files and not any(re.search(rf"\b{re.escape(key)}\b", text) for text in sources):
            where = ", ".join(sorted(files))
            sys.stderr.write(
                f"dagtop: warning: --param {key} is named nowhere in {where}: "
                "no step reads it (a typo?)\n"
            )


# click, not a heavier layer over it: each `dagtop` command is a short process, and its start
# counts (a run handed to a running daemon is done in about the time the import takes).
@click.group(
    invoke_without_command=True,
    help="dagtop: pipelines and assets, run and watched from the terminal.",
    context_settings={"help_option_names": ["--help", "-h"]},
)
@click.option(
    "--home",
    type=click.Path(path_type=Path),
    help="Home folder for history and values [default: ./.dagtop]",
)
@click.option(
    "--pipelines",
    type=click.Path(path_type=Path),
    help="Folder of pipeline files [default: ./pipelines]",
)
@click.option("--verbose", "-v", is_flag=True, help="Log the engine's work")
@click.version_option(package_name="dagtop", message="%(prog)s %(version)s")
@click.pass_context
def app(ctx: click.Context, home: Path | None, pipelines: Path | None, verbose: bool) -> None:
    if verbose:
        import logging

        logging.basicConfig(level=logging.INFO)
        for handler in logging.getLogger().handlers:
            handler.setFormatter(RedactingFormatter("%(asctime)s %(name)s %(message)s"))
    ctx.obj = Client(home=home, pipelines=pipelines)
    ctx.obj.reads_over_socket = ctx.invoked_subcommand is not None  # the UI reads storage
    # However the command ends (the process then leaves with os._exit, which closes nothing):
    # checkpoint what it wrote, so no -wal and -shm files are left beside the database.
    ctx.call_on_close(ctx.obj.close)
    if ctx.invoked_subcommand is None:
        _open_tui(ctx.obj)


def _open_tui(client: Client) -> None:
    from engine.client.first_frame import FIRST_PAGE, FirstReads

    # Storage is checked and the first frame read on another core while the UI imports.
    first = FirstReads(client, FIRST_PAGE)
    try:
        from tui.app import run_app
    except ImportError:
        first.close()
        sys.stderr.write("dagtop: the terminal UI is not available; see `dagtop --help`\n")
        exit_with(2)
    run_app(client, first)


# --- definitions ------------------------------------------------------------------------------


@app.command()
@JSON_OPTION
@click.pass_obj
def check(client: Client, as_json: bool) -> None:
    """Load and validate every pipeline file; exit 1 if any is broken."""
    manifest = client.load(force=True)
    if as_json:
        emit_json(
            {
                "ok": manifest.ok,
                "files": sorted(manifest.files),
                "errors": [
                    {
                        "file": e.file,
                        "kind": e.kind,
                        "message": e.message,
                        "line": e.line,
                        "traceback": e.traceback,
                    }
                    for e in manifest.errors.values()
                ],
            }
        )
    else:
        # The project's settings file comes first when it is wrong ([resources.NAME] naming
        # no resource): it is no pipeline file, but its error is one of the project's.
        settings = [rel for rel in manifest.errors if rel not in manifest.files]
        for rel in [*settings, *sorted(manifest.files)]:
            err = manifest.errors.get(rel)
            if err is None:
                print(f"{GLYPHS['success']} {rel}")
            else:
                where = f":{err.line}" if err.line else ""
                print(f"{GLYPHS['failed']} {rel}{where}  {err.kind}: {err.message}")
        n_err = len(manifest.errors)
        print(
            f"{plural(len(manifest.files) + len(settings) - n_err, 'file')} ok, {n_err} broken; "
            f"{plural(len(manifest.assets), 'asset')}, "
            f"{plural(len(manifest.pipelines), 'task pipeline')}"
        )
    if not manifest.ok:
        exit_with(1)


@app.command("list")
@JSON_OPTION
@click.pass_obj
def list_(client: Client, as_json: bool) -> None:
    """Assets, task pipelines, schedules and sensors."""
    from engine.cli.listing import print_definitions

    data = client.describe()
    if as_json:
        emit_json(data)
    else:
        print_definitions(data)


# --- running ----------------------------------------------------------------------------------


class _Progress:
    """Prints each step once as it finishes (unless --json), from the views of the run that
    whoever runs it hands over as it changes (see `Client.materialize`)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.shown: set[tuple[str, int, str]] = set()
        self._lock = threading.Lock()

    def __call__(self, view: RunView) -> None:
        if self.quiet:
            return
        with self._lock:
            for st in view.steps:
                if not st.status.finished:
                    continue
                mark = (st.key, st.attempts, st.status)
                if mark in self.shown:
                    continue
                self.shown.add(mark)
                print(_step_line(st), flush=True)


def _step_line(st: Any) -> str:
    took = (st.ended_at - st.started_at) if st.ended_at and st.started_at else None
    parts = [
        f"{glyph(st.status)} {st.key:<24}",
        f"{st.status:<8}",
        f"try {st.attempts}/{st.max_attempts}",
        format_duration(took) if took is not None else "",
        format_bytes(st.peak_rss_bytes) if st.peak_rss_bytes else "",
    ]
    line = "  ".join(p for p in parts if p)
    return f"{line}  {st.error}" if st.error else line


def _finish_run(view: RunView, as_json: bool) -> None:
    if as_json:
        emit_json(view.to_json())
    else:
        took = (view.ended_at or time.time()) - (view.started_at or view.created_at)
        for c in view.checks:
            mark = GLYPHS[StepStatus.SUCCESS if c.passed else StepStatus.FAILED]
            print(f"  check {c.name} on {c.asset}: {mark}{' ' + c.error if c.error else ''}")
        print(f"{glyph(view.status)} run {view.id} {view.status} in {format_duration(took)}")
    if view.status != RunStatus.SUCCESS:
        exit_with(1)


_PARAM = click.option(
    "--param", multiple=True, metavar="KEY=VALUE", help="Run parameter KEY=VALUE (repeatable)"
)


@app.command()
@click.argument("selection", nargs=-1)
@click.option("--partition", help="Partition key to materialize")
@_PARAM
@click.option("--from-failure", help="Re-run a run's failed and skipped steps")
@click.option("--stale", is_flag=True, help="Only what is missing or stale, in order")
@JSON_OPTION
@click.pass_obj
def materialize(
    client: Client,
    selection: tuple[str, ...],
    partition: str | None,
    param: tuple[str, ...],
    from_failure: str | None,
    stale: bool,
    as_json: bool,
) -> None:
    """Materialize assets now and wait for the result.

    SELECTION: assets by name, +name, *name, name*, group:NAME, or *.
    """
    client.prewarm()
    progress = _Progress(as_json)
    if from_failure:
        if selection or stale:
            raise EngineError("--from-failure takes a run id, not a selection")
        view = client.rerun_from_failure(from_failure, on_change=progress)
    elif stale:
        _materialize_stale(client, selection, partition, _parse_params(param), progress, as_json)
        return
    else:
        if not selection:
            raise EngineError("name what to materialize: an asset, group:NAME, or *")
        params = _parse_params(param)
        _warn_unread_params(client, params, selection=selection)
        view = client.materialize(selection, partition=partition, params=params, on_change=progress)
    progress(view)
    _finish_run(view, as_json)


def _materialize_stale(
    client: Client,
    selection: tuple[str, ...],
    partition: str | None,
    params: dict[str, Any],
    progress: _Progress,
    as_json: bool,
) -> None:
    if not selection:
        raise EngineError("name what to bring up to date: an asset, group:NAME, or *")
    states, view = client.materialize_stale(
        selection, partition, params, on_change=progress, on_plan=None if as_json else _print_due
    )
    if as_json:
        emit_json({"states": [st.to_json() for st in states], "run": view and view.to_json()})
        if view is not None and view.status != RunStatus.SUCCESS:
            exit_with(1)
    elif view is None:
        print("nothing is stale")
    else:
        progress(view)
        _finish_run(view, as_json)


def _print_due(states: list[StaleState]) -> None:
    due = [st for st in states if st.status != Freshness.CURRENT]
    for st in due:
        where = f" [{st.partition}]" if st.partition else ""
        mark = GLYPHS[st.status]
        print(f"{mark} {st.asset + where:<24} {st.status}: {', '.join(st.reasons)}", flush=True)
    if due:
        print(f"materializing {len(due)} of {plural(len(states), 'asset')}", flush=True)


@app.command()
@click.argument("asset")
@click.option("--partition", help="Its partition key")
@click.option("--downstream", is_flag=True, help="What depends on it, instead of what made it")
@JSON_OPTION
@click.pass_obj
def lineage(
    client: Client, asset: str, partition: str | None, downstream: bool, as_json: bool
) -> None:
    """How an asset's value was produced: the materializations it consumed, back to the roots."""
    root = client.lineage(asset, partition, downstream=downstream)
    if as_json:
        emit_json(root.to_json())
        return

    from engine.client import render_lineage

    for line in render_lineage(root, downstream):
        print(line)


@app.command("run")
@click.argument("pipeline")
@_PARAM
@JSON_OPTION
@click.pass_obj
def run_(client: Client, pipeline: str, param: tuple[str, ...], as_json: bool) -> None:
    """Run a task pipeline now and wait for the result."""
    client.prewarm()
    progress = _Progress(as_json)
    params = _parse_params(param)
    _warn_unread_params(client, params, pipeline=pipeline)
    view = client.run_pipeline(pipeline, params, on_change=progress)
    progress(view)
    _finish_run(view, as_json)


@app.command()
@click.argument("run_id")
@click.pass_obj
def cancel(client: Client, run_id: str) -> None:
    """Cancel a run: queued steps are dropped, running ones stopped."""
    view = client.cancel(run_id)
    print(f"{glyph(view.status)} run {view.id} {view.status}")
    if not view.status.finished:
        exit_with(1)


# --- the engine, backfills, partitions ---------------------------------------------------------


@app.command()
@click.option(
    "--standby",
    is_flag=True,
    help="If an engine already runs on this database, wait and take over when it stops",
)
@click.pass_obj
def daemon(client: Client, standby: bool) -> None:
    """Run schedules, sensors and queued runs with no UI, until Ctrl-C or SIGTERM."""
    import logging

    client._ensure_home()
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO)
    log = client.paths.home / "daemon.log"
    os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))  # the user's only
    logging.getLogger().addHandler(logging.FileHandler(log))
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(fmt))
    exit_with(client.serve_forever(standby=standby))


@app.command()
@click.argument("selection", nargs=-1)
@click.option("--from", "first", help="First partition key")
@click.option("--to", "last", help="Last partition key (inclusive)")
@click.option("--partitions", help="Keys, comma-separated")
@click.option(
    "--max-parallel", type=click.IntRange(min=1), default=4, show_default=True, help="Runs at once"
)
@click.option("--resume", help="Resume a canceled or failed backfill")
@click.option("--cancel", "cancel_id", help="Cancel a backfill")
@click.option("--no-wait", is_flag=True, help="Return once recorded")
@JSON_OPTION
@click.pass_obj
def backfill(
    client: Client,
    selection: tuple[str, ...],
    first: str | None,
    last: str | None,
    partitions: str | None,
    max_parallel: int,
    resume: str | None,
    cancel_id: str | None,
    no_wait: bool,
    as_json: bool,
) -> None:  # fmt: skip
    """Materialize a range of partitions: one run per key, a few at a time (or one run per
    range, for assets with a backfill policy).

    SELECTION: the assets to backfill.
    """
    if cancel_id or resume:
        backfill_id = client.backfill_action(
            "cancel" if cancel_id else "resume", cancel_id or resume or ""
        )
        if cancel_id:
            info = client.backfill_progress(backfill_id)
            _print_backfill(info, as_json)
            return
    else:
        if not selection:
            raise EngineError("name what to backfill: an asset, group:NAME, or *")
        keys = [k.strip() for k in partitions.split(",") if k.strip()] if partitions else None
        if not no_wait:
            client.prewarm()  # a small backfill runs here, as `materialize` does
        backfill_id = client.backfill(selection, keys, first, last, max_parallel)
    if no_wait:
        info = client.backfill_progress(backfill_id)
    else:
        shown = None if as_json else BackfillProgress(sys.stdout)
        try:
            info = client.follow_backfill(backfill_id, shown)
        finally:
            if shown is not None:
                shown.close()
    _print_backfill(info, as_json)
    if info["status"] not in (BackfillStatus.SUCCESS, BackfillStatus.RUNNING):
        exit_with(1)


BAR = "█"  # the progress bar's fill
_ENDED = (RunStatus.SUCCESS, RunStatus.FAILED, RunStatus.CANCELED)  # a backfill run's ends
_BESIDE_THE_BAR = (RunStatus.FAILED, RunStatus.RUNNING, RunStatus.QUEUED, RunStatus.CANCELED)


class BackfillProgress:
    """Shows a backfill's progress as updates arrive.

    On a terminal: one line, redrawn in place. Anywhere else (a CI log, a file) a redrawn line
    would pile up as one line of carriage returns, so it prints a line when the backfill starts,
    one each time another tenth of its keys has finished, one at its first failure, and the
    caller prints the summary: a year of hourly keys reads as a dozen lines.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.tty = out.isatty()
        self.started = time.monotonic()
        self.drawn = False
        self.tenths = 0  # tenths of the keys reported finished so far
        self.failed = 0

    def __call__(self, info: dict[str, Any]) -> None:
        if self.tty:
            self._redraw(info)
        else:
            self._log(info)

    def close(self) -> None:
        """End the redrawn line (the summary follows on a line of its own)."""
        if self.tty and self.drawn:
            self.out.write("\n")
            self.out.flush()

    def _redraw(self, info: dict[str, Any]) -> None:
        c, total = info["counts"], info["total"]
        done = c.get(RunStatus.SUCCESS, 0)
        width = 30
        bar = BAR * int(width * done / total) if total else ""
        tail = "  ".join(f"{GLYPHS[status]} {c.get(status, 0)}" for status in _BESIDE_THE_BAR)
        self.out.write(f"\r{bar:<{width}} {done}/{total}  {tail} ")
        self.out.flush()
        self.drawn = True

    def _log(self, info: dict[str, Any]) -> None:
        c, total = info["counts"], info["total"]
        if not self.drawn:
            self.drawn = True
            self.out.write(
                f"backfill {info['id']}: {total} partitions of {', '.join(info['selection'])}, "
                f"{info['max_parallel']} at once\n"
            )
        finished = sum(c.get(status, 0) for status in _ENDED)
        tenths = finished * 10 // total if total else 10
        first_failure = c.get(RunStatus.FAILED, 0) > 0 and self.failed == 0
        self.failed = c.get(RunStatus.FAILED, 0)
        if tenths > self.tenths or first_failure:
            self.tenths = max(self.tenths, tenths)
            counts = "  ".join(
                f"{GLYPHS[status]} {c[status]}" for status in _ENDED if c.get(status)
            )
            took = format_duration(time.monotonic() - self.started)
            self.out.write(f"  {finished}/{total} finished  {counts}  ({took})\n")
        self.out.flush()


def _print_backfill(info: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(info)
        return
    print(
        f"{glyph(info['status'])} backfill {info['id']} {info['status']}: "
        f"{info['counts'].get('success', 0)}/{info['total']} partitions of "
        f"{', '.join(info['selection'])}"
    )


@app.command("backfills")
@JSON_OPTION
@click.pass_obj
def backfills_(client: Client, as_json: bool) -> None:
    """Recent backfills and their progress."""
    infos = client.backfills()
    if as_json:
        emit_json(infos)
        return
    for info in infos:
        _print_backfill(info, False)


# --- history ----------------------------------------------------------------------------------


@app.command()
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many runs"
)
@JSON_OPTION
@click.pass_obj
def runs(client: Client, limit: int, as_json: bool) -> None:  # fmt: skip
    """Recent runs, newest first."""
    views = client.runs(limit + 1)  # one more than shown: whether to say there are more
    more, views = len(views) > limit, views[:limit]
    if as_json:
        emit_json([v.to_json() for v in views])
        return
    for v in views:
        when = datetime.fromtimestamp(v.created_at).strftime("%Y-%m-%d %H:%M:%S")
        took = (v.ended_at or time.time()) - v.started_at if v.started_at else None
        done = sum(1 for s in v.steps if s.status == StepStatus.SUCCESS)
        print(
            f"{glyph(v.status)} {v.id}  {v.status:<8} {when}  "
            f"{format_duration(took):>8}  {done}/{len(v.steps)}  {v.trigger:<8} "
            f"{v.target}{' [' + v.partition + ']' if v.partition else ''}"
            f"{'  (' + one_line(v.reason) + ')' if v.reason else ''}"
        )
    if more:
        print(f"… more runs not shown (--limit {limit * 2} shows more)")


app.add_command(cli_logs.logs)
app.add_command(cli_db.db)
for command in (*cli_assets.COMMANDS, *cli_automation.COMMANDS):
    app.add_command(command)


def main() -> None:
    code: int = 0
    try:
        app(prog_name="dagtop")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if isinstance(exc.code, str):
            sys.stderr.write(exc.code + "\n")
    except EngineError as exc:
        sys.stderr.write(f"dagtop: error: {redact(exc.msg)}\n")
        code = 2
    except KeyboardInterrupt:
        sys.stderr.write("dagtop: interrupted\n")
        code = 130
    # Everything is committed and printed; tearing down the interpreter (SQLAlchemy's and
    # pydantic's modules) would add a fifth to a short command's time for nothing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


__all__ = ["app", "iso", "main"]
