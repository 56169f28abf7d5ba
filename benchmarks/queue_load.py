"""Queue load benchmark: claim + release against a running NextCase server on PostgreSQL.

Seeds a throw-away database with CASES cases, starts ``nextcase serve`` on it (the API process, without the
embedded worker) and the minimal reference claim (benchmarks/reference_claim.py: one UPDATE … SKIP LOCKED
statement, no authentication, ranking or audit) on the same database; the reference also claims with gap-free
claim numbers (``/claim/{project}/numbered``), the one part of NextCase's claim that makes a project's claims take
turns. For each client count N, N concurrent annotators claim the next case and release it for a fixed time
against each system in turn; ROUNDS such rounds. Prints claim latency (p50 / p99), release latency and claims per
second over all rounds, and NextCase's claim median as a ratio to each reference's: pooled over all rounds, and
round by round (paired) with a 95 % interval. Each system's run starts on a freshly vacuumed and analyzed database
(``vacuum`` says why; ``--no-vacuum`` keeps the statistics and dead rows earlier runs left).

    .venv/bin/python -m benchmarks.queue_load --clients 1,8,32,64 --seconds 15

Not a test: it measures and prints. Client threads share the machine with the servers."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.auth import service as auth
from app.campaign.stats import mean_ci
from app.core import db, migrate
from app.core.config import get_settings
from app.projects.service import create_project
from tests.factories import bulk_cases


def fresh_database(server_url: str, name: str) -> str:
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    url = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)
    return url


def seed(n_cases: int, n_users: int, blob_dir: Path) -> tuple[int, list[str]]:
    with db.session_scope() as session:
        project_id = create_project(session, "bench", "CT", ["background", "organ"]).id
        tokens = [auth.issue_token(session, auth.create_user(session, f"bench{i:03d}", "annotator")).token
                  for i in range(n_users)]
    bulk_cases(project_id, n_cases, blob_dir)
    with db.get_engine().connect() as conn:
        # What autovacuum would do after a bulk import; without statistics the planner sorts every case.
        conn.execute(text("ANALYZE"))
        conn.commit()
    return project_id, tokens


def start(args: list[str], env: dict[str, str], ready_url: str) -> subprocess.Popen[bytes]:
    """Start a server process and wait until ``ready_url`` answers 200."""
    proc = subprocess.Popen([sys.executable, "-m", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"{' '.join(args)} did not become ready")


def start_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    # The API process alone, as deployed with PostgreSQL (the worker runs elsewhere): the embedded worker would poll
    # its broker and load its libraries on the same two cores during NextCase's rows only.
    return start(["app.cli", "serve", "--port", str(port), "--no-worker", "--no-demo"], env,
                 f"http://127.0.0.1:{port}/readyz")


def start_reference(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return start(["uvicorn", "benchmarks.reference_claim:app", "--port", str(port), "--log-level", "warning"], env,
                 f"http://127.0.0.1:{port}/docs")


def drive(base: str, clients: list[dict[str, str]], claim: Callable[[httpx.Client], str],
          release: Callable[[httpx.Client, str], None], seconds: float) -> tuple[list[float], list[float]]:
    """Each client (its request headers) claims and releases in a loop for ``seconds``; claim and release times."""
    claims: list[float] = []
    releases: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client(headers: dict[str, str]) -> None:
        mine_c, mine_r = [], []
        with httpx.Client(base_url=base, headers=headers, timeout=60) as http:
            while time.monotonic() < stop_at:
                t0 = time.perf_counter()
                held = claim(http)
                t1 = time.perf_counter()
                release(http, held)
                mine_c.append(t1 - t0)
                mine_r.append(time.perf_counter() - t1)
        with lock:
            claims.extend(mine_c)
            releases.extend(mine_r)

    with ThreadPoolExecutor(len(clients)) as pool:
        list(pool.map(client, clients))
    return claims, releases


def run_clients(base: str, project_id: int, tokens: list[str], seconds: float) -> tuple[list[float], list[float]]:
    def claim(http: httpx.Client) -> str:
        r = http.post(f"/api/v1/projects/{project_id}/queue/next")
        if r.status_code != 200:
            raise RuntimeError(f"claim answered {r.status_code}: {r.text}")
        return str(r.json()["lease"]["token"])

    def release(http: httpx.Client, token: str) -> None:
        http.delete(f"/api/v1/leases/{token}").raise_for_status()

    return drive(base, [{"Authorization": f"Bearer {t}"} for t in tokens], claim, release, seconds)


def run_reference(base: str, project_id: int, clients: int, seconds: float, *,
                  numbered: bool = False) -> tuple[list[float], list[float]]:
    path = f"/claim/{project_id}/numbered" if numbered else f"/claim/{project_id}"

    def claim(http: httpx.Client) -> str:
        r = http.post(path)
        r.raise_for_status()
        return str(r.json()["case"])

    def release(http: httpx.Client, case: str) -> None:
        http.delete(f"/claim/{case}").raise_for_status()

    return drive(base, [{} for _ in range(clients)], claim, release, seconds)


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000 if len(values) > 1 else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                        help="PostgreSQL server URL (a database 'nextcase_bench' is recreated on it)")
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--clients", default="1,8,32,64")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds in which NextCase and the reference take turns (the load of a shared machine "
                             "drifts: taking turns exposes both to it alike)")
    parser.add_argument("--no-vacuum", action="store_true",
                        help="do not VACUUM (ANALYZE) the database before each system's run")
    args = parser.parse_args()
    counts = [int(n) for n in args.clients.split(",")]

    url = fresh_database(args.server, "nextcase_bench")
    blob_dir = Path(tempfile.mkdtemp(prefix="nextcase-bench-"))
    # Its own data folder (key file, embedded broker) beside the blobs: not the user's.
    env = {**os.environ, "NEXTCASE_DATABASE_URL": url, "NEXTCASE_BLOB_DIR": str(blob_dir),
           "NEXTCASE_DATA_DIR": str(blob_dir / "data"), "NEXTCASE_SECRET_KEY": "queue-load-benchmark-key",
           "NEXTCASE_LOG_LEVEL": "WARNING"}
    os.environ.update(env)
    get_settings.cache_clear()
    db.configure()
    project_id, tokens = seed(args.cases, max(counts), blob_dir)
    ours, theirs = f"http://127.0.0.1:{args.port}", f"http://127.0.0.1:{args.port + 1}"
    server, reference = start_server(env, args.port), start_reference(env, args.port + 1)
    systems: dict[str, Runner] = {
        "NextCase": lambda n, s: run_clients(ours, project_id, tokens[:n], s),
        "reference": lambda n, s: run_reference(theirs, project_id, n, s),
        "numbered reference": lambda n, s: run_reference(theirs, project_id, n, s, numbered=True),
    }
    try:
        print(f"{args.cases} cases, PostgreSQL, claim + release per iteration; {args.rounds} round(s) of "
              f"{args.seconds:g} s per system and client count, the systems taking turns; server autovacuum "
              f"{setting(url, 'autovacuum')}; "
              + ("no VACUUM between runs" if args.no_vacuum else "VACUUM (ANALYZE) before each system's run"))
        rows, paired = measure(systems, counts, args.rounds, args.seconds,
                               (lambda: None) if args.no_vacuum else (lambda: vacuum(url)))
    finally:
        for proc in (server, reference):
            proc.terminate()
            proc.wait(timeout=30)
        db.dispose()
    report(rows, paired, counts, args.rounds, args.seconds)


def vacuum(url: str) -> None:
    """What autovacuum does, at once: each run starts on fresh planner statistics, without the previous runs' dead rows.

    Where autovacuum is off (as on some development servers), nothing analyzes ``leases`` again after the seed,
    which analyzed it empty: PostgreSQL then ends a claimed case's expired lease by a sequential scan of a table it
    believes to hold one row, and NextCase's claim slowed by half over 4,000 claims (1.19 -> 1.74 ms for the
    statement alone; ``ANALYZE leases`` alone brought it back to 1.04 ms). The reference keeps no history."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("VACUUM (ANALYZE)"))
    engine.dispose()


def setting(url: str, name: str) -> str:
    engine = create_engine(url)
    with engine.connect() as conn:
        value = str(conn.execute(text(f"SHOW {name}")).scalar())
    engine.dispose()
    return value


Runner = Callable[[int, float], tuple[list[float], list[float]]]
TITLES = {"NextCase": "NextCase (POST /api/v1/projects/{id}/queue/next, DELETE /api/v1/leases/{token})",
          "reference": "Reference claim (benchmarks/reference_claim.py, POST /claim/{project})",
          "numbered reference": "Reference claim with gap-free claim numbers (POST /claim/{project}/numbered)"}


def measure(systems: dict[str, Runner], counts: list[int], rounds: int, seconds: float,
            before_run: Callable[[], None]) -> tuple[
        dict[tuple[str, int], tuple[list[float], list[float]]], dict[tuple[str, int], list[float]]]:
    """Claim and release times of each system and client count, over all rounds; and per round, NextCase's claim
    p50 over each reference's (the systems run back to back within a round: a paired comparison). ``before_run``
    runs before every system's run."""
    rows: dict[tuple[str, int], tuple[list[float], list[float]]] = {}
    paired: dict[tuple[str, int], list[float]] = {}
    for run in systems.values():
        # Warm with the most clients: each pooled connection opens, prepares the statement and settles on its
        # generic plan once (the claim statement takes 2 ms to plan), not inside the first round that needs it.
        run(max(counts), 2)
    for _ in range(rounds):
        for n in counts:
            medians = {}
            for name, run in systems.items():
                before_run()
                claims, releases = run(n, seconds)
                pooled = rows.setdefault((name, n), ([], []))
                pooled[0].extend(claims)
                pooled[1].extend(releases)
                medians[name] = statistics.median(claims)
            for name in systems:
                if name != "NextCase":
                    paired.setdefault((name, n), []).append(medians["NextCase"] / medians[name])
    return rows, paired


def report(rows: dict[tuple[str, int], tuple[list[float], list[float]]], paired: dict[tuple[str, int], list[float]],
           counts: list[int], rounds: int, seconds: float) -> None:
    total = seconds * rounds
    header = f"{'clients':>7} {'claims':>7} {'claims/s':>9} {'claim p50':>10} {'claim p99':>10} {'release p50':>12}"
    for name in dict.fromkeys(name for name, _ in rows):
        extra = f" {'NextCase p50 / this':>20} {'claims/s: this / NextCase':>26}" if name != "NextCase" else ""
        print(f"\n{TITLES[name]}\n{header}{extra}")
        for n in counts:
            claims, releases = rows[(name, n)]
            line = (f"{n:>7} {len(claims):>7} {len(claims) / total:>9.1f} {pct(claims, 50):>8.1f}ms "
                    f"{pct(claims, 99):>8.1f}ms {pct(releases, 50):>10.1f}ms")
            if name != "NextCase":
                mine = rows[("NextCase", n)][0]
                line += f" {pct(mine, 50) / pct(claims, 50):>20.2f} {len(claims) / len(mine):>26.2f}"
            print(line, flush=True)
    print(f"\nNextCase claim p50 / the reference's, round by round: mean and 95 % Student-t interval over {rounds} "
          "rounds")
    for (name, n), ratios in paired.items():
        ratio = mean_ci(ratios)
        interval = f" [{ratio.low:.2f}, {ratio.high:.2f}]" if ratio.low is not None else ""
        print(f"  {name:<19} {n:>3} clients: {ratio.mean:.2f}{interval}   rounds: "
              + " ".join(f"{r:.2f}" for r in ratios))

if __name__ == "__main__":
    main()
