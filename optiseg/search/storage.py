"""Where a study's trials live: the one place a storage setting becomes an Optuna storage.

* no setting: SQLite in the study folder (one worker);
* ``sqlite:///path.db``: SQLite (one worker; a second process is refused);
* ``postgresql://user@host/db``, ``mysql+pymysql://...``: a database server (many workers);
* ``journal:/shared/path.journal``: an Optuna journal file on shared storage (many workers).

Passwords never sit in a config: ``${VAR}`` in the URL is replaced from the
environment (``postgresql://optiseg:${OPTISEG_DB_PASSWORD}@db/optiseg``), and
PostgreSQL also reads ``PGPASSWORD`` and ``~/.pgpass``. A literal password
(``user:pw@``, ``?password=``) is refused, and every message about a storage
goes through :func:`optiseg.secrets.mask_credentials`.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .._paths import output_problem
from ..errors import ConfigError, StudyError
from ..secrets import has_password, mask_credentials, password_spans, remember_secret

_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
SERVER_SCHEMES = ("postgresql", "mysql", "mariadb", "oracle", "mssql")
OPEN_ATTEMPTS = 3


@dataclass(frozen=True)
class StorageSpec:
    """A parsed storage setting. ``url`` may still hold ``${VAR}`` references; ``shown`` is safe to print."""

    kind: str  # "sqlite", "server" or "journal"
    url: str
    path: Path | None = None

    @property
    def shown(self) -> str:
        return mask_credentials(self.url, url=True)

    @property
    def shared(self) -> bool:
        """Whether several worker processes may use it at once."""
        return self.kind != "sqlite"


def parse_storage(setting: str | None, study_dir: Path, config_dir: Path) -> StorageSpec:
    """Turn the config's ``storage`` value into a :class:`StorageSpec` (relative paths from the config's folder)."""
    if setting is None:
        path = study_dir / "optuna.db"
        return StorageSpec("sqlite", f"sqlite:///{path}", path)
    setting = setting.strip()
    if setting.startswith("journal:"):
        path = _resolve(setting.removeprefix("journal:"), config_dir)
        return StorageSpec("journal", f"journal:{path}", path)
    if setting.startswith("sqlite:"):
        raw_path = setting.removeprefix("sqlite:///") if setting.startswith("sqlite:///") else ""
        if not raw_path or raw_path == ":memory:":
            raise ConfigError(f"storage {setting!r}: write sqlite:///path/to/study.db (an in-memory database cannot resume)")
        path = _resolve(raw_path, config_dir)
        return StorageSpec("sqlite", f"sqlite:///{path}", path)
    scheme = setting.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in SERVER_SCHEMES:
        raise ConfigError(
            f"storage {mask_credentials(setting, url=True)!r} is not understood",
            hint="use sqlite:///study.db, postgresql://user@host/db, mysql+pymysql://user@host/db or journal:/path/file.journal",
        )
    if has_password(setting):
        raise _literal_password(setting)
    try:
        url = make_url(_ENV_REFERENCE.sub("placeholder", setting))
    except (ArgumentError, ValueError) as exc:
        raise ConfigError(f"storage {mask_credentials(setting, url=True)!r} is not a valid database URL: {mask_credentials(exc)}") from None
    # SQLAlchemy may read a password where the mask did not see one (e.g. an odd URL): refuse it too, unshown.
    for password in _passwords_of(url):
        if password != "placeholder":
            remember_secret(password)
            raise _literal_password(setting)
    return StorageSpec("server", setting)


def _literal_password(setting: str) -> ConfigError:
    return ConfigError(
        f"storage {mask_credentials(setting, url=True)!r} holds a password in the config",
        hint="remove it; write ${VAR} and export VAR, or use PGPASSWORD / ~/.pgpass for PostgreSQL",
    )


def open_storage(spec: StorageSpec, *, create: bool = True) -> optuna.storages.BaseStorage | None:
    """The Optuna storage for ``spec`` (``${VAR}`` references expanded from the environment here, and only here).

    ``create=False`` is for commands that only read a study (``front``, ``report``, ``deploy``, ``confirm``, a
    warm-start source): they make nothing, no file, no folder, no tables; ``None`` when there is no storage yet
    (its file does not exist, or the database holds no Optuna tables).
    """
    if spec.kind in ("journal", "sqlite"):
        assert spec.path is not None
        if not create:
            if not spec.path.is_file():
                return None
        elif (problem := output_problem(spec.path, "file")) is not None:
            raise ConfigError(f"storage {spec.shown}: {problem}", hint="point storage: at a file in a folder you can write in")
        spec.path.parent.mkdir(parents=True, exist_ok=True)
        if spec.kind == "journal":
            return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(spec.path)))
        return _rdb_storage(spec.url, spec, {"connect_args": {"timeout": 60}}, create=create, attempts=1)
    url = _expand_environment(spec.url)
    _remember_passwords(url)
    # Workers starting together race to create Optuna's tables in an empty database; the loser finds them next time.
    return _rdb_storage(url, spec, {"pool_pre_ping": True}, create=create, attempts=OPEN_ATTEMPTS)


def _rdb_storage(url: str, spec: StorageSpec, engine_kwargs: dict, *, create: bool, attempts: int):
    """An RDBStorage for ``url``, or None (``create=False``) when the database has no Optuna tables yet."""
    from sqlalchemy import create_engine, inspect

    for attempt in range(attempts):
        try:
            if not create:
                engine = create_engine(url, **engine_kwargs)
                try:
                    if not inspect(engine).has_table("studies"):
                        return None
                finally:
                    engine.dispose()
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except Exception as exc:  # sqlalchemy / driver errors carry the URL; never print the expanded one
            if attempt + 1 < attempts:
                time.sleep(1.0 + attempt)
                continue
            message = (mask_credentials(str(exc).replace(url, spec.shown)).splitlines() or [type(exc).__name__])[0]
            hint = ("check that the file is the study's SQLite database (a copy from a backup?)" if spec.kind == "sqlite"
                    else "check that the database server is running, the database exists and the user may connect")
            raise StudyError(f"cannot open storage {spec.shown}: {message}", hint=hint) from None
    raise AssertionError("unreachable")


class SQLiteWriterLock:
    """An exclusive lock beside a SQLite file: one optiseg process per SQLite study at a time.

    Holding it also proves that any trial left RUNNING in that file belongs to a
    dead process, so it can be retried at once.
    """

    def __init__(self, db_path: Path):
        self.path = db_path.with_name(db_path.name + ".lock")
        self._handle = None

    def __enter__(self) -> SQLiteWriterLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise StudyError(
                f"{holder} is already running a search on the SQLite file {self.path.with_suffix('')}; "
                "SQLite cannot be shared by several worker processes",
                hint="for several workers set `storage: postgresql://user@host/db` (or mysql, or "
                "journal:/shared/path.journal) in the config and start each worker with it",
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}")
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _remember_passwords(url: str) -> None:
    """Mask the passwords the environment put into ``url`` in every later message (drivers may quote them)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return
    for password in _passwords_of(parsed):
        remember_secret(password)


def _passwords_of(url) -> list[str]:
    """The passwords a SQLAlchemy URL carries: its userinfo's and any ``?password=`` in its query."""
    query = url.query.get("password")
    found = [url.password, *(query if isinstance(query, tuple) else (query,))]
    return [str(password) for password in found if password is not None]


def _expand_environment(url: str) -> str:
    """``url`` with each ``${VAR}`` replaced from the environment. A variable in a password's place holds the
    password as it is: it is percent-encoded here (so ``@``, ``:`` and ``/`` in it keep the URL whole) and
    remembered, so that no later message shows it."""
    passwords = password_spans(url)

    def replace(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"storage URL needs environment variable {name}, which is not set", hint=f"export {name}=...")
        value = os.environ[name]
        if any(start <= match.start() < end for start, end in passwords):
            remember_secret(value)
            return quote(value, safe="")
        return value

    return _ENV_REFERENCE.sub(replace, url)


def _resolve(raw: str, base: Path) -> Path:
    path = Path(raw).expanduser()
    return path if path.is_absolute() else (base / path).resolve()
