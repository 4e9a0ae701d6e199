"""`python -m bench.hot_account --old TREE`: one fully limited account at 8 threads, two code trees.

The figure of issue #12's "Contention stays cheap": the engine on one account that sets every
counted limit, against the bound, in one run. Each repetition runs three cells back to back in a
rotating order, each in a fresh process on an emptied project: the bound, the engine of `TREE`
(say an export of `main`: `git archive main | tar -x -C TREE`) and the engine of this checkout.
Besides intents/s and the ratio to the bound, each cell reports what does not depend on the
machine's load: commits, reads (`batch_get_documents`) and failed commits (lost races) per intent
placed.

Run it inside the emulators: `python -m devtools.emulators -- python -m bench.hot_account --old
TREE`. A cell runs as `python -m bench.hot_account --cell VARIANT` with the tree as its working
directory (this file is copied into TREE's `bench/` for that), so each tree's code is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
PROJECT = "demo-bench-hot"


class _StoreCalls:
    """Commits (and how many of them raised) and reads the client sent."""

    def __init__(self, db: Any) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        api = db._firestore_api  # the GAPIC client every adapter's call goes through
        for name in ("commit", "batch_get_documents", "begin_transaction"):
            setattr(api, name, self._counted(name, getattr(api, name)))

    def _counted(self, name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.counts[name] += 1
                if name == "batch_get_documents" and _reads_a_reservation(kwargs):
                    self.counts["reservation_reads"] += 1
            try:
                return original(*args, **kwargs)
            except Exception:
                with self._lock:
                    self.counts[f"{name}_failed"] += 1
                raise

        return call


def _reads_a_reservation(kwargs: dict[str, Any]) -> bool:
    """Whether a `batch_get_documents` call reads a reservation (the acquire's read, not the
    invocation's opening read, nor a kill switch read again once older than its bound)."""
    request: Any = kwargs.get("request")
    documents = request.get("documents", []) if isinstance(request, dict) else request.documents
    return any("/execution_reservations/" in path for path in documents)


def run_cell(variant: str, threads: int, accounts: int, duration: float) -> dict[str, Any]:
    """One cell in this process, on the code of the working directory."""
    from bench.common import client, production_logging, reset, run_threads
    from bench.workload import BoundOperation, engine_operation, engine_service, placed, seed

    production_logging()
    db = client(PROJECT)
    reset(PROJECT)
    seed(db, accounts=accounts, budget=False, limits=variant != "bound")
    check: Callable[[Any], str | None]
    if variant == "bound":
        op: Callable[[int, int], Any] = BoundOperation(db, "r")
        warm: Callable[[int, int], Any] = BoundOperation(db, "w")
        check = lambda _: None  # noqa: E731
    else:
        service = engine_service(db, PROJECT)
        op = engine_operation(service, "r", accounts)
        warm = engine_operation(service, "w", accounts)
        check = placed
    run_threads(warm, threads=threads, duration=0.3, check=check)
    calls = _StoreCalls(db)
    result = run_threads(op, threads=threads, duration=duration, check=check)
    per = max(result.ok, 1)
    return {
        "rate": result.rate,
        "ok": result.ok,
        "failures": dict(result.failures),
        "commits": calls.counts["commit"] / per,
        "failed_commits": calls.counts["commit_failed"] / per,
        "reads": calls.counts["batch_get_documents"] / per,
        "acquire_reads": calls.counts["reservation_reads"] / per,
        "client_ms": result.cpu_ms_per_op()[0],
    }


def _cell_in(tree: Path, variant: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "bench.hot_account",
        "--cell",
        variant,
        "--threads",
        str(args.threads),
        "--accounts",
        str(args.accounts),
        "--duration",
        str(args.duration),
    ]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def drive(args: argparse.Namespace) -> None:
    """Every repetition of the three cells, in rotating order; then the medians."""
    old, new = Path(args.old).resolve(), Path(args.new).resolve()
    for tree in {old, new} - {ROOT}:
        shutil.copy(HERE, tree / "bench" / HERE.name)
    cells = [("bound", ROOT, "bound"), ("old", old, "engine_limits"), ("new", new, "engine_limits")]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in cells}
    for repetition in range(args.repetitions):
        shift = repetition % len(cells)
        for name, tree, variant in cells[shift:] + cells[:shift]:
            result = _cell_in(tree, variant, args)
            runs[name].append(result)
            print(f"r{repetition} {name:<5} {json.dumps(result)}", flush=True)
    bound = [run["rate"] for run in runs["bound"]]
    print(f"\nthreads={args.threads} accounts={args.accounts} duration={args.duration}s")
    print(
        "cell   per_s  ratio  ratio_by_rep        commits  failed  reads  acq_reads  "
        "client_ms  failures"
    )
    for name, _, _ in cells:
        rates = [run["rate"] for run in runs[name]]
        by_rep = [rate / b for rate, b in zip(rates, bound, strict=True)]
        failures: Counter[str] = Counter()
        for run in runs[name]:
            failures.update(run["failures"])

        def med(key: str, mine: list[dict[str, Any]] = runs[name]) -> float:
            return float(statistics.median(run[key] for run in mine))

        print(
            f"{name:<5} {statistics.median(rates):6.1f}  "
            f"{statistics.median(rates) / statistics.median(bound):5.2f}  "
            f"{' '.join(f'{r:.2f}' for r in by_rep):<18}  {med('commits'):7.2f}  "
            f"{med('failed_commits'):6.2f}  {med('reads'):5.2f}  {med('acquire_reads'):9.2f}  "
            f"{med('client_ms'):9.2f}  "
            f"{dict(failures) or '-'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", help="the tree to compare with (an export of main)")
    parser.add_argument("--new", default=str(ROOT), help="the tree measured as new (this one)")
    parser.add_argument("--cell", help="run one cell here: bound | engine_limits")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--accounts", type=int, default=1)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--repetitions", type=int, default=3)
    args = parser.parse_args()
    if args.cell:
        print(json.dumps(run_cell(args.cell, args.threads, args.accounts, args.duration)))
    else:
        drive(args)


if __name__ == "__main__":
    main()
