"""The results store: one SQLite file (WAL) per run folder, the source of truth for reports.

Every request is committed as it completes, so an interrupted run loses at most the request
in flight. The schema carries a version (``PRAGMA user_version``) and forward migrations.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
        names = [d[0] for d in cursor.description]
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


class Store:
    """The run's SQLite file. Takes and returns only ``kurabe.records`` rows."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._db = conn
        self.closed = False

    # -- opening ---------------------------------------------------------------------------

    @classmethod
    def create(cls, run_dir: Path, *, url: str | None = None) -> Store:
        """A new run's store: the run folder's SQLite file, or (``url``) a PostgreSQL
        database."""
        if url is not None:
            raise KurabeError(f"run.store: {url!r}: only the run folder's SQLite file is "
                              "supported so far")
        path = Path(run_dir) / STORE_NAME
        if path.exists():
            raise RunExistsError(Path(run_dir))
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls._open(path)

    @classmethod
    def open(cls, run_dir: Path, *, read_only: bool = False) -> Store:
        """An existing run's store. The file is first looked at without write access, so an
        empty, foreign or damaged file is refused and left exactly as it was. ``read_only``:
        read the store without writing to it (unless its schema needs a migration first)."""
        path = Path(run_dir) / STORE_NAME
        if not path.is_file():
            raise KurabeError(f"{run_dir}: no kurabe run here ({STORE_NAME} is missing)")
        version = _probe(path)
        return cls._open(path, read_only=read_only and version == len(MIGRATIONS))

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
                (run.created_at, run.kurabe_version, run.command, run.config_json,
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
        self._db.execute("UPDATE run SET config_json = ? WHERE id = 1", (config_json,))
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
            " VALUES (?, ?, ?, ?, ?, ?)",
            (row.role, row.model, row.pid, row.create_time, json.dumps(row.command),
             row.started_at))
        return int(cur.lastrowid or 0)

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
                self._db.execute("INSERT OR REPLACE INTO snapshot (key, value_json) VALUES (?, ?)",
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
        self._db.execute(f"INSERT OR REPLACE INTO models ({cols}) VALUES ({marks})",
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
        """Store a load level (again when it ends: the row is replaced)."""
        self._db.execute("DELETE FROM load_levels WHERE model = ? AND level = ?",
                         (row.model, row.level))
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
        sql, args = "SELECT * FROM load_requests WHERE 1=1", []
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

    where = _find_damage(run_dir / STORE_NAME)
    read_error = (json.JSONDecodeError, UnicodeError, ValidationError, sqlite3.Error)
    if where is None and not isinstance(exc, read_error):
        return exc
    return KurabeError(f"{run_dir}: cannot {doing} this run, its {STORE_NAME} is damaged: "
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
