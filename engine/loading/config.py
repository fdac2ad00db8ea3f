"""Where things are, and the project's settings.

Settings come from `dagtop.toml` in the project folder (the pipelines folder's parent), or
from `[tool.dagtop]` in its `pyproject.toml`; `dagtop.toml` wins when both exist:

    max_workers = 4            # steps running at once (default: number of cores)
    load_timeout = 30          # seconds one pipeline file's import may take
    timezone = "Europe/Paris"  # for cron schedules (default: the machine's local zone)
    database_url = "postgresql+psycopg://dagtop@db-host/dagtop"  # DAGTOP_DATABASE_URL wins
    backups = 3                # rolling backups of a SQLite history kept beside it (0: none)
    backup_every = "1d"        # how often a running engine takes one ("12h", "30m", seconds)

    [pools]
    gpu = 1                    # steps with pool="gpu" run one at a time

    [resources.warehouse]      # the config of the resource `warehouse` (context.config)
    url = "postgresql://localhost/shop"

    [alerts]
    on_failure = "notify-send dagtop \"$DAGTOP_STEP failed\""  # default hook for every step
    window = 300               # at most one alert per step and event in this many seconds

Past one machine (see the README):

    executor = "dask"                      # "local" (default) or "dask"
    dask_scheduler = "tcp://10.0.0.5:8786" # the Dask scheduler steps are sent to
    values_dir = "/shared/dagtop-values"   # or an fsspec URL ("s3://bucket/values")

`DAGTOP_EXECUTOR=dask://HOST:PORT` (or `local`) in the environment overrides both executor
settings.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from engine.errors import ConfigError


@dataclass(frozen=True)
class Paths:
    """The folders one dagtop project uses."""

    home: Path
    pipelines: Path

    @property
    def project(self) -> Path:
        return self.pipelines.parent

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def values(self) -> Path:
        return self.home / "values"

    @property
    def runs(self) -> Path:
        return self.home / "runs"


def resolve_paths(home: str | Path | None, pipelines: str | Path | None) -> Paths:
    pipes = Path(pipelines or os.environ.get("DAGTOP_PIPELINES") or "pipelines").expanduser()
    home_dir = Path(home or os.environ.get("DAGTOP_HOME") or ".dagtop").expanduser()
    return Paths(home=home_dir.resolve(), pipelines=pipes.resolve())


@dataclass(frozen=True)
class Config:
    max_workers: int = field(default_factory=lambda: os.cpu_count() or 2)
    max_workers_set: bool = False
    """Whether max_workers was given (config or DAGTOP_MAX_WORKERS): unset, the Dask executor
    runs as many steps at once as the cluster has threads."""
    pools: dict[str, int] = field(default_factory=dict)
    load_timeout: float = 30.0
    timezone: str | None = None
    alerts: dict[str, dict[str, object]] = field(default_factory=dict)  # event -> hook
    alert_window: float = 300.0
    database_url: str | None = None  # a SQLAlchemy URL; None is the home folder's SQLite file
    executor: str = "local"
    """"local" (subprocesses on this machine) or "dask" (subprocesses on Dask workers)."""
    dask_scheduler: str | None = None
    """The Dask scheduler's address (`tcp://HOST:PORT`) when `executor` is "dask"."""
    values_dir: str | None = None
    """Where asset values are stored: a folder or an fsspec URL; None is the home's values."""
    backups: int = 3
    """Rolling backups of a SQLite history that an engine keeps beside it; 0 turns them off."""
    backup_every: float = 86_400.0
    """Seconds between two rolling backups while an engine runs."""
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each `[resources.NAME]` table: what the resource NAME finds as `context.config`."""
    resource_lines: dict[str, int] = field(default_factory=dict)
    """Where each of those tables starts in the settings file (for errors)."""
    source: str | None = None


def _positive_int(source: str, key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{source}: {key} must be a whole number >= 1, got {value!r}")
    return value


def load_config(project: Path) -> Config:
    """Read the project's settings.

    Raises:
        ConfigError: the file is not valid TOML or a value is out of range.
    """
    data: dict[str, Any] = {}
    source = None
    text = ""
    for candidate, section in ((project / "dagtop.toml", None), (project / "pyproject.toml", "x")):
        if not candidate.is_file():
            continue
        try:
            text = candidate.read_text()
            raw = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{candidate.name}: {exc}") from exc
        if section:
            raw = raw.get("tool", {}).get("dagtop")
            if raw is None:
                continue
        data, source = raw, candidate.name
        break
    if not data:
        env_workers = os.environ.get("DAGTOP_MAX_WORKERS")
        config = (
            Config(max_workers=int(env_workers), max_workers_set=True) if env_workers else Config()
        )
        return replace(config, **_executor("config", {}))
    src = source or "config"
    known = {
        "max_workers", "pools", "load_timeout", "timezone", "alerts", "database_url",
        "executor", "dask_scheduler", "values_dir", "backups", "backup_every", "resources",
    }  # fmt: skip
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"{src}: unknown setting {sorted(unknown)[0]!r} (known: {sorted(known)})")
    pools_raw = data.get("pools", {})
    if not isinstance(pools_raw, dict):
        raise ConfigError(f"{src}: [pools] must be a table of name = size")
    pools = {str(k): _positive_int(src, f"pools.{k}", v) for k, v in pools_raw.items()}
    timeout = data.get("load_timeout", 30.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{src}: load_timeout must be seconds > 0, got {timeout!r}")
    tz = data.get("timezone")
    if tz is not None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(str(tz))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"{src}: unknown timezone {tz!r}") from exc
    alerts, window = _alerts(src, data.get("alerts", {}))
    url = data.get("database_url")
    if url is not None and (not isinstance(url, str) or "://" not in url):
        raise ConfigError(f"{src}: database_url must be a SQLAlchemy URL, got {url!r}")
    workers = data.get("max_workers", os.environ.get("DAGTOP_MAX_WORKERS") or os.cpu_count() or 2)
    return Config(
        max_workers=_positive_int(
            src, "max_workers", int(workers) if isinstance(workers, str) else workers
        ),
        max_workers_set="max_workers" in data or bool(os.environ.get("DAGTOP_MAX_WORKERS")),
        pools=pools,
        load_timeout=float(timeout),
        timezone=tz,
        alerts=alerts,
        alert_window=window,
        database_url=url,
        values_dir=_values_dir(src, data.get("values_dir"), project),
        backups=_backups(src, data.get("backups", 3)),
        backup_every=_interval(src, "backup_every", data.get("backup_every", 86_400.0)),
        resources=_resources(src, data.get("resources", {})),
        resource_lines=_table_lines(
            text, "tool.dagtop.resources" if src == "pyproject.toml" else "resources"
        ),
        source=source,
        **_executor(src, data),
    )


def _resources(src: str, raw: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(raw, dict) or not all(isinstance(v, dict) for v in raw.values()):
        raise ConfigError(f"{src}: [resources] holds one table per resource: [resources.NAME]")
    return {str(name): dict(table) for name, table in raw.items()}


def _table_lines(text: str, prefix: str) -> dict[str, int]:
    """The line each `[PREFIX.NAME]` table starts at (tomllib keeps no positions): an error
    about a table names its line. A table written inline (`resources = {...}`) has none."""
    pattern = re.compile(
        rf"^[ \t]*\[[ \t]*{re.escape(prefix)}\.\s*\"?([^\]\".]+)\"?\s*\]", re.MULTILINE
    )
    lines: dict[str, int] = {}
    for match in pattern.finditer(text):
        lines.setdefault(match.group(1).strip(), text.count("\n", 0, match.start()) + 1)
    return lines


def _backups(src: str, raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise ConfigError(f"{src}: backups must be a whole number >= 0 (0: none), got {raw!r}")
    return raw


_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MIN_BACKUP_EVERY = 60.0


def _interval(src: str, key: str, raw: Any) -> float:
    """Seconds from `90`, `"90s"`, `"30m"`, `"12h"`, `"1d"` or `"1w"`."""
    seconds: float | None = None
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        seconds = float(raw)
    elif isinstance(raw, str) and (match := _INTERVAL.match(raw.lower())):
        seconds = float(match.group(1)) * _SECONDS[match.group(2)]
    if seconds is None or not seconds >= MIN_BACKUP_EVERY or seconds == float("inf"):
        raise ConfigError(
            f'{src}: {key} must be a duration of a minute or more ("1d", "12h", "30m" or '
            f"seconds), got {raw!r}"
        )
    return seconds


def _values_dir(src: str, raw: Any, project: Path) -> str | None:
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(f"{src}: values_dir must be a folder or a URL, got {raw!r}")
    if "://" in raw:
        return raw.rstrip("/")
    return str((project / Path(raw).expanduser()).resolve())


def _executor(src: str, data: dict[str, Any]) -> dict[str, Any]:
    """The executor settings; DAGTOP_EXECUTOR (`local` or `dask://HOST:PORT`) wins."""
    env = os.environ.get("DAGTOP_EXECUTOR", "").strip()
    if env:
        if env == "local":
            return {"executor": "local", "dask_scheduler": None}
        if env.startswith("dask://"):
            return {"executor": "dask", "dask_scheduler": _address("DAGTOP_EXECUTOR", env[7:])}
        raise ConfigError(f"DAGTOP_EXECUTOR must be `local` or `dask://HOST:PORT`, got {env!r}")
    kind = data.get("executor", "local")
    if kind not in ("local", "dask"):
        raise ConfigError(f'{src}: executor must be "local" or "dask", got {kind!r}')
    address = data.get("dask_scheduler")
    if kind == "dask":
        if not isinstance(address, str):
            raise ConfigError(f'{src}: executor = "dask" needs dask_scheduler = "tcp://HOST:PORT"')
        return {"executor": "dask", "dask_scheduler": _address(f"{src}: dask_scheduler", address)}
    return {"executor": "local", "dask_scheduler": None}


def open_scheduler(config: Config) -> str | None:
    """The Dask scheduler's address when it is reached over plain `tcp://` off this machine
    (anyone who can reach such a scheduler runs code as its workers' user), else None."""
    address = config.dask_scheduler
    if config.executor != "dask" or address is None or not address.startswith("tcp://"):
        return None
    host = address[len("tcp://") :].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return None
    import ipaddress

    try:
        return None if ipaddress.ip_address(host).is_loopback else address
    except ValueError:  # a host name: not this machine's loopback, as far as we can tell
        return address


def _address(what: str, raw: str) -> str:
    """`tcp://HOST:PORT` from `HOST:PORT` or `tcp://HOST:PORT`."""
    address = raw if "://" in raw else f"tcp://{raw}"
    scheme, _, rest = address.partition("://")
    host, _, port = rest.rpartition(":")
    if scheme not in ("tcp", "tls") or not host or not port.isdigit() or "/" in rest:
        raise ConfigError(f"{what}: {raw!r} is not a scheduler address like tcp://HOST:PORT")
    return address


def _alerts(src: str, raw: Any) -> tuple[dict[str, dict[str, object]], float]:
    from engine.authoring.definitions import hooks_of
    from engine.errors import DefinitionError

    if not isinstance(raw, dict):
        raise ConfigError(f"{src}: [alerts] must be a table")
    window = raw.get("window", 300.0)
    if isinstance(window, bool) or not isinstance(window, int | float) or window < 0:
        raise ConfigError(f"{src}: alerts.window must be seconds >= 0, got {window!r}")
    unknown = set(raw) - {"on_failure", "on_retry", "on_success", "window"}
    if unknown:
        raise ConfigError(f"{src}: unknown alerts setting {sorted(unknown)[0]!r}")
    events = {k: v for k, v in raw.items() if k != "window"}
    if any(not isinstance(v, str) for v in events.values()):
        raise ConfigError(f"{src}: an alert hook in the config is a command or a URL")
    try:
        return hooks_of(f"{src} [alerts]", **events), float(window)
    except DefinitionError as exc:
        raise ConfigError(exc.msg) from None


def database_setting(config: Config) -> str | None:
    """The database a process's settings name: DAGTOP_DATABASE_URL, else the config's; None is
    the home's SQLite file (what two processes compare before one answers for the other)."""
    return os.environ.get("DAGTOP_DATABASE_URL") or config.database_url
