"""Intents/s through `execute_intent` against the least store work per intent, same run.

For every (threads, accounts) cell three variants run back to back, in a rotating order, each on
an emptied and freshly seeded emulator project: the bound (`BoundOperation`), the engine with
accounts that set no in-flight budget (the default, common path), and the engine with accounts
that set `max_inflight_usd` (so each acquire also rewrites the account's in-flight document).
Where a cell has at most `LIMITS_MAX_ACCOUNTS` accounts two more run: the engine on accounts that
set every counted limit (budget, orders per day, position), and the same engine whose acquire is
the transactional peer (`bench.transactional_peer`), so the two designs meet on equal terms.
The ratio of each cell is engine intents/s over bound operations/s, medians over repetitions.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from bench.common import RunResult, client, median, progress, reset, run_threads
from bench.workload import BoundOperation, engine_operation, engine_service, placed, seed

VARIANTS = ("bound", "engine", "engine_budget", "engine_limits", "txn_limits")
LIMITED_VARIANTS = ("engine_limits", "txn_limits")
LIMITS_MAX_ACCOUNTS = 20
WARMUP_SECONDS = 0.3


@dataclass
class Cell:
    """One (threads, accounts) cell: every run of every variant."""

    threads: int
    accounts: int
    runs: dict[str, list[RunResult]] = field(default_factory=dict)

    def rate(self, variant: str) -> float:
        """Median successful operations/s of `variant`."""
        return median([run.rate for run in self.runs.get(variant, [])])

    def ratio(self, variant: str = "engine") -> float:
        """`variant`'s intents/s over the bound's operations/s."""
        bound = self.rate("bound")
        return self.rate(variant) / bound if bound else float("nan")

    def ratios_by_repetition(self, variant: str = "engine") -> list[float]:
        """`variant`'s rate over the bound's, repetition by repetition (the runs were adjacent)."""
        pairs = zip(self.runs.get("bound", []), self.runs.get(variant, []), strict=False)
        return [run.rate / bound.rate if bound.rate else float("nan") for bound, run in pairs]

    def failures(self, variant: str) -> dict[str, int]:
        """Failed operations of `variant`, summed over its runs, by reason."""
        total: dict[str, int] = {}
        for run in self.runs.get(variant, []):
            for reason, count in run.failures.items():
                total[reason] = total.get(reason, 0) + count
        return total

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures."""
        return {
            "threads": self.threads,
            "accounts": self.accounts,
            **{f"{v}_per_s": round(self.rate(v), 1) for v in self.runs},
            **{f"{v}_ratio": round(self.ratio(v), 3) for v in self.runs if v != "bound"},
            **{
                f"{v}_ratio_runs": [round(r, 3) for r in self.ratios_by_repetition(v)]
                for v in self.runs
                if v != "bound"
            },
            "cpu_ms_per_op": {v: self.cpu_ms(v) for v in self.runs},
            "failures": {v: self.failures(v) for v in self.runs if self.failures(v)},
        }

    def cpu_ms(self, variant: str) -> dict[str, float]:
        """Median CPU milliseconds per successful operation: this process, and the emulator."""
        runs = self.runs.get(variant, [])
        return {
            "client": round(median([run.cpu_ms_per_op()[0] for run in runs]), 2),
            "emulator": round(median([run.cpu_ms_per_op()[1] for run in runs]), 2),
        }


def measure(
    project: str,
    *,
    threads: list[int],
    accounts: list[int],
    duration: float,
    repetitions: int,
    variants: tuple[str, ...] = VARIANTS,
) -> list[Cell]:
    """Every cell of threads x accounts, every variant, `repetitions` times each."""
    db = client(project)
    cells = [Cell(t, a) for t, a in itertools.product(threads, accounts)]
    done = 0
    total = sum(len(_variants_of(cell, variants)) for cell in cells) * repetitions
    for repetition in range(repetitions):
        for index, cell in enumerate(cells):
            # Rotate the order so that no variant always runs first (or after the same one).
            mine = _variants_of(cell, variants)
            shift = (repetition + index) % len(mine)
            for variant in mine[shift:] + mine[:shift]:
                result = _one_run(db, project, cell, variant, duration, f"r{repetition}")
                cell.runs.setdefault(variant, []).append(result)
                done += 1
                failed = f", {result.failed} failed" if result.failed else ""
                progress(
                    f"throughput {done}/{total}: {variant:<13} threads={cell.threads:<2} "
                    f"accounts={cell.accounts:<3} {result.rate:7.1f}/s "
                    f"({result.ok} in {result.elapsed:.2f}s{failed})"
                )
    db.close()
    return cells


def _variants_of(cell: Cell, variants: tuple[str, ...]) -> tuple[str, ...]:
    if cell.accounts <= LIMITS_MAX_ACCOUNTS:
        return variants
    return tuple(v for v in variants if v not in LIMITED_VARIANTS)


def _one_run(
    db: Any, project: str, cell: Cell, variant: str, duration: float, tag: str
) -> RunResult:
    reset(project)
    seed(
        db,
        accounts=cell.accounts,
        budget=variant == "engine_budget",
        limits=variant in LIMITED_VARIANTS,
    )
    if variant == "bound":
        op = BoundOperation(db, tag)
        warm = BoundOperation(db, tag + "w")

        def check(_: object) -> str | None:
            return None
    else:
        service = engine_service(db, project, transactional=variant == "txn_limits")
        op = engine_operation(service, tag, cell.accounts)  # type: ignore[assignment]
        warm = engine_operation(service, tag + "w", cell.accounts)  # type: ignore[assignment]
        check = placed  # type: ignore[assignment]
    run_threads(warm, threads=cell.threads, duration=WARMUP_SECONDS, check=check)
    return run_threads(op, threads=cell.threads, duration=duration, check=check)
