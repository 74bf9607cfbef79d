"""The store on both backends: the same tests on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3

import pytest

from lmtune.serve.jobs import claim_next, transition
from lmtune.serve.migrations import current_version
from lmtune.serve.store import Store, database_url, new_id, now


def add_job(store: Store, project: str, status: str = "queued") -> str:
    """A minimal jobs row; returns its id."""
    job_id = new_id("ftjob")
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}}
    store.insert("jobs", {"id": job_id, "project": project, "model": "tiny-llama", "training_file": "file-x",
                          "status": status, "created_at": now(), "hyperparameters": {"n_epochs": 1},
                          "method": method, "seed": 1})
    return job_id


def test_rows_round_trip_with_json_columns_and_row_counts(store):
    job_id = add_job(store, "alpha")
    row = store.one("SELECT * FROM jobs WHERE id=?", (job_id,))
    assert row["method"]["supervised"]["hyperparameters"] == {"n_epochs": 1}
    assert row["result_files"] == [] and row["metrics_step"] == 0 and row["worker"] is None
    assert store.execute("UPDATE jobs SET status='paused' WHERE project=?", ("alpha",)) == 1
    assert store.execute("UPDATE jobs SET status='paused' WHERE project=?", ("nobody",)) == 0
    assert store.one("SELECT * FROM jobs WHERE id=?", ("ftjob-none",)) is None
    assert store.one("SELECT COUNT(*) AS n FROM jobs WHERE status='paused'")["n"] == 1


def test_literal_question_marks_and_percent_signs_survive(store):
    store.add_event("ftjob-a", "100% done? yes")
    store.execute("UPDATE events SET message=? WHERE message LIKE '100%'", ("50% done?",))
    assert [r["message"] for r in store.all("SELECT message FROM events WHERE message LIKE '%?'")] == ["50% done?"]
    assert store.one("SELECT '5%' AS v, COUNT(*) AS n FROM events")["v"] == "5%"
    assert store.one("SELECT '5%?' AS v, COUNT(*) AS n FROM events WHERE message=?", ("50% done?",)) == {"v": "5%?",
                                                                                                       "n": 1}


def test_transaction_rolls_back_on_error_and_commits_otherwise(store):
    with pytest.raises(RuntimeError):
        with store.tx() as db:
            store.add_event("ftjob-a", "lost", db=db)
            raise RuntimeError("boom")
    with store.tx() as db:
        store.add_event("ftjob-a", "kept", db=db, data={"step": 2})
        assert db.execute("SELECT COUNT(*) AS n FROM events").fetchone()["n"] == 1  # its own write, uncommitted
    events = store.all("SELECT * FROM events")
    assert [(e["message"], e["data"]) for e in events] == [("kept", {"step": 2})]


def test_pages_follow_cursors_and_refuse_foreign_ones(store):
    ids = [add_job(store, "alpha") for _ in range(5)]
    other = add_job(store, "beta")
    first, more = store.page("jobs", "project=?", ("alpha",), None, 2)
    assert [r["id"] for r in first] == ids[::-1][:2] and more
    rest, more = store.page("jobs", "project=?", ("alpha",), first[-1]["id"], 10)
    assert [r["id"] for r in rest] == ids[::-1][2:] and not more
    asc, _ = store.page("jobs", "project=?", ("alpha",), ids[1], 2, order="asc")
    assert [r["id"] for r in asc] == ids[2:4]
    with pytest.raises(KeyError):
        store.page("jobs", "project=?", ("alpha",), other, 2)


def test_upserts_on_conflict(store):
    from lmtune.serve.auth import create_key, project_for_key

    key_a, key_b = create_key(store, "alpha"), create_key(store, "alpha")  # the project row exists the second time
    assert project_for_key(store, key_a) == project_for_key(store, key_b) == "alpha"
    assert store.one("SELECT COUNT(*) AS n FROM projects")["n"] == 1


def test_transition_moves_only_from_the_listed_states(store):
    job_id = add_job(store, "alpha", status="succeeded")
    assert not transition(store, job_id, "cancelled", ("queued", "running"))
    job_id = add_job(store, "alpha")
    assert transition(store, job_id, "paused", ("queued", "running"), pause_step=4)
    assert store.one("SELECT status, pause_step FROM jobs WHERE id=?", (job_id,)) == {"status": "paused",
                                                                                        "pause_step": 4}


def test_a_project_with_five_queued_jobs_does_not_hold_back_another_projects_single_job(store):
    busy = [add_job(store, "busy") for _ in range(5)]
    single = add_job(store, "single")  # queued last
    first = claim_next(store, 0, "r1")
    assert first["id"] == busy[0] and first["status"] == "running" and first["replica"] == "r1"
    # One worker: the busy project's job finishes, and the next claim goes to the project that has not run yet.
    transition(store, first["id"], "succeeded", ("running",))
    assert claim_next(store, 0)["id"] == single
    transition(store, single, "succeeded", ("running",))
    assert [claim_next(store, 0)["id"] for _ in range(2)] == busy[1:3]  # FIFO within a project


def test_concurrent_workers_alternate_between_projects(store):
    a = [add_job(store, "a") for _ in range(3)]
    b = [add_job(store, "b") for _ in range(3)]
    # Two workers free at once: one job of each project, not the first two of the oldest project.
    assert {claim_next(store, 0)["id"], claim_next(store, 1)["id"]} == {a[0], b[0]}


def test_per_project_limit_keeps_the_rest_queued(store):
    a = [add_job(store, "a") for _ in range(3)]
    assert claim_next(store, 0, max_per_project=2)["id"] == a[0]
    assert claim_next(store, 1, max_per_project=2)["id"] == a[1]
    assert claim_next(store, 2, max_per_project=2) is None  # a's third job waits for a free slot of its own
    b = add_job(store, "b")
    assert claim_next(store, 2, max_per_project=2)["id"] == b
    transition(store, a[0], "succeeded", ("running",))
    assert claim_next(store, 3, max_per_project=2)["id"] == a[2]


def _claim_all(url: str, worker: int, out: multiprocessing.Queue) -> None:
    store = Store(url)
    mine = []
    while (job := claim_next(store, worker, max_per_project=1000)) is not None:
        mine.append(job["id"])
    out.put(mine)


@pytest.mark.slow
def test_every_job_is_claimed_exactly_once_by_concurrent_processes(store, store_url):
    jobs = {add_job(store, f"p{i % 3}") for i in range(60)}
    out: multiprocessing.Queue = multiprocessing.get_context("spawn").Queue()
    procs = [multiprocessing.get_context("spawn").Process(target=_claim_all, args=(store_url, w, out))
             for w in range(4)]
    for p in procs:
        p.start()
    claimed = [job for _ in procs for job in out.get(timeout=120)]
    for p in procs:
        p.join(30)
    assert sorted(claimed) == sorted(jobs)  # every job once: none twice, none missed
    assert store.one("SELECT COUNT(*) AS n FROM jobs WHERE status='running'")["n"] == 60


# The schema of the unversioned SQLite store (lmtune before Alembic), verbatim.
UNVERSIONED_SCHEMA = """
CREATE TABLE projects (name TEXT PRIMARY KEY, created_at INTEGER NOT NULL);
CREATE TABLE keys (
    id TEXT PRIMARY KEY, project TEXT NOT NULL REFERENCES projects(name), hash TEXT NOT NULL UNIQUE,
    created_at INTEGER NOT NULL, revoked INTEGER NOT NULL DEFAULT 0);
CREATE TABLE files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, project TEXT NOT NULL,
    filename TEXT NOT NULL, purpose TEXT NOT NULL, bytes INTEGER NOT NULL, created_at INTEGER NOT NULL,
    path TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'processed', deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, project TEXT NOT NULL,
    model TEXT NOT NULL, training_file TEXT NOT NULL, validation_file TEXT, status TEXT NOT NULL,
    created_at INTEGER NOT NULL, started_at INTEGER, finished_at INTEGER, fine_tuned_model TEXT,
    trained_tokens INTEGER, error TEXT, hyperparameters TEXT NOT NULL, method TEXT NOT NULL,
    seed INTEGER NOT NULL, suffix TEXT, metadata TEXT, result_files TEXT NOT NULL DEFAULT '[]',
    run_dir TEXT, worker INTEGER, metrics_step INTEGER NOT NULL DEFAULT 0, pause_step INTEGER);
CREATE INDEX jobs_status ON jobs(status, seq);
CREATE TABLE events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL, type TEXT NOT NULL, data TEXT);
CREATE INDEX events_job ON events(job_id, seq);
CREATE TABLE checkpoints (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, step INTEGER NOT NULL, metrics TEXT NOT NULL, model_name TEXT NOT NULL,
    UNIQUE (job_id, step));
CREATE TABLE models (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, project TEXT NOT NULL,
    created_at INTEGER NOT NULL, base TEXT NOT NULL, job_id TEXT NOT NULL, path TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0);
CREATE TABLE workers (
    idx INTEGER PRIMARY KEY, pid INTEGER NOT NULL, heartbeat REAL NOT NULL, job_id TEXT, steps_per_second REAL);
"""


def test_an_unversioned_sqlite_database_upgrades_without_loss(tmp_path):
    path = tmp_path / "lmtune.db"
    with sqlite3.connect(path) as db:
        db.executescript(UNVERSIONED_SCHEMA)
        db.execute("INSERT INTO projects VALUES ('alpha', 1)")
        db.execute("INSERT INTO keys (id, project, hash, created_at) VALUES ('key-1', 'alpha', 'h1', 1)")
        db.execute("INSERT INTO jobs (id, project, model, training_file, status, created_at, hyperparameters, "
                   "method, seed, worker) "
                   "VALUES ('ftjob-1', 'alpha', 'tiny-llama', 'file-1', 'running', 5, '{}', ?, 7, 0)",
                   (json.dumps({"type": "supervised"}),))
        db.execute("INSERT INTO events (id, job_id, created_at, level, message, type) "
                   "VALUES ('ev-1', 'ftjob-1', 6, 'info', 'Fine-tuning job started', 'message')")
        db.execute("DELETE FROM events")  # AUTOINCREMENT remembers seq 1: the next event must get seq 2
    store = Store(path)
    with store.engine.connect() as conn:
        assert current_version(conn) == "0002"
    job = store.one("SELECT * FROM jobs WHERE id='ftjob-1'")
    assert (job["status"], job["seed"], job["worker"], job["replica"], job["method"]) == (
        "running", 7, 0, None, {"type": "supervised"})
    assert store.one("SELECT project FROM keys WHERE hash='h1'") == {"project": "alpha"}
    store.add_event("ftjob-1", "after the upgrade")
    assert store.one("SELECT seq FROM events")["seq"] == 2
    Store(path)  # opening it again is a no-op
    assert store.one("SELECT COUNT(*) AS n FROM jobs")["n"] == 1


def test_a_new_database_is_at_the_newest_version(store):
    with store.engine.connect() as conn:
        assert current_version(conn) == "0002"


def test_database_urls():
    assert database_url("postgresql://u@h:5/db") == "postgresql+psycopg://u@h:5/db"
    assert database_url("/srv/x/lmtune.db") == "sqlite:////srv/x/lmtune.db"


def _open(url: str, out: multiprocessing.Queue) -> None:
    Store(url)
    out.put("ok")


@pytest.mark.slow
def test_replicas_starting_together_on_an_empty_database_migrate_once(store_url):
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_open, args=(store_url, out)) for _ in range(3)]
    for p in procs:
        p.start()
    assert [out.get(timeout=120) for _ in procs] == ["ok"] * 3
    for p in procs:
        p.join(30)
    with Store(store_url).engine.connect() as conn:
        assert current_version(conn) == "0002"
