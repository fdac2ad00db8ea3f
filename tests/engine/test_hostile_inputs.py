"""Hostile inputs: random (and randomly broken) pipeline folders for the loader, and hostile
partition keys and params everywhere a string becomes a path, an environment variable or a
command-line argument.

Properties:
- `engine.loading.loader.load` never raises, never hangs and leaves no process behind, whatever the
  files do; every discovered file is either loaded or has exactly one FileError; the files that
  should load do, with all of their assets; a second load from the cache says the same.
- `safe_key`, `launch.log_path_for` and the value path `launch.prepare` builds stay inside the
  home folder for any key; a real run of a StaticPartitions asset whose keys are hostile writes
  only inside the home folder and succeeds or fails with a clear one-line error.
- `dagtop materialize --param ...` with hostile values never prints a traceback.
- A key holding a control character (a static partition key, a key or a parameter name on the
  command line, a group, schedule or sensor name) is refused with one line, so the text output
  of `runs`, `partitions` and `lineage` keeps one line per item and cannot be spoofed.

Known bugs are marked `xfail(strict=True)` with the reason; they pass the day the bug is fixed
(and then fail as XPASS, so the mark gets removed).
"""

from __future__ import annotations

import json
import keyword
import os
import pickle
import subprocess
import sys
import tempfile
import textwrap
import time
import unicodedata
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import psutil
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine.authoring.partitions import StaticPartitions, safe_key
from engine.executor import launch
from engine.executor.spawn import Launch
from engine.loading import loader
from engine.loading.config import Paths
from engine.loading.manifest import AssetSpec, Manifest
from engine.status import RunStatus
from engine.units import control_character

pytestmark = pytest.mark.serial

DAGTOP = str(Path(sys.executable).with_name("dagtop"))
TOKEN_VAR = "DAGTOP_HOSTILE_TEST_TOKEN"

# --- hostile strings ------------------------------------------------------------------------------

HOSTILE = [
    "../",
    "..",
    ".",
    "...",
    "../../../../etc/passwd",
    "/etc/passwd",
    "a/../../b",
    "a\\..\\..\\b",
    "C:\\Windows\\system32",
    "\\\\server\\share",
    "a\x00b",
    "\x00",
    "x" * 10_000,
    "é" * 300,
    "日本語 ☃ 🐍",
    "line\nbreak",
    "\r\n",
    "tab\there",
    "-rf",
    "--help",
    "-",
    "CON",
    "con.txt",
    "NUL",
    "aux.tar.gz",
    "COM1",
    "lpt9",
    "  ",
    " leading",
    "trailing.",
    "~",
    "~root",
    "$HOME",
    "`id`",
    "$(id)",
    "%2e%2e%2f",
    "\u202eevil",
    "\ud800",
    "ﬁ",
    ".hidden",
    "a" * 255,
]
hostile_text = st.one_of(
    st.sampled_from(HOSTILE),
    st.text(max_size=300),
    st.text(alphabet=st.sampled_from(list('./\\\x00-~ :*?"<>|\n')), max_size=40),
    st.lists(st.sampled_from(["..", ".", "", "etc", "passwd", "~"]), max_size=8).map("/".join),
)


def inside(path: Path | str, folder: Path | str) -> bool:
    """Whether `path`, normalised without touching the disk, is inside `folder`."""
    norm, base = os.path.normpath(str(path)), os.path.normpath(str(folder))
    return norm.startswith(base + os.sep)


# --- no process left behind -----------------------------------------------------------------------


def tagged_processes(token: str) -> list[psutil.Process]:
    """Live processes whose environment carries `token` (our children, grandchildren, ...)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid == os.getpid() or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            if proc.environ().get(TOKEN_VAR) == token:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@contextmanager
def tagged() -> Iterator[str]:
    """Tag every process started inside the block (through the environment); kill leftovers."""
    token = uuid.uuid4().hex
    old = os.environ.get(TOKEN_VAR)
    os.environ[TOKEN_VAR] = token
    try:
        yield token
    finally:
        if old is None:
            os.environ.pop(TOKEN_VAR, None)
        else:
            os.environ[TOKEN_VAR] = old
        for proc in tagged_processes(token):
            proc.kill()


def assert_no_leftovers(token: str, grace: float = 2.0) -> None:
    deadline = time.monotonic() + grace
    while True:
        left = tagged_processes(token)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"processes left behind: {[' '.join(p.cmdline()) for p in left]}"


# --- random pipeline folders ----------------------------------------------------------------------

# Names a generated module binds itself; an asset with one of them would shadow it.
RESERVED = {
    "asset", "check", "schedule", "file_sensor", "CheckResult", "DailyPartitions",
    "HourlyPartitions", "StaticPartitions", "context", "os", "time",
}  # fmt: skip
UNICODE_NAMES = ["données", "名前", "ñandú", "Ωmega", "straße", "день", "π"]
# Breakages that make the import itself fail, and those only cross-file validation sees.
IMPORT_LEVEL = {
    "syntax", "raise", "sysexit", "keyboard", "exit", "bad_memory", "bad_timeout",
    "bad_partitions", "bad_name", "close_fds", "control_key",
}  # fmt: skip
VALIDATION_LEVEL = {
    "unknown_input", "cycle", "self_cycle", "duplicate", "bad_cron", "check_unknown",
    "bad_target", "missing_folder",
}  # fmt: skip
BAD_MEMORY = ["12 parsecs", "-5MiB", "0", "", "MiB", "1.5.5GB", "NaN", "lots", "0.1"]
BAD_CRON = ["61 * * * *", "every day", "", "* * * *", "@fortnightly", "* * * * * *", "a b c d e"]
GOOD_CRON = ["* * * * *", "@daily", "0 3 * * 1-5", "*/5 * * * *", "0 0 30 2 *", "@hourly"]
ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]


def _usable(name: str) -> bool:
    return (
        name.isidentifier()
        and not keyword.iskeyword(name)
        and name not in RESERVED
        and not name.startswith(("__", "check_", "zz_", "cyc_", "dup_"))
        and unicodedata.normalize("NFKC", name) == name
    )


identifiers = st.one_of(
    st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,14}", fullmatch=True),
    st.sampled_from(UNICODE_NAMES),
).filter(_usable)
# File names: no "__" and no subfolder that could spell another file's module name (that
# collision is its own test below), no dots (a dotted name is an import error, tested too).
file_names = st.from_regex(r"[a-z][a-z0-9]{0,8}(-[a-z0-9]{1,4})?( [a-z]{1,4})?", fullmatch=True)


@dataclass
class GenAsset:
    name: str
    inputs: list[str]
    deps: list[str]
    partitions: str | None
    context: bool
    check: bool


@dataclass
class GenFile:
    rel: str
    assets: list[GenAsset] = field(default_factory=list)
    breakage: str = "none"
    extra: str = ""  # the value the breakage uses (a name, a cron, ...)
    schedule: str | None = None  # a valid cron on this file's first asset

    @property
    def names(self) -> list[str]:
        return [a.name for a in self.assets]


@st.composite
def partitions_exprs(draw: st.DrawFn) -> str | None:
    kind = draw(st.sampled_from([None, None, "daily", "hourly", "static"]))
    if kind == "daily":
        day = draw(st.dates(min_value=date(1990, 1, 1)))
        return f"DailyPartitions(start={day.isoformat()!r})"
    if kind == "hourly":
        day = draw(st.dates(min_value=date(2000, 1, 1)))
        zone = draw(st.sampled_from(ZONES))
        return f"HourlyPartitions(start={day.isoformat()!r}, timezone={zone!r})"
    if kind == "static":
        # A control character (NUL, a newline, ...) is refused in a static key: that case has
        # tests of its own (and a breakage of its own below).
        key_text = hostile_text.filter(lambda k: bool(k) and control_character(k) is None)
        keys = draw(st.lists(key_text, min_size=1, max_size=5, unique=True))
        return f"StaticPartitions({keys!r})"
    return None


@st.composite
def projects(draw: st.DrawFn) -> list[GenFile]:
    rels = draw(st.lists(file_names, min_size=1, max_size=5, unique_by=str.lower))
    files = [GenFile(rel=f"{r}.py") for r in rels]
    if len(files) > 1 and draw(st.booleans()):
        files[-1].rel = f"sub/{files[-1].rel}"  # one file in a subfolder
    names = draw(st.lists(identifiers, max_size=12, unique_by=str.lower))
    made: list[str] = []
    for name in names:
        gf = files[draw(st.integers(0, len(files) - 1))]
        ups = draw(st.lists(st.sampled_from(made), max_size=3, unique=True)) if made else []
        split = draw(st.integers(0, len(ups)))
        gf.assets.append(
            GenAsset(
                name=name,
                inputs=ups[:split],
                deps=ups[split:],
                partitions=draw(partitions_exprs()),
                context=draw(st.booleans()),
                check=draw(st.booleans()),
            )
        )
        made.append(name)
    # "none" first: hypothesis leans towards the first choices, and most files should load.
    choices = ["none"] * len(IMPORT_LEVEL | VALIDATION_LEVEL) + sorted(
        IMPORT_LEVEL | VALIDATION_LEVEL
    )
    for i, gf in enumerate(files):
        gf.breakage = draw(st.sampled_from(choices))
        if gf.breakage == "bad_memory":
            gf.extra = draw(st.sampled_from(BAD_MEMORY))
        elif gf.breakage == "bad_cron":
            gf.extra = draw(st.sampled_from(BAD_CRON))
        elif gf.breakage == "duplicate":
            others = [n for j, f in enumerate(files) if j != i for n in f.names]
            if not others:
                gf.breakage = "unknown_input"
            else:
                gf.extra = draw(st.sampled_from(others))
        if len(gf.assets) > 0 and draw(st.booleans()):
            gf.schedule = draw(st.sampled_from(GOOD_CRON))
    return files


HEADER = """\
import os
import time

from engine import (
    CheckResult, DailyPartitions, HourlyPartitions, StaticPartitions, asset, check, file_sensor,
    schedule,
)
"""


def render(gf: GenFile, index: int) -> str:
    blocks = [HEADER]
    b = gf.breakage
    if b == "close_fds":
        blocks.append("os.closerange(3, 1024)  # every inherited descriptor, the loader's too")
    for k, a in enumerate(gf.assets):
        opts = []
        if a.partitions:
            opts.append(f"partitions={a.partitions}")
        if a.deps:
            opts.append(f"deps={a.deps!r}")
        if b == "bad_memory" and k == 0:
            opts.append(f"memory_limit={gf.extra!r}")
        if b == "bad_timeout" and k == 0:
            opts.append("timeout=-1")
        params = (["context"] if a.context else []) + a.inputs
        if b == "unknown_input" and k == 0:
            params.append(f"zz_missing_{index}")
        blocks.append(
            f"@asset({', '.join(opts)})\ndef {a.name}({', '.join(params)}):\n    return 1\n"
        )
        if a.check:
            blocks.append(
                f"@check(asset={a.name!r})\ndef check_{index}_{k}({a.name}):\n"
                f"    return CheckResult(passed=True)\n"
            )
    first = gf.assets[0].name if gf.assets else None
    if gf.schedule and first:
        blocks.append(f"schedule({gf.schedule!r}, {first!r}, name='sched_{index}')\n")
    extra = {
        "syntax": "def broken(:\n    pass\n",
        "raise": "raise RuntimeError('hostile import')\n",
        "sysexit": "raise SystemExit(3)\n",
        "keyboard": "raise KeyboardInterrupt\n",
        "exit": "os._exit(7)\n",
        "bad_partitions": "StaticPartitions(['same', 'same'])\n",
        "control_key": "StaticPartitions(['fine', 'forged\\n✓ line'])\n",
        "bad_name": "asset(name='not an identifier')(lambda: 1)\n",
        "unknown_input": (
            ""
            if gf.assets
            else f"@asset\ndef zz_lonely_{index}(zz_missing_{index}):\n    return 1\n"
        ),
        "cycle": (
            f"@asset\ndef cyc_a_{index}(cyc_b_{index}):\n    return 1\n\n"
            f"@asset\ndef cyc_b_{index}(cyc_a_{index}):\n    return 1\n"
        ),
        "self_cycle": f"@asset\ndef cyc_self_{index}(cyc_self_{index}):\n    return 1\n",
        "duplicate": f"@asset(name={gf.extra!r})\ndef dup_{index}():\n    return 1\n",
        "bad_cron": f"schedule({gf.extra!r}, {first or 'zz_any'!r}, name='badcron_{index}')\n",
        "check_unknown": (
            f"@check(asset='zz_nothing_{index}')\ndef check_zz_{index}(zz_nothing_{index}):\n"
            f"    return True\n"
        ),
        "bad_target": f"schedule('* * * * *', 'zz_target_{index}', name='badtarget_{index}')\n",
        "missing_folder": (
            f"file_sensor('sensor_{index}', path='zz_no_such_folder', target={first or 'x'!r})\n"
        ),
        "bad_memory": "" if gf.assets else "asset(memory_limit='lots')(time.sleep)\n",
        "bad_timeout": "" if gf.assets else "asset(timeout=-1)(time.sleep)\n",
    }.get(b, "")
    if extra:
        # Some breakages come first (nothing of the file registers), some last.
        if b in ("syntax", "raise") and index % 2:
            blocks.insert(1, extra)
        else:
            blocks.append(extra)
    if b == "none" and index % 3 == 0:
        blocks.append(f"file_sensor('sensor_{index}', path='.', target={first or 'x'!r})\n")
        if not first:
            blocks.pop()
    return "\n\n".join(blocks)


def expected_broken(files: list[GenFile]) -> set[str]:
    """The files the loader must report broken: broken themselves, or relying on one."""
    broken = {f.rel for f in files if f.breakage in IMPORT_LEVEL}
    defined: dict[str, list[str]] = {}
    for f in files:
        if f.rel in broken:
            continue
        for name in f.names + ([f.extra] if f.breakage == "duplicate" else []):
            defined.setdefault(name, []).append(f.rel)
    for owners in defined.values():
        if len(owners) > 1:
            broken.update(owners)
    # A duplicate is broken only if the name it repeats is defined by a file that imports.
    broken |= {f.rel for f in files if f.breakage in VALIDATION_LEVEL - {"duplicate"}}
    changed = True
    while changed:
        changed = False
        for f in files:
            if f.rel in broken:
                continue
            for a in f.assets:
                ups = a.inputs + a.deps
                if any(not set(defined.get(u, ())) - broken for u in ups):
                    broken.add(f.rel)
                    changed = True
                    break
    return broken


def write_project(root: Path, files: list[GenFile]) -> None:
    for i, gf in enumerate(files):
        path = root / gf.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render(gf, i), encoding="utf-8")


def check_manifest(manifest: Manifest, files: list[GenFile]) -> None:
    rels = {f.rel for f in files}
    assert set(manifest.files) == rels
    assert set(manifest.errors) <= rels  # one error per file at most: a dict keyed by file
    for rel, err in manifest.errors.items():
        assert err.file == rel and err.kind and err.message, err
        assert "\n" not in err.message, f"a multi-line message for {rel}: {err.message!r}"
    broken = expected_broken(files)
    for gf in files:
        if gf.rel in broken:
            assert gf.rel in manifest.errors, f"{gf.rel} ({gf.breakage}) should be broken"
            continue
        assert gf.rel not in manifest.errors, (gf.rel, manifest.errors[gf.rel])
        for a in gf.assets:
            spec = manifest.assets.get(a.name)
            assert spec is not None, f"asset {a.name} of {gf.rel} is missing"
            assert spec.file == gf.rel
            assert spec.inputs == tuple(a.inputs) and spec.deps == tuple(a.deps)
            assert (spec.partitions is None) == (a.partitions is None)
            if a.check:
                assert any(c.file == gf.rel for c in manifest.checks.get(a.name, []))
    kinds = {"syntax": "syntax", "raise": "import", "sysexit": "import", "exit": "crash"}
    for gf in files:
        if gf.breakage in kinds:
            assert manifest.errors[gf.rel].kind == kinds[gf.breakage], manifest.errors[gf.rel]
    # Whatever broke, the definitions of broken files are gone.
    for a_name, spec in manifest.assets.items():
        assert spec.file not in manifest.errors, a_name


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(projects())
def test_random_pipeline_folders_load_into_a_consistent_manifest(files: list[GenFile]) -> None:
    with tempfile.TemporaryDirectory() as tmp, tagged() as token:
        root = Path(tmp) / "pipelines"
        home = Path(tmp) / "home"
        root.mkdir()
        write_project(root, files)
        started = time.monotonic()
        manifest = loader.load(root, cache_dir=home, timeout=5)
        took = time.monotonic() - started
        assert took < 20, f"loading {len(files)} small files took {took:.1f} s"
        check_manifest(manifest, files)
        again = loader.load(root, cache_dir=home, timeout=5)  # from the cache, mostly
        assert sorted(again.assets) == sorted(manifest.assets)
        assert {k: e.kind for k, e in again.errors.items()} == {
            k: e.kind for k, e in manifest.errors.items()
        }
        assert_no_leftovers(token)


def _load(root: Path, timeout: float = 5) -> Manifest:
    with tagged() as token:
        manifest = loader.load(root, timeout=timeout)
        assert_no_leftovers(token)
    return manifest


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(textwrap.dedent(text))
    return root


FINE = "from engine import asset\n\n@asset\ndef fine():\n    return 1\n"


def test_a_file_that_hangs_costs_only_itself(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "pipelines",
        {
            "a_hang.py": "import time\ntime.sleep(600)\n",
            "b_fine.py": FINE,
            "c_hang.py": "while 1: pass\n",
        },
    )
    started = time.monotonic()
    manifest = _load(root, timeout=1)
    assert time.monotonic() - started < 10
    assert manifest.errors["a_hang.py"].kind == "timeout"
    assert manifest.errors["c_hang.py"].kind == "timeout"
    assert "fine" in manifest.assets


def test_dotted_and_odd_file_names_load_or_fail_with_an_error(tmp_path: Path) -> None:
    odd = ["my file.py", "ünï-côdé.py", "0start.py", "con.py", "a.b.py", "x y.z.py", "-dash.py"]
    root = _write(
        tmp_path / "pipelines",
        {
            name: f"from engine import asset\n\n@asset\ndef a{i}():\n    return {i}\n"
            for i, name in enumerate(odd)
        },
    )
    manifest = _load(root)
    assert set(manifest.files) == set(odd)
    for i, name in enumerate(odd):
        assert (f"a{i}" in manifest.assets) != (name in manifest.errors), name


def test_two_files_that_spell_the_same_module_name_are_both_loaded_or_flagged(
    tmp_path: Path,
) -> None:
    root = _write(
        tmp_path / "pipelines",
        {
            "sub__a.py": "from engine import asset\n\n@asset\ndef top():\n    return 1\n",
            "sub/a.py": "from engine import asset\n\n@asset\ndef nested():\n    return 1\n",
        },
    )
    manifest = _load(root)
    # Both spell dagtop_pipelines.sub__a: each is flagged, naming the other, rather than one
    # silently shadowing the other.
    assert manifest.errors["sub__a.py"].kind == "name-clash"
    assert "sub/a.py" in manifest.errors["sub__a.py"].message
    assert manifest.errors["sub/a.py"].kind == "name-clash"


def test_a_process_started_at_import_does_not_outlive_the_load(tmp_path: Path) -> None:
    root = _write(
        tmp_path / "pipelines",
        {"spawner.py": "import subprocess\nsubprocess.Popen(['sleep', '30'])\n" + FINE},
    )
    with tagged() as token:
        manifest = loader.load(root, timeout=5)
        assert "fine" in manifest.assets
        assert_no_leftovers(token, grace=1.0)


def test_garbage_on_the_loaders_pipe_costs_only_that_file(tmp_path: Path) -> None:
    garbage = (
        "import os\n"
        "for fd in range(3, 64):\n"
        "    try:\n"
        "        os.write(fd, b'not json\\n')\n"
        "    except OSError:\n"
        "        pass\n"
    )
    root = _write(tmp_path / "pipelines", {"a_garbage.py": garbage, "b_fine.py": FINE})
    manifest = _load(root)
    assert "fine" in manifest.assets
    assert set(manifest.errors) <= {"a_garbage.py"}


@pytest.mark.parametrize("limit", ["1" + "0" * 400, float("inf")], ids=["huge-string", "inf"])
def test_an_absurd_memory_limit_is_a_definition_error(limit: Any) -> None:
    from engine import asset
    from engine.errors import DefinitionError

    def step() -> int:
        return 1

    with pytest.raises(DefinitionError):
        asset(memory_limit=limit)(step)


def test_a_nan_timeout_is_a_definition_error() -> None:
    from engine import asset
    from engine.errors import DefinitionError

    def step() -> int:
        return 1

    with pytest.raises(DefinitionError):
        asset(timeout=float("nan"))(step)


# --- keys and params as paths ---------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@example("..")
@example("../../etc/passwd")
@example("/etc/passwd")
@example("x" * 10_000)
@example("\ud800")
@given(hostile_text)
def test_safe_key_is_one_harmless_path_component(key: str) -> None:
    name = safe_key(key)
    assert name and len(name) <= 120
    assert name.isascii() and name.isprintable()
    assert not set(name) & set('/\\\x00:*?"<>|'), name
    # A hashed name keeps a readable prefix, leading "-" included (harmless: the engine only
    # ever uses it inside an absolute path).
    assert name not in (".", "..") and not name.startswith(".") and not name.endswith(".")
    base = "/srv/dagtop/.dagtop/values/asset"
    assert os.path.dirname(os.path.normpath(os.path.join(base, name))) == base


def _asset_spec(name: str, keys: list[str]) -> AssetSpec:
    return AssetSpec(
        name=name, file="hostile.py", module="dagtop_pipelines.hostile", line=1, group="default",
        partitions=StaticPartitions(keys).to_spec(), inputs=(), optional_inputs=(), deps=(),
        retries=0, retry_delay=1.0, timeout=None, memory_limit=None, pool=None, description=None,
        tags={}, io="pickle", code_version="v1",
    )  # fmt: skip


def _prepare(home: Path, key: str, params: dict[str, object]) -> Launch:
    paths = Paths(home=home, pipelines=home.parent / "pipelines")
    manifest = Manifest(
        root=str(paths.pipelines), assets={"hostile": _asset_spec("hostile", [key])}
    )
    run: Any = SimpleNamespace(
        id=uuid.uuid4().hex[:12], kind="assets", partition=key, params=json.dumps(params),
        selection=json.dumps(["hostile"]),
    )  # fmt: skip
    no_session: Any = None  # an asset without inputs never reads storage
    return launch.prepare(no_session, manifest, paths, run, "hostile", 1)


@settings(max_examples=200, deadline=None)
@example("../../../../etc", "../../etc")
@example("/etc/passwd", "/etc/passwd")
@example("a b", "\x00")
@given(hostile_text.filter(lambda k: bool(k) and control_character(k) is None), hostile_text)
def test_the_paths_a_launch_builds_stay_in_the_home_folder(key: str, value: str) -> None:
    home = Path("/srv/dagtop/project/.dagtop")
    built = _prepare(home, key, {"path": value, value: key})
    assert built.spec is not None
    stem = built.spec["output_stem"]
    assert inside(stem, home / "values" / "hostile"), stem
    assert len(Path(stem).relative_to(home / "values" / "hostile").parts) == 2  # key dir, file
    assert inside(built.log_path, home / "logs"), built.log_path
    assert built.spec["partition"] == key and built.spec["params"]["path"] == value
    json.dumps(built.spec)  # the spec is written as JSON for the worker


@settings(max_examples=200, deadline=None)
@given(hostile_text, st.integers(min_value=1, max_value=10**6))
def test_log_paths_stay_in_their_runs_log_folder(key: str, attempt: int) -> None:
    home = Path("/srv/dagtop/project/.dagtop")
    paths = Paths(home=home, pipelines=home.parent / "pipelines")
    run_id = uuid.uuid4().hex[:12]
    path = launch.log_path_for(paths, run_id, key, attempt)
    assert path.parent == home / "logs" / run_id
    assert inside(path, home / "logs" / run_id)
    assert path.name.endswith(f".{attempt}.log")


def test_a_launch_environment_can_be_passed_to_exec() -> None:
    env = launch._step_env("r", "k", 1, "a\x00b", Path("/srv/dagtop/project/.dagtop"))
    assert all("\x00" not in k + v for k, v in env.items())


# Keys that would break a line of `dagtop runs` or `partitions` (or forge one), start a terminal
# escape sequence, or cannot travel in a file name or an environment variable (NUL).
CONTROL_KEYS = [
    "line\nbreak",
    "forged\n✓ 0123456789ab  success",
    "\r\n",
    "tab\there",
    "esc\x1b[2Jclear",
    "a\x00b",
    "del\x7f",
    "c1\x85",
    "para\u2029graph",
]


@pytest.mark.parametrize("key", CONTROL_KEYS, ids=lambda k: repr(k)[:20])
def test_a_control_character_in_a_static_key_is_refused_where_it_is_written(key: str) -> None:
    with pytest.raises(ValueError, match="control character") as caught:
        StaticPartitions(["fine", key])
    assert "\n" not in str(caught.value)


@settings(max_examples=300, deadline=None)
@given(hostile_text.filter(bool))
def test_a_static_key_is_refused_exactly_when_it_holds_a_control_character(key: str) -> None:
    try:
        StaticPartitions([key])
    except ValueError as exc:
        assert control_character(key) is not None, exc
        assert "\n" not in str(exc)
    else:
        assert control_character(key) is None


# --- real runs with hostile static keys -----------------------------------------------------------

RUN_KEYS = [
    "../../../escape",
    "..",
    "/etc/passwd",
    "x" * 10_000,
    "日本語 ☃",
    "-rf",
    "CON",
    "nul.txt",
    "a\\..\\b",
    "~",
]
HOSTILE_PIPELINE = """\
from engine import StaticPartitions, asset

KEYS = {keys!r}


@asset(partitions=StaticPartitions(KEYS))
def hostile(context):
    return context.partition
"""


def _project(root: Path, keys: list[str]) -> tuple[Path, Path]:
    pipelines = root / "deep" / "er" / "project" / "pipelines"
    pipelines.mkdir(parents=True)
    (pipelines / "hostile.py").write_text(HOSTILE_PIPELINE.format(keys=keys))
    return pipelines.parent / "home", pipelines


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def hostile_project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, object]]:
    from engine.client import Client

    root = tmp_path_factory.mktemp("hostile")
    home, pipelines = _project(root, RUN_KEYS)
    client = Client(home, pipelines)
    client.load()
    yield root, client
    if client._warm_server is not None:
        client._warm_server.close()


def _check_run(root: Path, client: object, key: str) -> None:
    from engine.client import Client
    from engine.storage import repo

    assert isinstance(client, Client)
    home = client.paths.home
    before = _files(root)
    view = client.materialize(["hostile"], partition=key)
    created = _files(root) - before
    outside = [
        p for p in created
        if not inside(p, home) and "__pycache__" not in p.parts
    ]  # fmt: skip
    assert not outside, f"files created outside the home folder: {outside}"
    assert view.status in (RunStatus.SUCCESS, RunStatus.FAILED)
    (step,) = view.steps
    logs = "".join(ref.path.read_text(errors="replace") for ref in client.logs(view.id))
    if view.status == RunStatus.FAILED:
        assert step.error and "\n" not in step.error, step.error
        assert not step.error.startswith("exited with code"), f"unclear error: {step.error}"
    assert "Traceback" not in logs, logs[-2000:]
    if view.status == RunStatus.SUCCESS:
        with client._read() as s:
            (mat,) = repo.materializations_of_runs(s, [view.id])[view.id]
        assert mat.value_path and inside(mat.value_path, home / "values" / "hostile")
        assert mat.partition == key
        with open(mat.value_path, "rb") as fh:
            assert pickle.load(fh) == key


@pytest.mark.parametrize("key", RUN_KEYS, ids=lambda k: repr(k)[:20])
def test_a_run_with_a_hostile_static_key_stays_in_the_home_folder(
    hostile_project: tuple[Path, object], key: str
) -> None:
    root, client = hostile_project
    _check_run(root, client, key)


@pytest.mark.parametrize("key", CONTROL_KEYS[:3] + ["a\x00b"], ids=lambda k: repr(k)[:20])
def test_a_pipeline_with_a_control_character_in_a_static_key_is_a_clear_load_error(
    tmp_path: Path, key: str
) -> None:
    from engine.client import Client

    home, pipelines = _project(tmp_path, ["fine", key])
    manifest = Client(home, pipelines).load()  # through the real loader child
    (error,) = manifest.errors.values()
    assert error.file == "hostile.py" and error.line == 6, error  # the @asset(...) line
    assert "control character" in error.message and "\n" not in error.message
    assert "hostile" not in manifest.assets


# --- params through the command line --------------------------------------------------------------

PARAMS_PIPELINE = """\
from engine import StaticPartitions, asset


@asset
def echo(context):
    return dict(context.params)


@asset(partitions=StaticPartitions(["-rf", "../../etc", "/etc/passwd"]))
def hostile(context):
    return context.partition
"""


@pytest.fixture(scope="module")
def cli_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    (root / "pipelines").mkdir()
    (root / "pipelines" / "echo.py").write_text(PARAMS_PIPELINE)
    return root


def dagtop(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DAGTOP, "--home", str(root / "home"), "--pipelines", str(root / "pipelines"), *args],
        capture_output=True, text=True, timeout=60, cwd=root, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_hostile_params_round_trip_through_the_cli(cli_project: Path) -> None:
    # argv cannot carry a NUL (exec takes C strings); a value that is JSON can: "\u0000".
    raw = {
        "path": "../../etc",
        "abs": "/etc/passwd",
        "nul": '"\\u0000"',
        "newline": "a\nb",
        "dash": "-rf",
        "win": "CON",
        "long": "x" * 10_000,
        "uni": "日本語 ☃ 🐍",
        "surrogate": '"\\ud800"',
        "json": '{"a": [1, 2, {"b": null}]}',
        "eq": "a=b=c",
        "empty": "",
        " spaced key ": "v",
    }
    args = [f"--param={k}={v}" for k, v in raw.items()]
    before = _files(cli_project)
    done = dagtop(cli_project, "materialize", "echo", *args, "--json")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    run = json.loads(done.stdout)
    assert run["status"] == RunStatus.SUCCESS
    params = run["params"]
    assert params["path"] == "../../etc" and params["nul"] == "\x00"
    assert params["newline"] == "a\nb" and params["long"] == "x" * 10_000
    assert params["json"] == {"a": [1, 2, {"b": None}]} and params["eq"] == "a=b=c"
    assert params["surrogate"] == "\ud800" and params["spaced key"] == "v"
    created = _files(cli_project) - before
    home = cli_project / "home"
    assert all(inside(p, home) or "__pycache__" in p.parts for p in created), created


@pytest.mark.parametrize(
    "param", ["=x", "noequals", "  =v"], ids=["empty-key", "no-equals", "blank-key"]
)
def test_a_malformed_param_is_one_line_and_exit_2(cli_project: Path, param: str) -> None:
    done = dagtop(cli_project, "materialize", "echo", f"--param={param}")
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_deeply_nested_json_param_never_prints_a_traceback(cli_project: Path) -> None:
    deep = "[" * 5000 + "]" * 5000
    done = dagtop(cli_project, "materialize", "echo", f"--param=k={deep}", "--json")
    assert "Traceback" not in done.stderr, done.stderr[-500:]
    assert done.returncode in (0, 2)


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--partition", "-rf"], "-rf"),
        (["--partition=../../etc"], "../../etc"),
    ],
    ids=["leading-dash", "dotdot"],
)
def test_a_hostile_partition_on_the_command_line_runs_inside_home(
    cli_project: Path, args: list[str], key: str
) -> None:
    before = _files(cli_project)
    done = dagtop(cli_project, "materialize", "hostile", *args, "--json")
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["partition"] == key
    created = _files(cli_project) - before
    home = cli_project / "home"
    assert all(inside(p, home) or "__pycache__" in p.parts for p in created), created


def test_an_unknown_hostile_partition_is_one_line_and_exit_2(cli_project: Path) -> None:
    done = dagtop(cli_project, "materialize", "hostile", "--partition=../../nope\nx")
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_hostile_keys_get_distinct_folders_even_on_case_insensitive_disks() -> None:
    keys = set([*RUN_KEYS, *CONTROL_KEYS, *HOSTILE, "con", "Con", "A", "a", "..", "..."])
    assert len({safe_key(k).casefold() for k in keys}) == len(keys)


# --- control characters in keys -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["materialize", "hostile", "--partition=a\nb"],
        ["materialize", "hostile", "--partition=-rf\x1b[2J"],
        ["backfill", "hostile", "--partitions=-rf,forged\n✓ line"],
        ["backfill", "hostile", "--from=-rf", "--to=a\rb"],
        ["lineage", "hostile", "--partition=a\u2028b"],
        ["materialize", "echo", "--param=a\nb=1"],
        ["run", "nope", "--param=k\x1b[31m=1"],
    ],
    ids=["newline", "escape", "backfill-keys", "backfill-range", "lineage", "param", "run-param"],
)
def test_a_control_character_in_a_key_on_the_command_line_is_one_line_and_exit_2(
    cli_project: Path, args: list[str]
) -> None:
    done = dagtop(cli_project, *args)
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "control character" in line, line
    assert control_character(line) is None


def test_text_output_keeps_one_line_per_run_partition_and_lineage_node(cli_project: Path) -> None:
    # A parameter's value may hold anything (a query, a JSON document): it is data, kept as
    # given, and escaped where it is printed inside a line.
    note = "line one\n✓ forged line\x1b[2J"
    done = dagtop(cli_project, "materialize", "echo", f"--param=note={note}", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["params"]["note"] == note
    lineage = dagtop(cli_project, "lineage", "echo")
    assert lineage.returncode == 0, lineage.stderr
    (line,) = lineage.stdout.splitlines()
    assert "note=line one\\n✓ forged line\\x1b[2J" in line

    for key in ("-rf", "../../etc"):
        assert dagtop(cli_project, "materialize", "hostile", f"--partition={key}").returncode == 0
    runs = json.loads(dagtop(cli_project, "runs", "--limit", "1000", "--json").stdout)
    text = dagtop(cli_project, "runs", "--limit", "1000").stdout.splitlines()
    assert len(text) == len(runs) and all(control_character(t) is None for t in text)
    partitions = dagtop(cli_project, "partitions", "hostile").stdout.splitlines()
    assert len(partitions) == 3 + 1  # a line per key, and the counts


def test_a_static_key_that_would_forge_a_line_of_output_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "spoof.py").write_text(
        "from engine import StaticPartitions, asset\n\n\n"
        "@asset(partitions=StaticPartitions(['eu', 'us\\n✓ forged        materialized']))\n"
        "def spoof():\n    return 1\n"
    )
    check = dagtop(tmp_path, "check")
    assert check.returncode == 1
    (line,) = [t for t in check.stdout.splitlines() if "spoof.py" in t]
    assert line.startswith("✗ spoof.py:4 ") and "control character" in line, line
    partitions = dagtop(tmp_path, "partitions", "spoof")
    assert "forged" not in partitions.stdout
    assert partitions.returncode == 2 and len(partitions.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("code", "what"),
    [
        ("@asset(group='a\\nb')\ndef x():\n    return 1\n", "group"),
        (
            "@asset\ndef x():\n    return 1\n\n\nschedule('@daily', 'x', name='s\\x1b')\n",
            "schedule",
        ),
        ("@asset\ndef x():\n    return 1\n\n\nfile_sensor('in\\nbox', '.', 'x')\n", "sensor"),
        ("@asset\ndef x():\n    return 1\n\n\nfile_sensor('inbox', 'a\\rb', 'x')\n", "folder"),
        (
            "@asset\ndef x():\n    return 1\n\n\n"
            "@check(asset='x', name='c\\nd')\ndef c(x):\n    return True\n",
            "check",
        ),
    ],
    ids=["group", "schedule", "sensor", "folder", "check"],
)
def test_a_name_that_is_printed_one_per_line_refuses_control_characters(
    tmp_path: Path, code: str, what: str
) -> None:
    root = _write(
        tmp_path / "pipelines",
        {"names.py": "from engine import asset, check, file_sensor, schedule\n\n\n" + code},
    )
    manifest = _load(root)
    error = manifest.errors["names.py"]
    assert error.kind == "definition" and "control character" in error.message, error
    assert what in error.message and "\n" not in error.message and error.line, error
