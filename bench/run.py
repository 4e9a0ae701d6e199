"""`python -m bench.run`: every figure of docs/BENCHMARKS.md, measured in one run.

Runs inside `firebase emulators:exec` (`make bench`), which exports FIRESTORE_EMULATOR_HOST. Each
measurement uses its own `demo-bench-*` project, so nothing collides with other data in the
emulator. Progress lines go to stdout; the report and the plot are written at the end.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    coldstart,
    concurrency,
    cost,
    latency,
    machine,
    report,
    stages,
    sweep,
    throughput,
)
from bench.common import emulator_host, production_logging, progress, run_threads
from bench.workload import BoundOperation, engine_operation, engine_service, placed, seed

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter runs, noisier figures")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where to write")
    args = parser.parse_args(argv)
    emulator_host()
    production_logging()

    config: dict[str, Any] = {
        "threads": [1, 8, 32],
        "accounts": [1, 20, 200],
        "duration": 1.0 if args.quick else 2.0,
        "repetitions": 1 if args.quick else 3,
        "latency_intents": 100 if args.quick else 300,
        "sweep_documents": 10_000,
        "coldstart_runs": 3 if args.quick else 5,
        "concurrency_repetitions": 2 if args.quick else 5,
        "cost_deliveries": 20 if args.quick else 50,
    }
    started = time.monotonic()
    results: dict[str, Any] = {
        "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "config": config,
        "machine": machine.describe(),
        "load_before": machine.load_average(),
    }
    progress(f"machine: {results['machine']['cpus']} CPUs, load {results['load_before']}")

    _warm_up("demo-bench-warmup")

    cells = throughput.measure(
        "demo-bench-throughput",
        threads=config["threads"],
        accounts=config["accounts"],
        duration=config["duration"],
        repetitions=config["repetitions"],
    )
    results["throughput"] = [cell.as_dict() for cell in cells]

    results["profile"] = {
        "engine": stages.measure("demo-bench-profile", intents=200).as_dict(),
        "engine_budget": stages.measure("demo-bench-profile", intents=200, budget=True).as_dict(),
        "bound_rpcs": stages.bound_rpcs("demo-bench-profile"),
    }

    results["concurrency"] = [
        cell.as_dict()
        for cell in concurrency.measure(
            "demo-bench-concurrency",
            duration=config["duration"],
            repetitions=config["concurrency_repetitions"],
        )
    ]
    results["cost"] = [
        outcome.as_dict()
        for outcome in cost.measure("demo-bench-cost", deliveries=config["cost_deliveries"])
    ]

    progress(f"latency: {config['latency_intents']} intents through each engine")
    results["latency"] = latency.measure(
        "demo-bench-latency", intents=config["latency_intents"]
    ).as_dict()

    progress(f"sweeper: writing {config['sweep_documents']} expired reservations")
    results["sweeper"] = sweep.measure(
        "demo-bench-sweeper", documents=config["sweep_documents"]
    ).as_dict()

    progress(f"cold start: {config['coldstart_runs']} fresh processes per side")
    results["coldstart"] = coldstart.measure(
        "demo-bench-coldstart", runs=config["coldstart_runs"]
    ).as_dict()

    results["load_after"] = machine.load_average()
    results["duration_s"] = round(time.monotonic() - started, 1)
    report.write(results, args.docs)
    head = report.headline(results)
    progress(
        f"done in {results['duration_s'] / 60:.1f} min: engine/bound ratio at "
        f"{report.HEADLINE_THREADS} threads {head['ratio']:.2f} (target ≥ {report.RATIO_TARGET}), "
        f"import ratio {head['import_ratio']:.2f} (target ≤ {report.IMPORT_TARGET}); wrote "
        f"{args.docs / 'BENCHMARKS.md'} and {args.docs / 'bench.png'}"
    )
    return 0


def _warm_up(project: str) -> None:
    """A few seconds of both workloads first: the emulator's JIT makes early runs slower."""
    progress("warm-up: 4 s of engine and bound load (discarded)")
    from bench.common import client, reset

    reset(project)
    db = client(project)
    seed(db, accounts=20, budget=False)
    service = engine_service(db, project)
    run_threads(engine_operation(service, "warm", 20), threads=8, duration=2.0, check=placed)
    run_threads(BoundOperation(db, "warm"), threads=8, duration=2.0, check=lambda _: None)
    db.close()
    reset(project)


if __name__ == "__main__":
    raise SystemExit(main())
