"""The results store: WAL, a durable row per request, migrations, clear errors; every row
read back as written, from the SQLite file and from PostgreSQL alike."""

import sqlite3

import pytest

from kurabe import KurabeError
from kurabe.processes import ProcessRow
from kurabe.records import (
    AnswerRow,
    CalibrationGradeRow,
    CheckRow,
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
from kurabe.store import MIGRATIONS, STORE_NAME, RunExistsError, Store

pytest_plugins = ["postgres_server"]  # its postgres_url fixture


def row(seq, status="ok"):
    return RequestRow(seq=seq, model="a", prompt_id="p", repeat=0, phase="measure",
                      status=status, error=None if status == "ok" else "boom",
                      sent_at_unix_s=1.0, request={"max_tokens": 1},
                      record={"chunks": [[0.1, "日本", ""]]}, metrics={"ttft_s": 0.1})


def test_each_request_is_durable_as_soon_as_it_is_added(tmp_path):
    store = Store.create(tmp_path)
    store.write_run(RunRow(created_at="t", kurabe_version="x", command="kurabe run",
                           config_json="{}", machine={"cpu": "c"}, status="running"))
    store.add_request(row(0))
    # Another connection (another process after a crash) sees it at once.
    other = sqlite3.connect(tmp_path / STORE_NAME)
    assert other.execute("SELECT count(*) FROM requests").fetchone()[0] == 1
    assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert other.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    store.add_request(row(1, status="error"))
    assert store.completed_seqs() == {0}
    got = list(store.requests(status="ok"))[0]
    assert got.record["chunks"][0][1] == "日本" and got.metrics == {"ttft_s": 0.1}
    store.close()


def test_create_refuses_an_existing_run_and_open_needs_one(tmp_path):
    Store.create(tmp_path).close()
    with pytest.raises(RunExistsError, match="already holds a run"):
        Store.create(tmp_path)
    with pytest.raises(KurabeError, match="no kurabe run here"):
        Store.open(tmp_path / "elsewhere")


def test_a_store_from_a_newer_kurabe_is_refused(tmp_path):
    Store.create(tmp_path).close()
    db = sqlite3.connect(tmp_path / STORE_NAME)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(KurabeError, match="newer kurabe"):
        Store.open(tmp_path)


def test_a_file_that_is_not_sqlite_is_a_clear_error(tmp_path):
    (tmp_path / STORE_NAME).write_text("not a database")
    with pytest.raises(KurabeError, match=STORE_NAME):
        Store.open(tmp_path)


# -- both databases: the same rows through the same code ------------------------------------

@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request):
    """None (the run folder's SQLite file) or the URL of a throwaway PostgreSQL server."""
    return None if request.param == "sqlite" else request.getfixturevalue("postgres_url")


def fill(store: Store) -> None:
    """One row of every kind, with what a database may get wrong: Japanese text, a NUL-free
    control character, a file over 2 GiB (64-bit integers), a unix time to the microsecond
    (double precision), booleans, None."""
    store.write_run(RunRow(created_at="t0", kurabe_version="x", command="kurabe run",
                           config_json='{"run": {"name": "n"}}', machine={"cpu": "c"},
                           status="running"))
    store.write_snapshot(Snapshot(config={}, prompts=[{"id": "p", "text": "質問"}],
                                  suite_items=[{"id": "i"}]))
    store.write_snapshot(Snapshot(config={}, prompts=[{"id": "p", "text": "質問 2"}]))
    for name in ("b", "a"):
        store.upsert_model(ModelRow(name=name, source="builtin:x", kind="builtin",
                                    settings={"ctx": 512}, file_bytes=7_000_000_000,
                                    engine_command=["llama-server", "-m", "x"]))
    store.upsert_model(ModelRow(name="b", source="builtin:y", kind="builtin", settings={}))
    assert store.add_process(ProcessRow(id=None, role="kurabe", model=None, pid=10,
                                        create_time=1700000000.123456, command=["k"],
                                        started_at="t")) == 1
    second = store.add_process(ProcessRow(id=None, role="engine", model="a", pid=11,
                                          create_time=1.5, command=["e"], started_at="t"))
    store.end_process(second, "stopped")
    store.add_request(row(0))
    store.add_request(row(1, status="error"))
    store.add_event("note", "100% 日本\x07")
    store.set_status("complete")
    store.add_answer(AnswerRow(model="a", item_id="i", suite="s", category="c", repeat=0,
                               status="ok", error=None, outcome="answered", answer="答え",
                               reasoning="", turns=[{"q": 1}], metrics={"m": 1.25}))
    store.add_grade(GradeRow(judge="j", kind="pairwise", item_id="i", repeat=0, model="a",
                             model_b="b", position="ab", status="scored", score=0.5,
                             verdict="A"))
    store.add_probe(ProbeRow(judge="j", probe="free", item_id="i", repeat=0, model="a",
                             status="error", error_kind="context_exceeded"))
    store.add_calibration(CalibrationGradeRow(judge="j", item_id="i", kind="single",
                                              position="good", status="scored", score=9.0))
    store.add_check(CheckRow(model="a", item_id="i", repeat=0, name="lang", passed=True,
                             value=0.75))
    store.add_check(CheckRow(model="a", item_id="i", repeat=0, name="len", passed=None))
    store.add_lineage(LineageRow(model_a="a", model_b="b", verdict="independent",
                                 reason="r", score=None, result={"k": [1, 2]}))
    level = LoadLevelRow(model="a", level=0, profile="concurrency", status="running",
                         started_at_unix_s=1700000000.654321, concurrency=4,
                         client={"workers": 1}, spec={"profile": "concurrency"})
    store.write_load_level(level)
    store.write_load_level(LoadLevelRow(**{**level.__dict__, "status": "complete",
                                           "wall_s": 2.5, "server_after": {"samples": {}}}))
    store.add_load_requests([
        LoadRequestRow(model="a", level=0, status=s, endpoint="http://h/v1", prompt_id="p",
                       sent_s=0.1 * i, sent_at_unix_s=1700000000.0 + i, warmup=i == 0,
                       error_kind=None if s == "ok" else "cancelled", record={"i": i})
        for i, s in enumerate(["ok", "ok", "cancelled"])])
    store.add_machine_samples([MachineSample(t_unix_s=2.0, interval_s=1.0, usable_cores=2,
                                             cpu_busy_pct=50.0, engine_cpu_s=0.5,
                                             kurabe_cpu_s=0.1, other_cpu_s=0.4,
                                             gpus=[{"index": 0}])])


def read_all(store: Store) -> dict:
    """Everything the store's readers give back, times of storage left out."""
    def plain(rows):
        return [{k: v for k, v in vars(r).items() if k not in ("stored_at", "updated_at")}
                for r in rows]
    run = store.run()
    return {
        "run": (run.status, run.config_json, run.machine, run.finished_at is not None),
        "snapshot": vars(store.snapshot()), "models": plain(store.models()),
        "processes": plain(store.processes()), "running": plain(store.processes(
            running_only=True)),
        "requests": plain(store.requests()), "completed": store.completed_seqs(),
        "events": [(e.kind, e.detail) for e in store.events()],
        "answers": plain(store.answers()), "answered": store.answered_keys(),
        "grades": plain(store.grades()), "graded": store.graded_keys("j"),
        "judges": store.judges(), "probes": plain(store.probes()),
        "probed": store.probed_keys("j"), "calibration": plain(store.calibration_grades()),
        "calibrated": store.calibrated_keys("j"), "checks": plain(store.checks()),
        "checked": store.checked_keys(), "lineage": plain(store.lineage()),
        "levels": plain(store.load_levels()), "load": plain(store.load_requests(level=0)),
        "load_b": store.load_requests(model="b"), "samples": plain(store.machine_samples()),
    }


def test_every_row_reads_back_as_written(tmp_path, store_url):
    with Store.create(tmp_path / "run", url=store_url) as store:
        fill(store)
    with Store.open(tmp_path / "run", read_only=True) as store:
        got = read_all(store)
    assert got["snapshot"]["prompts"] == [{"id": "p", "text": "質問 2"}]
    assert got["snapshot"]["suite_items"] == []
    # a replaced model is the newest row, as it always was in SQLite
    assert [(m["name"], m["source"]) for m in got["models"]] == [("a", "builtin:x"),
                                                                  ("b", "builtin:y")]
    assert got["models"][0]["file_bytes"] == 7_000_000_000
    assert [(p["id"], p["create_time"], p["end_reason"]) for p in got["processes"]] == [
        (1, 1700000000.123456, None), (2, 1.5, "stopped")]
    assert [p["id"] for p in got["running"]] == [1]
    assert got["completed"] == {0}
    assert [r["record"]["chunks"][0][1] for r in got["requests"]] == ["日本", "日本"]
    assert got["events"] == [("note", "100% 日本\x07")]
    assert got["run"] == ("complete", '{"run": {"name": "n"}}', {"cpu": "c"}, True)
    assert got["answered"] == {("a", "i", 0)}
    assert got["graded"] == {("pairwise", "i", 0, "a", "b", "ab")}
    assert got["probed"] == {("free", "i", 0, "a", "", 0)}
    assert got["calibrated"] == {("i", "single", "good")}
    assert [(c["name"], c["passed"], c["value"]) for c in got["checks"]] == [
        ("lang", True, 0.75), ("len", None, None)]
    assert got["lineage"][0]["result"] == {"k": [1, 2]} and got["lineage"][0]["score"] is None
    assert len(got["levels"]) == 1 and got["levels"][0]["status"] == "complete"
    assert got["levels"][0]["started_at_unix_s"] == 1700000000.654321
    assert [(r["status"], r["warmup"], r["sent_at_unix_s"]) for r in got["load"]] == [
        ("ok", True, 1700000000.0), ("ok", False, 1700000001.0),
        ("cancelled", False, 1700000002.0)]
    assert got["load_b"] == [] and got["samples"][0]["gpus"] == [{"index": 0}]


def test_a_read_only_open_writes_nothing(tmp_path, store_url):
    with Store.create(tmp_path / "run", url=store_url) as store:
        fill(store)
    with Store.open(tmp_path / "run", read_only=True) as store, pytest.raises(Exception,
                                                                               match="(?i)read.only|readonly"):
        store.add_event("late", "refused")
    with Store.open(tmp_path / "run") as store:
        assert [e.kind for e in store.events()] == ["note"]


def test_create_and_open_need_the_right_folder_on_both(tmp_path, store_url):
    Store.create(tmp_path / "run", url=store_url).close()
    with pytest.raises(RunExistsError, match="already holds a run"):
        Store.create(tmp_path / "run", url=store_url)
    with pytest.raises(RunExistsError):  # nor does a folder switch database
        Store.create(tmp_path / "run", url=None if store_url else "postgresql://u@h/d")
    with pytest.raises(KurabeError, match="no kurabe run here"):
        Store.open(tmp_path / "elsewhere")
