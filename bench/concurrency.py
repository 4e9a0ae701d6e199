"""Concurrent requests per instance: intents/s and client CPU per intent, one client or a pool.

Cloud Run functions may hand one instance several requests at once (`--concurrency`); functions-
framework serves them on gunicorn threads of one process. Each cell runs the default wiring on
`concurrency` threads of this process for a few seconds, with `pool` gRPC channels: 1 is the
one client `bootstrap` builds, more is `bench.client_pool` (each call goes through the next
channel in turn). The variants of a cell run back to back in a rotating order, each on an
emptied, freshly seeded project, so noise from the machine falls on both alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.client_pool import pooled_client
from bench.common import RunResult, median, progress, reset, run_threads
from bench.workload import engine_operation, engine_service, placed, seed

CONCURRENCY = (1, 4, 8, 16)
POOL_SIZES = (1, 4)
DEPLOYED_CONCURRENCY = 8
"""cloudbuild.yaml's `_CONCURRENCY` for execute-intent, chosen from this table (docs/DEPLOY.md)."""
ACCOUNTS = 20
WARMUP_SECONDS = 0.3


@dataclass
class ConcurrencyCell:
    """One (concurrency, pool size) cell: every repetition's run."""

    concurrency: int
    pool: int
    runs: list[RunResult] = field(default_factory=list)

    @property
    def rate(self) -> float:
        """Median intents placed per second."""
        return median([run.rate for run in self.runs])

    @property
    def client_cpu_ms(self) -> float:
        """Median CPU milliseconds of this process per intent placed (all threads)."""
        return median([run.cpu_ms_per_op()[0] for run in self.runs])

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        failures: dict[str, int] = {}
        for run in self.runs:
            for reason, count in run.failures.items():
                failures[reason] = failures.get(reason, 0) + count
        return {
            "concurrency": self.concurrency,
            "pool": self.pool,
            "intents_per_s": round(self.rate, 1),
            "intents_per_s_runs": [round(run.rate, 1) for run in self.runs],
            "client_cpu_ms_per_intent": round(self.client_cpu_ms, 2),
            "failures": failures,
        }


def measure(
    project: str,
    *,
    concurrency: tuple[int, ...] = CONCURRENCY,
    pools: tuple[int, ...] = POOL_SIZES,
    duration: float,
    repetitions: int,
) -> list[ConcurrencyCell]:
    """Every (concurrency, pool) cell, `repetitions` times, pool sizes in rotating order."""
    cells = {(c, p): ConcurrencyCell(c, p) for c in concurrency for p in pools}
    for repetition in range(repetitions):
        for index, threads in enumerate(concurrency):
            shift = (repetition + index) % len(pools)
            for pool in pools[shift:] + pools[:shift]:
                run = _one_run(project, threads, pool, duration, f"c{repetition}")
                cells[(threads, pool)].runs.append(run)
                failed = f", {run.failed} failed" if run.failed else ""
                progress(
                    f"concurrency {threads:>2}, pool {pool}: {run.rate:7.1f} intents/s, "
                    f"{run.cpu_ms_per_op()[0]:.2f} client CPU ms/intent{failed}"
                )
    return list(cells.values())


def _one_run(project: str, threads: int, pool: int, duration: float, tag: str) -> RunResult:
    reset(project)
    db = pooled_client(project, pool)
    seed(db, accounts=ACCOUNTS, budget=False)
    service = engine_service(db, project)
    op = engine_operation(service, f"{tag}-p{pool}", ACCOUNTS)
    warm = engine_operation(service, f"{tag}-p{pool}w", ACCOUNTS)
    run_threads(warm, threads=threads, duration=WARMUP_SECONDS, check=placed)
    result = run_threads(op, threads=threads, duration=duration, check=placed)
    db.close()
    return result


def markdown(results: dict[str, Any]) -> list[str]:
    """The report's section: intents/s and client CPU by concurrency, one client or a pool."""
    cells = results["concurrency"]
    by_key = {(c["concurrency"], c["pool"]): c for c in cells}
    config = results["config"]
    pools = sorted({c["pool"] for c in cells})
    one, pooled = pools[0], pools[-1]
    lines = [
        "## Concurrent requests per instance",
        "",
        "One process, the default wiring on N threads (gunicorn's threads in an instance serving "
        "N requests at once), fresh limit buys over 20 accounts without limits; each cell "
        f"{config['concurrency_repetitions']} runs of {config['duration']:g} s, the "
        "pool sizes in rotating order, each on an emptied project (`bench/concurrency.py`). "
        f"*{pooled} channels*: `bench/client_pool.py`, one Firestore client whose calls go "
        f"round-robin over {pooled} gRPC channels. *pool ÷ one, by run*: the two runs of one "
        "repetition ran back to back, so their ratio cancels most of the machine's drift. "
        "Client CPU is this process's, all threads, per intent placed.",
        "",
        f"| concurrent requests | intents/s, one client | intents/s, {pooled} channels | pool ÷ "
        "one, by run | client CPU ms/intent, one | client CPU ms/intent, pool |",
        "|---|---|---|---|---|---|",
    ]
    for concurrency in sorted({c["concurrency"] for c in cells}):
        single, pool = by_key[(concurrency, one)], by_key[(concurrency, pooled)]
        ratios = [
            f"{p / s:.2f}" if s else "-"
            for s, p in zip(single["intents_per_s_runs"], pool["intents_per_s_runs"], strict=False)
        ]
        lines.append(
            f"| {concurrency} | {single['intents_per_s']:.0f} | {pool['intents_per_s']:.0f} | "
            f"{' '.join(ratios)} | {single['client_cpu_ms_per_intent']:.2f} | "
            f"{pool['client_cpu_ms_per_intent']:.2f} |"
        )
    failures = {f"{c['concurrency']}/{c['pool']}": c["failures"] for c in cells if c["failures"]}
    lines += [
        "",
        f"Intents not placed: {failures or 'none'}. The deployed concurrency is "
        f"{DEPLOYED_CONCURRENCY} with one client (docs/DEPLOY.md says why).",
        "",
    ]
    return lines
