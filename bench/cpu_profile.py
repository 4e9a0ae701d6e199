"""Client CPU per intent, by tree, measured so that the machine's load does not distort it.

`python -m bench.cpu_profile old=/path/to/old/tree new=.` (FIRESTORE_EMULATOR_HOST set) runs
the engine's common path (`bench.workload`: fresh limit buys over 20 accounts, the paper broker)
in each tree, in a child process whose imports come from that tree, against one emulator:

- CPU seconds per intent: `time.process_time()` (this process, every thread: our code, the client
  library, gRPC) over N intents, with 1 thread and with 8. Throughput on these machines is bound
  by the client's CPU under the GIL, and CPU time moves far less than wall time with the load
  other processes put on the machine (a heavy load still inflates it: compare trees measured in
  one run, which this tool alternates).
- cProfile over N intents on 1 thread: Python calls per intent, and the functions that cost most
  (own time) and are called most, per intent.

Each variant (`engine`: accounts without limits; `engine_budget`: accounts with
`max_inflight_usd`) runs in every tree, the trees alternating, `--repetitions` times; the CPU
figure is the median. The output sets the trees side by side, then the functions whose calls per
intent differ most between the first tree and the last. The child mode (`--child`) uses only
what `bench.workload` and `bench.common` offered before issue #11, so an old tree can run it.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

VARIANTS = ("engine", "engine_budget")
ACCOUNTS = 20
WARMUP_INTENTS = 40
TOP = 15
QUOTE_REFRESH_SECONDS = 15.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="*", help="LABEL=PATH of each tree (default: this one)")
    parser.add_argument("--intents", type=int, default=300, help="intents per measurement")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--json", type=Path, help="also write every figure here")
    parser.add_argument(
        "--dump", type=Path, help="keep each tree's raw profile here (LABEL-VARIANT.pstats)"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--project", default="demo-cpu-profile", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args)))
        return 0
    trees = [_tree(spec) for spec in args.trees] or [("this", Path.cwd())]
    results = _measure_all(trees, args)
    _print_report(trees, results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def _tree(spec: str) -> tuple[str, Path]:
    label, _, path = spec.partition("=")
    if not path:
        raise SystemExit(f"tree {spec!r}: write LABEL=PATH")
    return label, Path(path).resolve()


# -- the parent: one child per (tree, variant, threads, repetition), trees alternating ----------


def _measure_all(trees: list[tuple[str, Path]], args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {label: {} for label, _ in trees}
    for variant in args.variants:
        for repetition in range(args.repetitions):
            for threads in args.threads:
                for label, path in trees:
                    figures = _run_child(path, variant, threads, args.intents, profile=False)
                    key = f"{variant}/t{threads}"
                    results[label].setdefault(key, []).append(figures)
                    print(
                        f"[cpu_profile] {label:<6} {key:<18} rep {repetition}: "
                        f"{figures['cpu_ms_per_intent']:.2f} ms CPU/intent, "
                        f"{figures['intents_per_s']:.0f}/s",
                        file=sys.stderr,
                        flush=True,
                    )
        for label, path in trees:
            dump = args.dump.resolve() / f"{label}-{variant}.pstats" if args.dump else None
            results[label][f"{variant}/profile"] = _run_child(
                path, variant, 1, args.intents, profile=True, dump=dump
            )
    return results


def _run_child(
    tree: Path, variant: str, threads: int, intents: int, *, profile: bool, dump: Path | None = None
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        f"--variant={variant}",
        f"--threads={threads}",
        f"--intents={intents}",
        f"--project=demo-cpu-profile-{os.getpid()}",
    ]
    if profile:
        command.append("--profile")
    if dump is not None:
        command.append(f"--dump={dump}")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child in {tree} failed:\n{done.stderr[-3000:]}")
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


# -- the child: imports come from the tree it runs in ---------------------------------------------


def _child(args: argparse.Namespace) -> dict[str, Any]:
    from bench.common import client, production_logging, reset
    from bench.workload import engine_operation, engine_service, placed, seed

    production_logging()
    reset(args.project)
    db = client(args.project)
    seed(db, accounts=ACCOUNTS, budget=args.variant == "engine_budget")
    service = engine_service(db, args.project)
    warm = engine_operation(service, "warm", ACCOUNTS)
    for sequence in range(WARMUP_INTENTS):
        _checked(placed, warm(0, sequence))
    op = engine_operation(service, "run", ACCOUNTS)
    threads = args.threads[0]
    # The quote kept fresh: on a loaded machine a profiled run outlasts the router's bound (60 s).
    refresh = threading.Event()
    refresher = threading.Thread(
        target=_keep_fresh,
        args=(refresh, lambda: seed(db, accounts=ACCOUNTS, budget=args.variant == "engine_budget")),
        daemon=True,
    )
    refresher.start()
    try:
        return _measured(args, op, placed, threads)
    finally:
        refresh.set()


def _keep_fresh(done: threading.Event, reseed: Any) -> None:
    reseed()
    while not done.wait(QUOTE_REFRESH_SECONDS):
        reseed()


def _measured(args: argparse.Namespace, op: Any, placed: Any, threads: int) -> dict[str, Any]:
    """CPU per intent over `args.intents` intents, or (`--profile`) their profile."""
    if args.profile:
        # On this thread: cProfile sees only the thread that enabled it.
        profiler = cProfile.Profile(time.thread_time)
        profiler.enable()
        for sequence in range(args.intents):
            _checked(placed, op(0, sequence))
        profiler.disable()
        if args.dump:
            profiler.dump_stats(args.dump)
        return _profile_figures(profiler, args.intents)
    cpu, wall = time.process_time(), time.perf_counter()
    _run(op, placed, threads, args.intents)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "cpu_ms_per_intent": cpu / args.intents * 1000,
        "intents_per_s": args.intents / wall,
    }


def _checked(placed: Any, result: Any) -> None:
    failure = placed(result)
    if failure is not None:
        raise SystemExit(f"an intent was not placed: {failure}")


def _run(op: Any, placed: Any, threads: int, intents: int) -> None:
    """`intents` intents split over `threads` threads; every one must be placed."""
    share = [intents // threads + (1 if n < intents % threads else 0) for n in range(threads)]
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            for sequence in range(share[index]):
                _checked(placed, op(index, sequence))
        except BaseException as exc:  # reported by the parent thread
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    if errors:
        raise errors[0]


def _profile_figures(profiler: cProfile.Profile, intents: int) -> dict[str, Any]:
    stats = pstats.Stats(profiler)
    rows = []
    for (file, line, name), (primitive, total, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        rows.append(
            {
                "function": f"{_short(file)}:{name}",
                "line": line,
                "calls": total / intents,
                "primitive_calls": primitive / intents,
                "own_us": own / intents * 1e6,
                "cumulative_us": cumulative / intents * 1e6,
            }
        )
    return {
        "calls_per_intent": sum(row["calls"] for row in rows),
        "functions": rows,
    }


def _short(file: str) -> str:
    """A file name comparable across trees: from the tree's root, or from site-packages."""
    root = os.getcwd() + os.sep
    if file.startswith(root):
        return file[len(root) :]
    if "site-packages/" in file:
        return file.split("site-packages/", 1)[1]
    return re.sub(r".*/lib/python3\.\d+/", "", file)


# -- the report -----------------------------------------------------------------------------------


def _print_report(
    trees: list[tuple[str, Path]], results: dict[str, Any], args: argparse.Namespace
) -> None:
    labels = [label for label, _ in trees]
    print("CPU ms per intent (median over repetitions; runs in brackets), intents/s (median)")
    print(f"{'cell':<22}" + "".join(f"{label:>30}" for label in labels))
    for variant in args.variants:
        for threads in args.threads:
            key = f"{variant}/t{threads}"
            cells = []
            for label in labels:
                runs = results[label][key]
                cpu = [run["cpu_ms_per_intent"] for run in runs]
                rate = statistics.median(run["intents_per_s"] for run in runs)
                spread = "/".join(f"{value:.2f}" for value in cpu)
                cells.append(f"{statistics.median(cpu):6.2f} [{spread}] {rate:5.0f}/s")
            print(f"{key:<22}" + "".join(f"{cell:>30}" for cell in cells))
    for variant in args.variants:
        key = f"{variant}/profile"
        calls = [results[label][key]["calls_per_intent"] for label in labels]
        print(
            f"\nPython calls per intent, {variant}: "
            + ", ".join(f"{label} {count:.0f}" for label, count in zip(labels, calls, strict=True))
        )
        for label in labels:
            _print_top(label, results[label][key]["functions"])
        if len(labels) > 1:
            _print_call_diff(labels[0], labels[-1], results, key)


def _print_top(label: str, functions: list[dict[str, Any]]) -> None:
    print(f"  {label}: top own CPU time per intent (µs, calls)")
    for row in sorted(functions, key=lambda row: -row["own_us"])[:TOP]:
        print(f"    {row['own_us']:8.1f} µs {row['calls']:7.1f}  {row['function']}")
    print(f"  {label}: our functions by cumulative CPU time per intent (µs, calls)")
    ours = [row for row in functions if row["function"].startswith("execution/")]
    for row in sorted(ours, key=lambda row: -row["cumulative_us"])[:TOP]:
        print(f"    {row['cumulative_us']:8.1f} µs {row['calls']:7.1f}  {row['function']}")


def _print_call_diff(first: str, last: str, results: dict[str, Any], key: str) -> None:
    def by_name(label: str) -> dict[str, float]:
        totals: dict[str, float] = {}
        for row in results[label][key]["functions"]:
            totals[row["function"]] = totals.get(row["function"], 0.0) + row["calls"]
        return totals

    old, new = by_name(first), by_name(last)
    deltas = sorted(
        ((new.get(name, 0.0) - old.get(name, 0.0), name) for name in {*old, *new}),
        key=lambda pair: -abs(pair[0]),
    )
    print(f"  calls per intent, {last} minus {first} (largest differences)")
    for delta, name in deltas[: TOP * 2]:
        print(f"    {delta:+8.1f}  ({old.get(name, 0.0):7.1f} → {new.get(name, 0.0):7.1f})  {name}")


if __name__ == "__main__":
    raise SystemExit(main())
