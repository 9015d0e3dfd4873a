"""The SQLite store: WAL, a durable row per request, migrations, clear errors."""

import sqlite3

import pytest

from kurabe import KurabeError
from kurabe.records import RequestRow, RunRow
from kurabe.store import MIGRATIONS, STORE_NAME, RunExistsError, Store


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
