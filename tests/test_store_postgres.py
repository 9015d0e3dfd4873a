"""PostgreSQL as the results store, against a real server started for the session: the same
rows as SQLite, a whole run and its report, runs that share a database and stay apart,
writers at the same time, no password on disk, clear errors."""

import json
import os
import socket
import sys
import threading

import psycopg
import pytest
from test_store import fill, read_all, row

from kurabe import KurabeError, api
from kurabe.backends.scripted import ScriptedReply
from kurabe.config import parse_config
from kurabe.records import MachineSample, RunRow
from kurabe.store import _PASSWORDS, MIGRATIONS, PG_STORE_NAME, STORE_NAME, Store, safe_url

from conftest import run_kurabe

pytest_plugins = ["postgres_server"]  # its postgres_url fixture


def schema_of(run_dir) -> str:
    return json.loads((run_dir / PG_STORE_NAME).read_text())["schema"]


def test_postgres_gives_back_exactly_what_sqlite_does(tmp_path, postgres_url):
    with Store.create(tmp_path / "lite") as lite, \
            Store.create(tmp_path / "pg", url=postgres_url) as pg:
        fill(lite)
        fill(pg)
        assert read_all(pg) == read_all(lite)
    assert not (tmp_path / "pg" / STORE_NAME).exists()


def test_the_run_folder_names_the_schema_and_never_the_password(tmp_path, postgres_url,
                                                                monkeypatch):
    password = postgres_url.split(":")[2].split("@")[0]
    config = json.dumps({"run": {"name": "n", "store": postgres_url}})
    with Store.create(tmp_path / "run", url=postgres_url) as store:
        store.write_run(RunRow(created_at="t", kurabe_version="x", command="c",
                               config_json=config, machine={}, status="running"))
        assert json.loads(store.run().config_json)["run"]["store"] == safe_url(postgres_url)
    pointer = json.loads((tmp_path / "run" / PG_STORE_NAME).read_text())
    assert pointer["url"] == safe_url(postgres_url) and password not in pointer["url"]
    assert pointer["schema"].startswith("kurabe_run_")
    assert all(password not in p.read_text(errors="replace")
               for p in (tmp_path / "run").rglob("*") if p.is_file())
    # another process knows no password: it takes PGPASSWORD (or ~/.pgpass)
    monkeypatch.setitem(os.environ, "PGPASSFILE", str(tmp_path / "none"))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setattr("kurabe.store._PASSWORDS", {})
    with pytest.raises(KurabeError, match="run.store: cannot connect to postgresql://kurabe@"
                       ) as refused:
        Store.open(tmp_path / "run")
    assert password not in str(refused.value)
    monkeypatch.setenv("PGPASSWORD", password)
    with Store.open(tmp_path / "run", read_only=True) as store:
        assert store.run().status == "running"


def test_a_store_from_a_newer_kurabe_is_refused(tmp_path, postgres_url):
    Store.create(tmp_path / "run", url=postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(f"UPDATE {schema_of(tmp_path / 'run')}.kurabe_schema SET version = %s",
                   [len(MIGRATIONS) + 1])
    with pytest.raises(KurabeError, match="newer kurabe"):
        Store.open(tmp_path / "run")


def test_a_dropped_schema_is_a_clear_error(tmp_path, postgres_url):
    Store.create(tmp_path / "run", url=postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as db:
        db.execute(f"DROP SCHEMA {schema_of(tmp_path / 'run')} CASCADE")
    with pytest.raises(KurabeError, match=f"{PG_STORE_NAME}: schema kurabe_run_.*not a kurabe"):
        Store.open(tmp_path / "run")


def test_bad_urls_a_server_down_and_no_psycopg_are_one_clear_line(tmp_path, postgres_url,
                                                                  monkeypatch):
    with pytest.raises(KurabeError, match="run.store: 'mysql://u@h/d' is not a PostgreSQL URL"):
        Store.create(tmp_path / "a", url="mysql://u:secret@h/d")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    down = f"postgresql://kurabe:secret@127.0.0.1:{port}/kurabe"
    with pytest.raises(KurabeError) as failed:
        Store.create(tmp_path / "b", url=down)
    message = str(failed.value)
    assert message.startswith(f"run.store: cannot connect to postgresql://kurabe@127.0.0.1:{port}"
                              "/kurabe") and "secret" not in message and "\n" not in message
    assert not (tmp_path / "b").exists()  # nothing left behind to resume
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(KurabeError, match=r"run.store: postgresql://kurabe@.*needs psycopg"):
        Store.create(tmp_path / "c", url=postgres_url)


def test_runs_sharing_a_database_write_at_once_and_stay_apart(tmp_path, postgres_url):
    stores = [Store.create(tmp_path / f"run{i}", url=postgres_url) for i in range(3)]
    # within a run, the machine sampler writes on its own store from another thread
    sampler = Store.open(tmp_path / "run0")
    errors: list[BaseException] = []

    def requests(store, n):
        try:
            for seq in range(n):
                store.add_request(row(seq))
        except BaseException as exc:  # noqa: BLE001  (reported below)
            errors.append(exc)

    def samples():
        try:
            for i in range(20):
                sampler.add_machine_samples([MachineSample(
                    t_unix_s=float(i), interval_s=1.0, usable_cores=2, cpu_busy_pct=1.0,
                    engine_cpu_s=0.0, kurabe_cpu_s=0.0, other_cpu_s=0.0)])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=requests, args=(s, 30 + 10 * i))
               for i, s in enumerate(stores)] + [threading.Thread(target=samples)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [len(list(s.requests())) for s in stores] == [30, 40, 50]
    assert len(stores[0].machine_samples()) == 20
    assert stores[1].machine_samples() == [] and stores[2].machine_samples() == []
    assert len({schema_of(tmp_path / f"run{i}") for i in range(3)}) == 3
    for s in [*stores, sampler]:
        s.close()


PROMPTS = [{"id": "p1", "text": "一つ目の質問", "category": "knowledge"},
           {"id": "p2", "text": "二つ目の質問", "category": "creative"}]


def shootout(script, store):
    models = [{"name": n, "source": script(ScriptedReply(content=f"{n}の答えです。丁寧に説明します。",
                                                          token_s=0.001))}
              for n in ("a", "b")]
    return parse_config({"run": {"name": "t", "repeats": 2, "warmup": 1, "max_tokens": 32,
                                 "store": store},
                         "models": models, "prompts": PROMPTS}, "test")


def stable(run_dir) -> dict:
    """A run's rows without what the clock decides (times, rates, script names)."""
    with Store.open(run_dir, read_only=True) as store:
        return {
            "status": store.run().status,
            "models": [(m.name, m.kind) for m in store.models()],
            "requests": [(r.seq, r.model, r.prompt_id, r.repeat, r.phase, r.status,
                          r.error_kind, r.request,
                          [c[1:] for c in r.record["chunks"]], r.record["finish_reason"],
                          r.metrics["output_tokens"], r.metrics["answer_chars"])
                         for r in store.requests()],
            "snapshot": store.snapshot().prompts,
            "processes": [(p.role, p.model, p.end_reason) for p in store.processes()],
        }


def test_a_whole_run_in_postgres_reports_the_rows_sqlite_holds(tmp_path, postgres_url,
                                                              script):
    lite = api.run_shootout(shootout(script, None), tmp_path / "lite")
    pg = api.run_shootout(shootout(script, postgres_url), tmp_path / "pg")
    assert lite.complete and pg.complete
    assert not (tmp_path / "pg" / STORE_NAME).exists()
    assert stable(tmp_path / "pg") == stable(tmp_path / "lite")
    # one warm-up request per model, then 2 models x 2 prompts x 2 repeats
    assert len(stable(tmp_path / "pg")["requests"]) == 2 + 2 * 2 * 2
    # `kurabe report` in a process of its own finds the schema from the run folder alone
    (tmp_path / "pg" / "report.md").unlink()
    env = {**os.environ, "PGPASSWORD": postgres_url.split(":")[2].split("@")[0]}
    done = run_kurabe("report", str(tmp_path / "pg"), "--json", env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (tmp_path / "pg" / "report.md").is_file()
    lite_summary = lite.summary_json()
    assert summary.keys() == lite_summary.keys()
    assert json.dumps(summary).count('"a"') == json.dumps(lite_summary).count('"a"')
    assert _PASSWORDS  # the password given at create time stays in this process only
