"""The results store: one SQLite file (WAL) per run folder, the source of truth for reports,
or (``run.store``) a schema of its own in a shared PostgreSQL database.

Every request is committed as it completes, so an interrupted run loses at most the request
in flight. The schema carries a version (``PRAGMA user_version``) and forward migrations.
Both databases go through the same SQL: the few SQLite-isms it has are translated for
PostgreSQL in one place (``_PgConnection``), and a run folder whose results are in PostgreSQL
keeps a small ``store.json`` (the URL without its password, and the schema's name).
"""

from __future__ import annotations

import functools
import json
import re
import secrets
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from kurabe import KurabeError
from kurabe.processes import ProcessRow
from kurabe.records import (
    AnswerRow,
    CalibrationGradeRow,
    CheckRow,
    EventRow,
    GradeRow,
    LineageRow,
    LoadLevelRow,
    LoadRequestRow,
    MachineSample,
    ModelRow,
    ProbeRow,
    RequestRow,
    RunRow,
    Snapshot,
)

STORE_NAME = "results.sqlite"
# A run folder whose results are in PostgreSQL: {"url": URL without password, "schema": name}
PG_STORE_NAME = "store.json"

# The error kind an error message of an older kurabe shows (SQL over column {col}).
_KIND_OF_MESSAGE = """CASE
        WHEN {col} LIKE 'engine exited%' THEN 'engine_exited'
        WHEN {col} LIKE 'HTTP 429%' THEN 'http_429'
        WHEN {col} LIKE 'HTTP 503%' THEN 'http_503'
        WHEN {col} LIKE 'HTTP 5%' THEN 'http_5xx'
        WHEN {col} LIKE 'HTTP %' THEN 'http_4xx'
        WHEN {col} LIKE 'unparseable stream event%' THEN 'bad_stream'
        WHEN {col} LIKE 'ReadTimeout%' THEN 'stalled'
        WHEN {col} LIKE '%Timeout%' THEN 'timeout'
        WHEN {col} LIKE 'RemoteProtocolError%' OR {col} LIKE 'ConnectError%'
            OR {col} LIKE 'ReadError%' OR {col} LIKE 'WriteError%' THEN 'connection'
        WHEN {col} LIKE '{{%' OR {col} LIKE '"%' THEN 'server_error_event'
    END"""

MIGRATIONS: list[str] = [
    # 1: runs, models, requests
    """
    CREATE TABLE run (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        created_at TEXT NOT NULL,
        kurabe_version TEXT NOT NULL,
        command TEXT NOT NULL,
        config_json TEXT NOT NULL,
        machine_json TEXT NOT NULL,
        status TEXT NOT NULL,
        finished_at TEXT
    );
    CREATE TABLE models (
        name TEXT PRIMARY KEY,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        file_path TEXT,
        file_bytes INTEGER,
        file_sha256 TEXT,
        quant TEXT,
        architecture TEXT,
        engine_kind TEXT,
        engine_version TEXT,
        engine_command_json TEXT,
        engine_base_url TEXT,
        engine_log TEXT,
        settings_json TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        model TEXT NOT NULL,
        prompt_id TEXT NOT NULL,
        repeat INTEGER NOT NULL,
        phase TEXT NOT NULL CHECK (phase IN ('warmup', 'measure')),
        status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
        error TEXT,
        sent_at_unix_s REAL NOT NULL,
        request_json TEXT NOT NULL,
        record_json TEXT NOT NULL,
        metrics_json TEXT NOT NULL,
        stored_at TEXT NOT NULL
    );
    CREATE INDEX requests_seq ON requests (seq, status);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    );
    """,
    # 2: reasoning sweeps: a 'sweep' phase and the reasoning setting of each request
    """
    CREATE TABLE requests_v2 (
        id INTEGER PRIMARY KEY,
        seq INTEGER NOT NULL,
        model TEXT NOT NULL,
        prompt_id TEXT NOT NULL,
        repeat INTEGER NOT NULL,
        phase TEXT NOT NULL CHECK (phase IN ('warmup', 'measure', 'sweep')),
        setting TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
        error TEXT,
        sent_at_unix_s REAL NOT NULL,
        request_json TEXT NOT NULL,
        record_json TEXT NOT NULL,
        metrics_json TEXT NOT NULL,
        stored_at TEXT NOT NULL
    );
    INSERT INTO requests_v2 (id, seq, model, prompt_id, repeat, phase, status, error,
        sent_at_unix_s, request_json, record_json, metrics_json, stored_at)
        SELECT id, seq, model, prompt_id, repeat, phase, status, error, sent_at_unix_s,
        request_json, record_json, metrics_json, stored_at FROM requests;
    DROP TABLE requests;
    ALTER TABLE requests_v2 RENAME TO requests;
    CREATE INDEX requests_seq ON requests (seq, status);
    """,
    # 3: quality evaluation: answers (generation), grades (judging), checks (deterministic)
    """
    CREATE TABLE answers (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        item_id TEXT NOT NULL,
        suite TEXT NOT NULL,
        category TEXT NOT NULL,
        repeat INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('ok', 'error')),
        error TEXT,
        outcome TEXT,
        answer TEXT NOT NULL,
        reasoning TEXT NOT NULL,
        turns_json TEXT NOT NULL,
        metrics_json TEXT NOT NULL,
        stored_at TEXT NOT NULL
    );
    CREATE INDEX answers_key ON answers (model, item_id, repeat, status);
    CREATE TABLE grades (
        id INTEGER PRIMARY KEY,
        judge TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('single', 'pairwise')),
        item_id TEXT NOT NULL,
        repeat INTEGER NOT NULL,
        model TEXT NOT NULL,
        model_b TEXT,
        position TEXT,
        status TEXT NOT NULL CHECK (status IN ('scored', 'unscored', 'skipped', 'error')),
        score REAL,
        verdict TEXT,
        explanation TEXT,
        raw_output TEXT,
        judge_reasoning TEXT,
        detail TEXT,
        stored_at TEXT NOT NULL
    );
    CREATE INDEX grades_key ON grades (judge, kind, item_id, repeat, model, model_b, position);
    CREATE TABLE checks (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        item_id TEXT NOT NULL,
        repeat INTEGER NOT NULL,
        name TEXT NOT NULL,
        passed INTEGER,
        value REAL,
        detail TEXT,
        stored_at TEXT NOT NULL
    );
    CREATE INDEX checks_key ON checks (model, item_id, repeat, name);
    """,
    # 4: what each model is and what loading it took: card, predicted plan, observed buffers
    """
    ALTER TABLE models ADD COLUMN card_json TEXT;
    ALTER TABLE models ADD COLUMN plan_json TEXT;
    ALTER TABLE models ADD COLUMN observed_json TEXT;
    """,
    # 5: the run's snapshot: the resolved inputs (prompts, suite items, judge prompts), so a
    # run folder needs nothing but itself to be reported, resumed or judged again
    """
    CREATE TABLE snapshot (
        key TEXT PRIMARY KEY,
        value_json TEXT NOT NULL
    );
    """,
    # 6: what the machine was doing while the run ran (kurabe.sampler): load, CPU time of the
    # engines, of kurabe and of everything else, frequency, GPU use
    """
    CREATE TABLE machine_samples (
        id INTEGER PRIMARY KEY,
        t_unix_s REAL NOT NULL,
        interval_s REAL NOT NULL,
        usable_cores INTEGER NOT NULL,
        cpu_busy_pct REAL NOT NULL,
        engine_cpu_s REAL NOT NULL,
        kurabe_cpu_s REAL NOT NULL,
        other_cpu_s REAL NOT NULL,
        load_1m REAL,
        cpu_freq_mhz REAL,
        gpus_json TEXT NOT NULL
    );
    """,
    # the processes a run started (kurabe.processes): its owner and its engines, with their
    # start times, so a later command can stop engines a killed kurabe left running
    """
    CREATE TABLE processes (
        id INTEGER PRIMARY KEY,
        role TEXT NOT NULL CHECK (role IN ('kurabe', 'engine')),
        model TEXT,
        pid INTEGER NOT NULL,
        create_time REAL NOT NULL,
        command_json TEXT NOT NULL,
        started_at TEXT NOT NULL,
        ended_at TEXT,
        end_reason TEXT
    );
    """,
    # why each failed request, answer and grade failed (kurabe.records.ERROR_KINDS); rows of
    # older runs get the kind their message shows, or none
    """
    ALTER TABLE requests ADD COLUMN error_kind TEXT;
    ALTER TABLE answers ADD COLUMN error_kind TEXT;
    ALTER TABLE grades ADD COLUMN error_kind TEXT;
    UPDATE requests SET error_kind = {kind_of_error} WHERE status = 'error';
    UPDATE answers SET error_kind = {kind_of_error} WHERE status = 'error';
    UPDATE grades SET error_kind = {kind_of_detail} WHERE status = 'error';
    """.format(kind_of_error=_KIND_OF_MESSAGE.format(col="error"),
               kind_of_detail=_KIND_OF_MESSAGE.format(col="detail")),
    # the judge's diagnostics (kurabe.phases.judge_probes): grades without the grammar,
    # repeated grades, refusal yes/no, grades of reasoning-sweep answers
    """
    CREATE TABLE IF NOT EXISTS judge_probes (
        id INTEGER PRIMARY KEY,
        judge TEXT NOT NULL,
        probe TEXT NOT NULL,
        item_id TEXT NOT NULL,
        repeat INTEGER NOT NULL,
        model TEXT NOT NULL,
        setting TEXT NOT NULL DEFAULT '',
        attempt INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL CHECK (status IN ('scored', 'unscored', 'skipped', 'error')),
        score REAL,
        verdict TEXT,
        explanation TEXT,
        raw_output TEXT,
        detail TEXT,
        error_kind TEXT,
        stored_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS judge_probes_key ON judge_probes (judge, probe, item_id, repeat, model,
        setting, attempt);
    """,
    # the judge's calibration (kurabe.phases.calibration): its verdicts on items with a
    # known-good and a known-bad answer, single grades and both pairwise orders
    """
    CREATE TABLE IF NOT EXISTS calibration_grades (
        id INTEGER PRIMARY KEY,
        judge TEXT NOT NULL,
        item_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('single', 'pairwise')),
        position TEXT NOT NULL CHECK (position IN ('good', 'bad', 'good_first', 'bad_first')),
        status TEXT NOT NULL CHECK (status IN ('scored', 'unscored', 'error')),
        score REAL,
        verdict TEXT,
        explanation TEXT,
        raw_output TEXT,
        judge_reasoning TEXT,
        detail TEXT,
        error_kind TEXT,
        stored_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS calibration_grades_key ON calibration_grades (judge, item_id,
        kind, position);
    """,
    # lineage of a run's models of the same tensor shapes (kurabe.lineage), computed when the
    # run is created
    """
    CREATE TABLE IF NOT EXISTS lineage (
        id INTEGER PRIMARY KEY,
        model_a TEXT NOT NULL,
        model_b TEXT NOT NULL,
        verdict TEXT NOT NULL CHECK (verdict IN ('derived', 'independent', 'inconclusive')),
        reason TEXT NOT NULL,
        score REAL,
        result_json TEXT NOT NULL,
        stored_at TEXT NOT NULL
    );
    """,
    # load levels and their requests (kurabe.load): requests are stored in batches, each
    # level's row is written when it starts and again when it ends
    """
    CREATE TABLE IF NOT EXISTS load_levels (
        model TEXT NOT NULL,
        level INTEGER NOT NULL,
        profile TEXT NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running', 'complete', 'interrupted')),
        started_at_unix_s REAL NOT NULL,
        concurrency INTEGER,
        rate_per_s REAL,
        warmup_s REAL NOT NULL,
        wall_s REAL,
        client_json TEXT NOT NULL,
        server_before_json TEXT,
        server_after_json TEXT,
        spec_json TEXT NOT NULL,
        stored_at TEXT NOT NULL,
        PRIMARY KEY (model, level)
    );
    CREATE TABLE IF NOT EXISTS load_requests (
        id INTEGER PRIMARY KEY,
        model TEXT NOT NULL,
        level INTEGER NOT NULL,
        worker INTEGER NOT NULL,
        endpoint TEXT NOT NULL,
        prompt_id TEXT NOT NULL,
        warmup INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('ok', 'error', 'cancelled')),
        error TEXT,
        error_kind TEXT,
        scheduled_s REAL,
        sent_s REAL NOT NULL,
        sent_at_unix_s REAL NOT NULL,
        request_json TEXT NOT NULL,
        record_json TEXT NOT NULL,
        metrics_json TEXT NOT NULL,
        stored_at TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS load_requests_level ON load_requests (model, level);
    """,
]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class RunExistsError(KurabeError):
    """The folder already holds a run (resume it, or choose another folder)."""

    def __init__(self, run_dir: Path) -> None:
        super().__init__(f"{run_dir} already holds a run")
        self.run_dir = run_dir


def _dumps(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_SNAPSHOT_KEYS = ("prompts", "suite_items", "judge_prompts", "calibration_items")


def _read_only_uri(path: Path) -> str:
    """A URI that opens ``path`` without write access and creates no file beside it (no
    -wal, no -shm), unless a write-ahead log is already there to be read."""
    wal = path.with_name(path.name + "-wal")
    return path.resolve().as_uri() + ("?mode=ro" if wal.exists() else "?immutable=1")


def _probe(path: Path) -> int:
    """The schema version of a kurabe store, read without write access; a KurabeError for
    anything else (an empty file, another database, random bytes, a newer kurabe's store)."""
    try:
        conn = sqlite3.connect(_read_only_uri(path), uri=True)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {r[0] for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise KurabeError(f"{path}: not a kurabe results store ({exc})") from None
    if version > len(MIGRATIONS):
        raise KurabeError(f"{path}: written by a newer kurabe (schema {version}); upgrade kurabe")
    if version < 1 or "run" not in tables:
        what = "the file is empty" if path.stat().st_size == 0 else "it has no kurabe tables"
        raise KurabeError(f"{path}: not a kurabe results store ({what})")
    return version


_decode_text = functools.partial(str, encoding="utf-8", errors="replace")

# A JSON string escape, read left to right so that an escaped backslash is never mistaken for
# the start of an escape: a surrogate pair is kept, a lone surrogate (which no text encoding
# can write) becomes U+FFFD.
_JSON_ESCAPE = re.compile(r"\\(?:(?P<pair>u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})"
                          r"|(?P<lone>u[dD][89a-fA-F][0-9a-fA-F]{2})|.)", re.S)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _clean_json_text(text: str) -> str:
    if not _SURROGATE_ESCAPE.search(text):
        return text
    return _JSON_ESCAPE.sub(lambda m: "\\ufffd" if m.group("lone") else m.group(0), text)


class StoreRow(tuple):
    """A row read from the store, by index or by column name like ``sqlite3.Row``, its text
    made safe to use: bytes (a BLOB where text belongs) are decoded, with U+FFFD for invalid
    UTF-8, and a lone surrogate escape in a JSON column becomes U+FFFD."""

    _names: dict[str, int]

    @classmethod
    def factory(cls, cursor: sqlite3.Cursor, values: tuple[Any, ...]) -> StoreRow:
        return cls.make([d[0] for d in cursor.description], values)

    @classmethod
    def make(cls, names: Sequence[str], values: Sequence[Any]) -> StoreRow:
        cleaned = []
        for name, value in zip(names, values, strict=True):
            if isinstance(value, bytes):
                value = _decode_text(value)
            if isinstance(value, str) and name.endswith("_json"):
                value = _clean_json_text(value)
            cleaned.append(value)
        row = super().__new__(cls, cleaned)
        row._names = {n.lower(): i for i, n in enumerate(names)}
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            try:
                key = self._names[key.lower()]
            except KeyError:
                raise IndexError(f"no such column: {key}") from None
        return super().__getitem__(key)

    def keys(self) -> list[str]:
        return list(self._names)


# -- PostgreSQL ------------------------------------------------------------------------------

# Passwords given in a run.store URL in this process, by the URL without its password: a
# second connection to the same run (the machine sampler's) needs it, and it is never written.
_PASSWORDS: dict[str, str] = {}


def safe_url(url: str) -> str:
    """``url`` without its password (in the user part or a ``password=`` parameter)."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = user.split(":", 1)[0] + "@" + host
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _password(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.password is not None:
        return unquote(parts.password)
    return dict(parse_qsl(parts.query)).get("password")


def _check_url(url: str) -> None:
    if urlsplit(url).scheme not in ("postgresql", "postgres"):
        raise KurabeError(f"run.store: {safe_url(url)!r} is not a PostgreSQL URL "
                          "(postgresql://user@host:port/database)")


def _redact_config(config_json: str) -> str:
    """The run's config as stored: ``run.store`` without a password."""
    try:
        config = json.loads(config_json)
        url = config["run"]["store"]
    except (ValueError, KeyError, TypeError):
        return config_json
    if not isinstance(url, str) or _password(url) is None:
        return config_json
    config["run"]["store"] = safe_url(url)
    return json.dumps(config, indent=2, ensure_ascii=False)


# SQLite's column types and version pragma, as PostgreSQL spells them (SQLite's INTEGER is
# 64-bit and its REAL double precision: PostgreSQL's are 32-bit and single precision).
_PG_DDL = [
    (re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"PRAGMA user_version = (\d+)"), r"UPDATE kurabe_schema SET version = \1"),
]
# A table without an INTEGER PRIMARY KEY gets the rowid SQLite gives every table (ORDER BY
# rowid: the order rows were inserted in; a replaced row is a new row, as in SQLite).
_CREATE_TABLE = re.compile(r"(CREATE TABLE (?:IF NOT EXISTS )?\w+ \()(\s*)(?!id INTEGER PRIMARY KEY)")
# In a statement with parameters: ``?`` becomes ``%s`` and a literal ``%`` is doubled.
_MARK_OR_LITERAL = re.compile(r"'(?:[^']|'')*'|\?|%")


def _pg_script(script: str) -> str:
    script = _CREATE_TABLE.sub(r"\1\2rowid BIGINT GENERATED BY DEFAULT AS IDENTITY,\2", script)
    for pattern, replacement in _PG_DDL:
        script = pattern.sub(replacement, script)
    return script


def _pg_sql(sql: str, *, with_params: bool) -> str:
    def swap(m: re.Match[str]) -> str:
        text = m.group(0)
        return "%s" if text == "?" else text.replace("%", "%%")
    if sql.strip() == "PRAGMA user_version":
        return "SELECT version FROM kurabe_schema"
    # without parameters psycopg sends the text as it is
    return _MARK_OR_LITERAL.sub(swap, sql) if with_params else sql


def _pg_value(value: Any) -> Any:
    # SQLite keeps booleans as integers; PostgreSQL text cannot hold NUL (U+FFFD instead).
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def _pg_rows(cursor: Any) -> Any:
    names = [c.name for c in cursor.description or []]
    return lambda values: StoreRow.make(names, values)


class _PgConnection:
    """A psycopg connection (autocommit) that takes the store's SQLite SQL and gives the
    store's rows, so every query of ``Store`` is the same for both databases."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        if not params:
            return self._conn.execute(_pg_sql(sql, with_params=False))
        return self._conn.execute(_pg_sql(sql, with_params=True),
                                  [_pg_value(v) for v in params])

    def executemany(self, sql: str, seq: Sequence[Sequence[Any]]) -> Any:
        cursor = self._conn.cursor()
        cursor.executemany(_pg_sql(sql, with_params=True),
                           [[_pg_value(v) for v in p] for p in seq])
        return cursor

    def executescript(self, script: str) -> None:
        self._conn.execute(_pg_script(script))

    def _end(self, how: str) -> None:
        from psycopg.pq import TransactionStatus

        if self._conn.info.transaction_status != TransactionStatus.IDLE:
            self._conn.execute(how)

    def commit(self) -> None:
        self._end("COMMIT")

    def __enter__(self) -> _PgConnection:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self._end("COMMIT" if exc_type is None else "ROLLBACK")

    def close(self) -> None:
        self._conn.close()


def _pg_connect(url: str, run_dir: Path, schema: str, *, read_only: bool = False) -> Any:
    """A psycopg connection to ``url`` with ``schema`` first in its search path; a
    KurabeError in one line for a missing psycopg, a bad URL or a server not reachable."""
    _check_url(url)
    shown = safe_url(url)
    try:
        import psycopg
    except ImportError:
        raise KurabeError(f"run.store: {shown}: PostgreSQL needs psycopg "
                          "(pip install 'kurabe[postgres]')") from None
    options = f"-c search_path={schema}"
    if read_only:
        options += " -c default_transaction_read_only=on"
    password = _password(url) or _PASSWORDS.get(shown)  # None: PGPASSWORD or ~/.pgpass
    try:
        return psycopg.connect(shown, autocommit=True, connect_timeout=10, options=options,
                               application_name="kurabe", row_factory=_pg_rows,
                               password=password)
    except psycopg.Error as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        if password:
            reason = reason.replace(password, "***")
        raise KurabeError(f"run.store: cannot connect to {shown} (run folder {run_dir}): "
                          f"{reason}") from None


def _pg_pointer(run_dir: Path) -> dict[str, str]:
    path = Path(run_dir) / PG_STORE_NAME
    try:
        pointer = json.loads(path.read_text(encoding="utf-8"))
        if not (isinstance(pointer.get("url"), str) and isinstance(pointer.get("schema"), str)
                and re.fullmatch(r"[a-z0-9_]{1,63}", pointer["schema"])):
            raise ValueError("it needs a url and a schema")
    except (OSError, ValueError, AttributeError) as exc:
        raise KurabeError(f"{path}: not a kurabe store pointer ({exc})") from None
    return {"url": pointer["url"], "schema": pointer["schema"]}


def store_exists(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds a run's results (its SQLite file, or its PostgreSQL pointer)."""
    return (Path(run_dir) / STORE_NAME).exists() or (Path(run_dir) / PG_STORE_NAME).exists()


class Store:
    """The run's SQLite file, or its PostgreSQL schema. Takes and returns only
    ``kurabe.records`` rows."""

    def __init__(self, path: Path, conn: sqlite3.Connection | _PgConnection) -> None:
        self.path = path  # the SQLite file, or the run folder's PostgreSQL pointer
        self._db = conn
        self.closed = False

    @property
    def is_postgres(self) -> bool:
        return isinstance(self._db, _PgConnection)

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def create(cls, run_dir: Path, *, url: str | None = None) -> Store:
        """A new run's store: the run folder's SQLite file, or (``url``) a schema of its own
        in a PostgreSQL database, named in the run folder's ``store.json``."""
        run_dir = Path(run_dir)
        if store_exists(run_dir):
            raise RunExistsError(run_dir)
        if url is not None:
            return cls._create_postgres(run_dir, url)
        path = run_dir / STORE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls._open(path)

    @classmethod
    def _create_postgres(cls, run_dir: Path, url: str) -> Store:
        _check_url(url)
        shown, password = safe_url(url), _password(url)
        if password:
            _PASSWORDS[shown] = password
        slug = re.sub(r"[^a-z0-9_]+", "_", run_dir.resolve().name.lower()).strip("_")[:40]
        schema = f"kurabe_{slug}_{secrets.token_hex(4)}" if slug else \
            f"kurabe_{secrets.token_hex(4)}"
        conn = _pg_connect(url, run_dir, schema)
        try:
            conn.execute(f"CREATE SCHEMA {schema}")
            conn.execute("CREATE TABLE kurabe_schema (version INTEGER NOT NULL)")
            conn.execute("INSERT INTO kurabe_schema (version) VALUES (0)")
        except Exception as exc:
            conn.close()
            raise KurabeError(f"run.store: {shown}: cannot create schema {schema}: "
                              f"{' '.join(str(exc).split())}") from None
        pointer = run_dir / PG_STORE_NAME
        store = cls(pointer, _PgConnection(conn))
        try:
            store._migrate()
        except Exception:
            store.close()
            raise
        run_dir.mkdir(parents=True, exist_ok=True)
        pointer.write_text(json.dumps({"url": shown, "schema": schema}, indent=2) + "\n",
                           encoding="utf-8")
        return store

    @classmethod
    def open(cls, run_dir: Path, *, read_only: bool = False) -> Store:
        """An existing run's store. The file is first looked at without write access, so an
        empty, foreign or damaged file is refused and left exactly as it was. ``read_only``:
        read the store without writing to it (unless its schema needs a migration first).
        A run folder with a ``store.json`` instead of a SQLite file opens its PostgreSQL
        schema (a password from PGPASSWORD or ~/.pgpass)."""
        path = Path(run_dir) / STORE_NAME
        if not path.is_file() and (Path(run_dir) / PG_STORE_NAME).is_file():
            return cls._open_postgres(Path(run_dir), read_only=read_only)
        if not path.is_file():
            raise KurabeError(f"{run_dir}: no kurabe run here ({STORE_NAME} is missing)")
        version = _probe(path)
        return cls._open(path, read_only=read_only and version == len(MIGRATIONS))

    @classmethod
    def _open_postgres(cls, run_dir: Path, *, read_only: bool) -> Store:
        pointer = _pg_pointer(run_dir)
        url, schema = pointer["url"], pointer["schema"]
        where = f"{run_dir / PG_STORE_NAME}: schema {schema} of {url}"
        conn = _pg_connect(url, run_dir, schema, read_only=read_only)
        try:
            found = conn.execute("SELECT to_regclass(%s) IS NOT NULL",
                                 [f"{schema}.kurabe_schema"]).fetchone()[0]
            version = conn.execute("SELECT version FROM kurabe_schema").fetchone()[0] \
                if found else 0
        except Exception as exc:
            conn.close()
            raise KurabeError(f"{where}: cannot read it: {' '.join(str(exc).split())}") from None
        if not found or version < 1:
            conn.close()
            raise KurabeError(f"{where}: not a kurabe results store (the schema is missing or "
                              "empty)")
        if version > len(MIGRATIONS):
            conn.close()
            raise KurabeError(f"{where}: written by a newer kurabe (schema {version}); "
                              "upgrade kurabe")
        if read_only and version < len(MIGRATIONS):
            conn.close()  # the schema needs a migration first: open it for writing
            conn = _pg_connect(url, run_dir, schema)
        store = cls(run_dir / PG_STORE_NAME, _PgConnection(conn))
        if not (read_only and version == len(MIGRATIONS)):
            store._migrate()
        return store

    @classmethod
    def _open(cls, path: Path, *, read_only: bool = False) -> Store:
        try:
            # check_same_thread off: blocking phases (browser checks) run on a worker thread
            # while the event loop waits; the store is never used from two threads at once.
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            if read_only:
                # no write through this connection; closing it still tidies the -wal and
                # -shm files away as any connection does (a run may be writing meanwhile)
                conn.execute("PRAGMA query_only = 1")
            else:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise KurabeError(f"{path}: cannot open results store: {exc}") from None
        # Text read back is always valid: invalid UTF-8 and lone surrogates become U+FFFD.
        conn.text_factory = _decode_text
        conn.row_factory = StoreRow.factory
        store = cls(path, conn)
        if not read_only:
            try:
                store._migrate()
            except sqlite3.DatabaseError as exc:
                store.close()
                raise KurabeError(f"{path}: cannot open results store: {exc}") from None
        return store

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise KurabeError(
                f"{self.path}: written by a newer kurabe (schema {version}); upgrade kurabe"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    def close(self) -> None:
        self._db.close()
        self.closed = True

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- run -------------------------------------------------------------------------------

    def write_run(self, run: RunRow) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute(
                "INSERT INTO run (id, created_at, kurabe_version, command, config_json,"
                " machine_json, status, finished_at) VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                (run.created_at, run.kurabe_version, run.command,
                 _redact_config(run.config_json),
                 json.dumps(run.machine), run.status, run.finished_at),
            )

    def run(self) -> RunRow:
        row = self._db.execute("SELECT * FROM run WHERE id = 1").fetchone()
        if row is None:
            raise KurabeError(f"{self.path}: the run record is missing")
        return RunRow(created_at=row["created_at"], kurabe_version=row["kurabe_version"],
                      command=row["command"], config_json=row["config_json"],
                      machine=json.loads(row["machine_json"]), status=row["status"],
                      finished_at=row["finished_at"])

    def update_config(self, config_json: str, reason: str) -> None:
        """Change the run's config (e.g. a new judge), keeping the change in the events."""
        self._db.execute("UPDATE run SET config_json = ? WHERE id = 1",
                         (_redact_config(config_json),))
        self.add_event("config_changed", reason)

    def set_status(self, status: str) -> None:
        """The run's status; ``finished_at`` is when it last finished (complete or
        incomplete), None while it is not finished. A complete run set complete again keeps
        the time it first completed."""
        row = self._db.execute("SELECT status, finished_at FROM run WHERE id = 1").fetchone()
        if row is not None and row["status"] == status == "complete" and row["finished_at"]:
            finished = row["finished_at"]
        else:
            finished = utc_now() if status in ("complete", "incomplete") else None
        self._db.execute("UPDATE run SET status = ?, finished_at = ? WHERE id = 1",
                         (status, finished))

    def add_event(self, kind: str, detail: str) -> None:
        self._db.execute("INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)",
                         (utc_now(), kind, detail))

    def events(self) -> list[EventRow]:
        return [EventRow(r["at"], r["kind"], r["detail"])
                for r in self._db.execute("SELECT * FROM events ORDER BY id")]

    # -- processes -------------------------------------------------------------------------

    def add_process(self, row: ProcessRow) -> int:
        cur = self._db.execute(
            "INSERT INTO processes (role, model, pid, create_time, command_json, started_at)"
            " VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (row.role, row.model, row.pid, row.create_time, json.dumps(row.command),
             row.started_at))
        return int(cur.fetchone()[0])

    def end_process(self, row_id: int, reason: str) -> None:
        self._db.execute("UPDATE processes SET ended_at = ?, end_reason = ? WHERE id = ?"
                         " AND ended_at IS NULL", (utc_now(), reason, row_id))

    def processes(self, *, running_only: bool = False) -> list[ProcessRow]:
        sql = "SELECT * FROM processes" + (" WHERE ended_at IS NULL" if running_only else "")
        return [ProcessRow(id=r["id"], role=r["role"], model=r["model"], pid=r["pid"],
                           create_time=r["create_time"], command=json.loads(r["command_json"]),
                           started_at=r["started_at"], ended_at=r["ended_at"],
                           end_reason=r["end_reason"])
                for r in self._db.execute(sql + " ORDER BY id")]

    # -- snapshot --------------------------------------------------------------------------

    def write_snapshot(self, snapshot: Snapshot) -> None:
        """The resolved inputs, written once when the run is created (config: the run row)."""
        with self._db:
            self._db.execute("BEGIN")
            for key in _SNAPSHOT_KEYS:
                self._db.execute("DELETE FROM snapshot WHERE key = ?", (key,))
                self._db.execute("INSERT INTO snapshot (key, value_json) VALUES (?, ?)",
                                 (key, json.dumps(getattr(snapshot, key), ensure_ascii=False)))

    def snapshot(self) -> Snapshot | None:
        """The run's snapshot, or None for a run made before snapshots existed."""
        stored = {r["key"]: json.loads(r["value_json"])
                  for r in self._db.execute("SELECT key, value_json FROM snapshot")}
        if "prompts" not in stored:
            return None
        return Snapshot(config=json.loads(self.run().config_json), prompts=stored["prompts"],
                        suite_items=stored.get("suite_items") or [],
                        judge_prompts=stored.get("judge_prompts") or {},
                        calibration_items=stored.get("calibration_items") or [])

    # -- models ----------------------------------------------------------------------------

    def upsert_model(self, row: ModelRow) -> None:
        values = {
            "name": row.name, "source": row.source, "kind": row.kind,
            "file_path": row.file_path, "file_bytes": row.file_bytes,
            "file_sha256": row.file_sha256, "quant": row.quant,
            "architecture": row.architecture, "engine_kind": row.engine_kind,
            "engine_version": row.engine_version,
            "engine_command_json": _dumps(row.engine_command),
            "engine_base_url": row.engine_base_url, "engine_log": row.engine_log,
            "settings_json": json.dumps(row.settings), "card_json": _dumps(row.card),
            "plan_json": _dumps(row.plan), "observed_json": _dumps(row.observed),
            "updated_at": utc_now(),
        }
        cols = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        # a replaced model is a new row (last in rowid order), as SQLite's INSERT OR REPLACE
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM models WHERE name = ?", (row.name,))
            self._db.execute(f"INSERT INTO models ({cols}) VALUES ({marks})",
                             tuple(values.values()))

    def models(self) -> list[ModelRow]:
        return [ModelRow(
            name=r["name"], source=r["source"], kind=r["kind"],
            settings=json.loads(r["settings_json"]), file_path=r["file_path"],
            file_bytes=r["file_bytes"], file_sha256=r["file_sha256"], quant=r["quant"],
            architecture=r["architecture"], engine_kind=r["engine_kind"],
            engine_version=r["engine_version"], engine_command=_loads(r["engine_command_json"]),
            engine_base_url=r["engine_base_url"], engine_log=r["engine_log"],
            card=_loads(r["card_json"]), plan=_loads(r["plan_json"]),
            observed=_loads(r["observed_json"]), updated_at=r["updated_at"],
        ) for r in self._db.execute("SELECT * FROM models ORDER BY rowid")]

    # -- requests --------------------------------------------------------------------------

    def add_request(self, row: RequestRow) -> None:
        """Commit one finished request (its own transaction: durable once this returns)."""
        self._db.execute(
            "INSERT INTO requests (seq, model, prompt_id, repeat, phase, setting, status, error,"
            " error_kind, sent_at_unix_s, request_json, record_json, metrics_json, stored_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (row.seq, row.model, row.prompt_id, row.repeat, row.phase, row.setting, row.status,
             row.error, row.error_kind,
             row.sent_at_unix_s, json.dumps(row.request, ensure_ascii=False),
             json.dumps(row.record, ensure_ascii=False),
             json.dumps(row.metrics, ensure_ascii=False), utc_now()),
        )

    def completed_seqs(self) -> set[int]:
        return {r[0] for r in self._db.execute("SELECT seq FROM requests WHERE status = 'ok'")}

    def requests(self, *, phase: str | None = None, status: str | None = None
                 ) -> Iterator[RequestRow]:
        sql = "SELECT * FROM requests WHERE 1=1"
        args: list[Any] = []
        if phase:
            sql += " AND phase = ?"
            args.append(phase)
        if status:
            sql += " AND status = ?"
            args.append(status)
        for r in self._db.execute(sql + " ORDER BY seq, id", args):
            yield RequestRow(
                seq=r["seq"], model=r["model"], prompt_id=r["prompt_id"], repeat=r["repeat"],
                phase=r["phase"], status=r["status"], error=r["error"],
                sent_at_unix_s=r["sent_at_unix_s"], request=json.loads(r["request_json"]),
                record=json.loads(r["record_json"]), metrics=json.loads(r["metrics_json"]),
                setting=r["setting"], error_kind=r["error_kind"],
            )

    # -- quality ---------------------------------------------------------------------------

    def _insert(self, table: str, row: dict[str, Any]) -> None:
        """One committed row (autocommit): durable as soon as this returns."""
        row = {**row, "stored_at": utc_now()}
        cols = ", ".join(row)
        self._db.execute(f"INSERT INTO {table} ({cols}) VALUES ({', '.join('?' for _ in row)})",
                         tuple(row.values()))

    def add_answer(self, row: AnswerRow) -> None:
        self._insert("answers", {
            "model": row.model, "item_id": row.item_id, "suite": row.suite,
            "category": row.category, "repeat": row.repeat, "status": row.status,
            "error": row.error, "error_kind": row.error_kind, "outcome": row.outcome,
            "answer": row.answer,
            "reasoning": row.reasoning, "turns_json": json.dumps(row.turns, ensure_ascii=False),
            "metrics_json": json.dumps(row.metrics, ensure_ascii=False)})

    def answers(self, *, status: str | None = "ok") -> list[AnswerRow]:
        sql = "SELECT * FROM answers" + (" WHERE status = ?" if status else "") + " ORDER BY id"
        return [AnswerRow(
            model=r["model"], item_id=r["item_id"], suite=r["suite"], category=r["category"],
            repeat=r["repeat"], status=r["status"], error=r["error"], outcome=r["outcome"],
            answer=r["answer"], reasoning=r["reasoning"], turns=json.loads(r["turns_json"]),
            metrics=json.loads(r["metrics_json"]), stored_at=r["stored_at"],
            error_kind=r["error_kind"],
        ) for r in self._db.execute(sql, (status,) if status else ())]

    def answered_keys(self) -> set[tuple[str, str, int]]:
        return {(r[0], r[1], r[2]) for r in self._db.execute(
            "SELECT model, item_id, repeat FROM answers WHERE status = 'ok'")}

    def add_grade(self, row: GradeRow) -> None:
        self._insert("grades", {
            "judge": row.judge, "kind": row.kind, "item_id": row.item_id, "repeat": row.repeat,
            "model": row.model, "model_b": row.model_b, "position": row.position,
            "status": row.status, "score": row.score, "verdict": row.verdict,
            "explanation": row.explanation, "raw_output": row.raw_output,
            "judge_reasoning": row.judge_reasoning, "detail": row.detail,
            "error_kind": row.error_kind})

    def grades(self, judge: str | None = None) -> list[GradeRow]:
        sql = "SELECT * FROM grades" + (" WHERE judge = ?" if judge else "") + " ORDER BY id"
        return [GradeRow(
            judge=r["judge"], kind=r["kind"], item_id=r["item_id"], repeat=r["repeat"],
            model=r["model"], status=r["status"], model_b=r["model_b"], position=r["position"],
            score=r["score"], verdict=r["verdict"], explanation=r["explanation"],
            raw_output=r["raw_output"], judge_reasoning=r["judge_reasoning"], detail=r["detail"],
            stored_at=r["stored_at"], error_kind=r["error_kind"],
        ) for r in self._db.execute(sql, (judge,) if judge else ())]

    def graded_keys(self, judge: str) -> set[tuple[str, str, int, str, str, str]]:
        """Grades done: every status but error, and the prompts that do not fit the judge's
        context (stored as errors, never retried)."""
        return {(r[0], r[1], r[2], r[3], r[4], r[5]) for r in self._db.execute(
            "SELECT kind, item_id, repeat, model, coalesce(model_b, ''), coalesce(position, '')"
            " FROM grades WHERE judge = ? AND (status != 'error'"
            " OR error_kind = 'context_exceeded')", (judge,))}

    def add_probe(self, row: ProbeRow) -> None:
        self._insert("judge_probes", {
            "judge": row.judge, "probe": row.probe, "item_id": row.item_id,
            "repeat": row.repeat, "model": row.model, "setting": row.setting,
            "attempt": row.attempt, "status": row.status, "score": row.score,
            "verdict": row.verdict, "explanation": row.explanation,
            "raw_output": row.raw_output, "detail": row.detail, "error_kind": row.error_kind})

    def probes(self, judge: str | None = None) -> list[ProbeRow]:
        """The judge's diagnostic answers in the order stored (a retried one: latest last)."""
        sql = ("SELECT * FROM judge_probes" + (" WHERE judge = ?" if judge else "")
               + " ORDER BY id")
        return [ProbeRow(
            judge=r["judge"], probe=r["probe"], item_id=r["item_id"], repeat=r["repeat"],
            model=r["model"], status=r["status"], setting=r["setting"], attempt=r["attempt"],
            score=r["score"], verdict=r["verdict"], explanation=r["explanation"],
            raw_output=r["raw_output"], detail=r["detail"], error_kind=r["error_kind"],
            stored_at=r["stored_at"],
        ) for r in self._db.execute(sql, (judge,) if judge else ())]

    def probed_keys(self, judge: str) -> set[tuple[str, str, int, str, str, int]]:
        """Probes done (as ``graded_keys``: errors are retried, context_exceeded is not)."""
        return {(r[0], r[1], r[2], r[3], r[4], r[5]) for r in self._db.execute(
            "SELECT probe, item_id, repeat, model, setting, attempt FROM judge_probes"
            " WHERE judge = ? AND (status != 'error' OR error_kind = 'context_exceeded')",
            (judge,))}

    def judges(self) -> list[str]:
        return [r[0] for r in self._db.execute(
            "SELECT judge FROM grades GROUP BY judge ORDER BY max(id)")]

    def add_calibration(self, row: CalibrationGradeRow) -> None:
        """One committed verdict of a judge on a calibration item."""
        self._insert("calibration_grades", {
            "judge": row.judge, "item_id": row.item_id, "kind": row.kind,
            "position": row.position, "status": row.status, "score": row.score,
            "verdict": row.verdict, "explanation": row.explanation,
            "raw_output": row.raw_output, "judge_reasoning": row.judge_reasoning,
            "detail": row.detail, "error_kind": row.error_kind})

    def calibration_grades(self, judge: str | None = None) -> list[CalibrationGradeRow]:
        """Calibration verdicts in the order stored (a retried one: latest last)."""
        sql = ("SELECT * FROM calibration_grades" + (" WHERE judge = ?" if judge else "")
               + " ORDER BY id")
        return [CalibrationGradeRow(
            judge=r["judge"], item_id=r["item_id"], kind=r["kind"], position=r["position"],
            status=r["status"], score=r["score"], verdict=r["verdict"],
            explanation=r["explanation"], raw_output=r["raw_output"],
            judge_reasoning=r["judge_reasoning"], detail=r["detail"],
            error_kind=r["error_kind"], stored_at=r["stored_at"],
        ) for r in self._db.execute(sql, (judge,) if judge else ())]

    def calibrated_keys(self, judge: str) -> set[tuple[str, str, str]]:
        """(item_id, kind, position) of the calibration verdicts done: every status but
        error (an error is retried), and prompts that do not fit the judge's context."""
        return {(r[0], r[1], r[2]) for r in self._db.execute(
            "SELECT item_id, kind, position FROM calibration_grades WHERE judge = ?"
            " AND (status != 'error' OR error_kind = 'context_exceeded')", (judge,))}

    def add_check(self, row: CheckRow) -> None:
        self._insert("checks", {
            "model": row.model, "item_id": row.item_id, "repeat": row.repeat, "name": row.name,
            "passed": None if row.passed is None else int(bool(row.passed)),
            "value": row.value, "detail": row.detail})

    def checks(self) -> list[CheckRow]:
        return [CheckRow(model=r["model"], item_id=r["item_id"], repeat=r["repeat"],
                         name=r["name"], passed=None if r["passed"] is None else bool(r["passed"]),
                         value=r["value"], detail=r["detail"], stored_at=r["stored_at"])
                for r in self._db.execute("SELECT * FROM checks ORDER BY id")]

    def checked_keys(self) -> set[tuple[str, str, int]]:
        return {(r[0], r[1], r[2]) for r in self._db.execute(
            "SELECT DISTINCT model, item_id, repeat FROM checks")}

    # -- lineage ---------------------------------------------------------------------------

    def add_lineage(self, row: LineageRow) -> None:
        """One committed lineage comparison of two of the run's models."""
        self._insert("lineage", {
            "model_a": row.model_a, "model_b": row.model_b, "verdict": row.verdict,
            "reason": row.reason, "score": row.score,
            "result_json": json.dumps(row.result, ensure_ascii=False)})

    def lineage(self) -> list[LineageRow]:
        return [LineageRow(model_a=r["model_a"], model_b=r["model_b"], verdict=r["verdict"],
                           reason=r["reason"], score=r["score"],
                           result=json.loads(r["result_json"]), stored_at=r["stored_at"])
                for r in self._db.execute("SELECT * FROM lineage ORDER BY id")]

    # -- load ------------------------------------------------------------------------------

    def write_load_level(self, row: LoadLevelRow) -> None:
        """Store a load level (again when it ends: the row is replaced, in one transaction)."""
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM load_levels WHERE model = ? AND level = ?",
                             (row.model, row.level))
            self._insert_level(row)

    def _insert_level(self, row: LoadLevelRow) -> None:
        self._insert("load_levels", {
            "model": row.model, "level": row.level, "profile": row.profile,
            "status": row.status, "started_at_unix_s": row.started_at_unix_s,
            "concurrency": row.concurrency, "rate_per_s": row.rate_per_s,
            "warmup_s": row.warmup_s, "wall_s": row.wall_s,
            "client_json": json.dumps(row.client, ensure_ascii=False),
            "server_before_json": _dumps(row.server_before),
            "server_after_json": _dumps(row.server_after),
            "spec_json": json.dumps(row.spec, ensure_ascii=False)})

    def load_levels(self, model: str | None = None) -> list[LoadLevelRow]:
        sql = "SELECT * FROM load_levels" + (" WHERE model = ?" if model else "")
        return [LoadLevelRow(
            model=r["model"], level=r["level"], profile=r["profile"], status=r["status"],
            started_at_unix_s=r["started_at_unix_s"], concurrency=r["concurrency"],
            rate_per_s=r["rate_per_s"], warmup_s=r["warmup_s"], wall_s=r["wall_s"],
            client=json.loads(r["client_json"]), server_before=_loads(r["server_before_json"]),
            server_after=_loads(r["server_after_json"]), spec=json.loads(r["spec_json"]),
        ) for r in self._db.execute(sql + " ORDER BY model, level", (model,) if model else ())]

    def add_load_requests(self, rows: list[LoadRequestRow]) -> None:
        """Commit a batch of load requests (one transaction)."""
        if not rows:
            return
        now = utc_now()
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO load_requests (model, level, worker, endpoint, prompt_id, warmup,"
                " status, error, error_kind, scheduled_s, sent_s, sent_at_unix_s, request_json,"
                " record_json, metrics_json, stored_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.model, r.level, r.worker, r.endpoint, r.prompt_id, int(r.warmup), r.status,
                  r.error, r.error_kind, r.scheduled_s, r.sent_s, r.sent_at_unix_s,
                  json.dumps(r.request, ensure_ascii=False),
                  json.dumps(r.record, ensure_ascii=False),
                  json.dumps(r.metrics, ensure_ascii=False), now) for r in rows])

    def load_requests(self, model: str | None = None, level: int | None = None
                      ) -> list[LoadRequestRow]:
        sql, args = "SELECT * FROM load_requests WHERE 1=1", list[Any]()
        if model is not None:
            sql += " AND model = ?"
            args.append(model)
        if level is not None:
            sql += " AND level = ?"
            args.append(level)
        return [LoadRequestRow(
            id=r["id"], model=r["model"], level=r["level"], worker=r["worker"],
            endpoint=r["endpoint"], prompt_id=r["prompt_id"], warmup=bool(r["warmup"]),
            status=r["status"], error=r["error"], error_kind=r["error_kind"],
            scheduled_s=r["scheduled_s"], sent_s=r["sent_s"],
            sent_at_unix_s=r["sent_at_unix_s"], request=json.loads(r["request_json"]),
            record=json.loads(r["record_json"]), metrics=json.loads(r["metrics_json"]),
        ) for r in self._db.execute(sql + " ORDER BY id", args)]

    # -- machine samples -------------------------------------------------------------------

    def add_machine_samples(self, rows: list[MachineSample]) -> None:
        """Commit a batch of samples (one transaction). The sampler calls this from its own
        thread on its own ``Store``; a store is still used by one thread at a time."""
        if not rows:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO machine_samples (t_unix_s, interval_s, usable_cores, cpu_busy_pct,"
                " engine_cpu_s, kurabe_cpu_s, other_cpu_s, load_1m, cpu_freq_mhz, gpus_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(r.t_unix_s, r.interval_s, r.usable_cores, r.cpu_busy_pct, r.engine_cpu_s,
                  r.kurabe_cpu_s, r.other_cpu_s, r.load_1m, r.cpu_freq_mhz,
                  json.dumps(r.gpus)) for r in rows])

    def machine_samples(self) -> list[MachineSample]:
        return [MachineSample(
            t_unix_s=r["t_unix_s"], interval_s=r["interval_s"], usable_cores=r["usable_cores"],
            cpu_busy_pct=r["cpu_busy_pct"], engine_cpu_s=r["engine_cpu_s"],
            kurabe_cpu_s=r["kurabe_cpu_s"], other_cpu_s=r["other_cpu_s"], load_1m=r["load_1m"],
            cpu_freq_mhz=r["cpu_freq_mhz"], gpus=json.loads(r["gpus_json"]),
        ) for r in self._db.execute("SELECT * FROM machine_samples ORDER BY t_unix_s, id")]


# -- a damaged store ------------------------------------------------------------------------

# JSON columns whose value is always an object
_JSON_OBJECTS = {"config_json", "machine_json", "request_json", "record_json", "metrics_json",
                 "settings_json", "result_json"}


def damage_error(run_dir: Path, exc: Exception, doing: str) -> Exception:
    """The error to show for ``exc``, raised while reading the store of ``run_dir`` to
    ``doing`` (report, resume, compare...): a KurabeError when the store is to blame (a row
    kurabe cannot read, a damaged file), else ``exc`` itself (a fault of kurabe's, shown as
    such)."""
    from pydantic import ValidationError

    read_error: tuple[type[Exception], ...] = (json.JSONDecodeError, UnicodeError,
                                               ValidationError, sqlite3.Error)
    if not (run_dir / STORE_NAME).exists() and (run_dir / PG_STORE_NAME).exists():
        # PostgreSQL checks its own pages and types: what is left to find is a bad row
        name, where = "PostgreSQL schema", None
        try:
            import psycopg
            read_error += (psycopg.Error,)
        except ImportError:
            pass
    else:
        name, where = STORE_NAME, _find_damage(run_dir / STORE_NAME)
    if where is None and not isinstance(exc, read_error):
        return exc
    return KurabeError(f"{run_dir}: cannot {doing} this run, its {name} is damaged: "
                       f"{where or _one_line(exc)}")


def _one_line(exc: Exception) -> str:
    from pydantic import ValidationError

    if isinstance(exc, ValidationError) and exc.errors():
        first = exc.errors()[0]
        text = f"run config {'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    else:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 200 else text[:199] + "…"


def _find_damage(path: Path) -> str | None:
    """The first thing wrong with a kurabe store, in words, or None: the file itself (SQLite's
    quick check), then each row: a JSON column that is not JSON (or not an object where one
    belongs), a number column that holds no number."""
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    except sqlite3.Error as exc:
        return f"cannot open it ({exc})"
    try:
        problems = [r[0] for r in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            return f"the database file is corrupt ({problems[0]})"
        tables = [r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
        for table in tables:
            for _, column, declared, *_ in conn.execute(f'PRAGMA table_info("{table}")'):
                if column.endswith("_json"):
                    checks = [(f'json_valid(CAST("{column}" AS TEXT)) = 0', "is not valid JSON")]
                    if column in _JSON_OBJECTS:
                        checks.append((f'json_type(CAST("{column}" AS TEXT)) != \'object\'',
                                       "is not a JSON object"))
                elif declared.upper() in ("INTEGER", "REAL"):
                    checks = [(f'typeof("{column}") NOT IN (\'integer\', \'real\', \'null\')',
                               "is not a number")]
                else:
                    continue
                for condition, problem in checks:
                    found = conn.execute(f'SELECT rowid FROM "{table}" WHERE "{column}" IS NOT '
                                         f"NULL AND {condition} LIMIT 1").fetchone()
                    if found is not None:
                        return f"table {table}, row {found[0]}: {column} {problem}"
    except sqlite3.Error as exc:
        return f"the database file cannot be read ({exc})"
    finally:
        conn.close()
    return None
