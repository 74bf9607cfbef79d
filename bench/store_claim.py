"""The store's job claim on SQLite and PostgreSQL: latency of one claim, and claims per second by several processes.

    python bench/store_claim.py --postgres postgresql://user@127.0.0.1:5432/db [--jobs 2000] [--projects 20]
    python bench/store_claim.py                       # SQLite only

Fills a fresh database with `--jobs` queued jobs spread over `--projects` projects (plus as many
finished ones, so the fairness query has history to read), then: the median and 95th percentile of
one claim_next (fair order, per-project limit) by a single process, and the wall time for 4 processes
to claim the next `--jobs // 2` jobs concurrently (each job exactly once, checked). The PostgreSQL
database given is emptied first (its tables are dropped). Prints one line per backend.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

from lmtune.serve.jobs import claim_next
from lmtune.serve.store import Store, new_id, now

PROCESSES = 4


def fill(store: Store, jobs: int, projects: int) -> None:
    """`jobs` finished and `jobs` queued jobs, round-robin over the projects, in one transaction."""
    with store.tx() as db:
        for i in range(2 * jobs):
            status = "succeeded" if i < jobs else "queued"
            db.execute("INSERT INTO jobs (id, project, model, training_file, status, created_at, started_at, "
                       "hyperparameters, method, seed) VALUES (?, ?, 'tiny-llama', 'file-x', ?, ?, ?, '{}', '{}', 0)",
                       (new_id("ftjob"), f"p{i % projects}", status, now(), now() - i if i < jobs else None))


def _claimer(url: str, worker: int, count: int, out: multiprocessing.Queue) -> None:
    store = Store(url)
    out.put([claim_next(store, worker, max_per_project=10**6)["id"] for _ in range(count)])


def measure(url: str, jobs: int, projects: int) -> str:
    """One backend's line of figures."""
    store = Store(url)
    fill(store, jobs, projects)
    single = []
    for _ in range(min(200, jobs // 2)):
        t0 = time.perf_counter()
        claim_next(store, 0, "bench", max_per_project=10**6)
        single.append((time.perf_counter() - t0) * 1000)
    remaining = store.one("SELECT COUNT(*) AS n FROM jobs WHERE status='queued'")["n"]
    each = remaining // PROCESSES
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(url, w, each, out)) for w in range(PROCESSES)]
    for p in procs:
        p.start()
    t0 = time.perf_counter()
    claimed = [job for _ in procs for job in out.get(timeout=600)]
    wall = time.perf_counter() - t0  # from the first result wait: process start-up (imports) overlaps it
    for p in procs:
        p.join()
    assert len(set(claimed)) == len(claimed) == each * PROCESSES, "a job was claimed twice"
    q = statistics.quantiles(single, n=20)
    return (f"{store.dialect}: one claim median {statistics.median(single):.2f} ms, p95 {q[18]:.2f} ms "
            f"({jobs} queued, {jobs} finished, {projects} projects); {PROCESSES} processes claimed "
            f"{len(claimed)} jobs in {wall:.2f} s ({len(claimed) / wall:.0f} claims/s), none twice")


def main() -> None:
    """Run the measurement on SQLite (and PostgreSQL when given) and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=None, help="a postgresql:// URL of a database that may be emptied")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--projects", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print(measure(str(Path(tmp) / "lmtune.db"), args.jobs, args.projects))
    if args.postgres:
        import sqlalchemy as sa

        store = Store(args.postgres)
        with store.engine.begin() as conn:  # a clean slate: the schema is re-created by the next Store
            conn.execute(sa.text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        store.close()
        print(measure(args.postgres, args.jobs, args.projects))


if __name__ == "__main__":
    main()
