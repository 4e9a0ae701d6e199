"""Chaos: a seeded storm of intents, duplicates and faults; afterwards nothing may be poisoned.

One run: start the rig (`harness.py`), stage one zombie take-over, play the seeded timeline of
publishes and faults, zombie storms included (`workload.py`), wait until every message has ended
(bounded by the settings, not a tuned sleep), run one sweep through `main.sweep_reservations` and
one reconciliation through `main.reconcile_orders`, and check and print the invariants
(`invariants.py`):

- zero `reserved` documents;
- every broker order recorded `placed` with its order id, one order per intent;
- no order for an intent recorded `halted`, `rejected`, `stale`, `dry_run` unless it was cancelled
  and the record says so (the repair of a zombie's late order);
- no account over its in-flight budget, at any snapshot;
- no account past `max_daily_orders` or `max_position_qty` by the broker's own order book, at any
  snapshot (the excused windows are listed in `invariants.py`);
- the reconciler settles every broker order and finds the order of every `placed` record;
- every message ends as a terminal record of its payload, or as a dead letter;
- the in-flight leases match the live reservations, at any snapshot and at the end;
- every lease is ended by the invocation that took it, unless that process was killed.

The seed is printed first and repeated in a failure: `CHAOS_SEED=<seed>` replays the plan (the
same intents, faults and timeline; the thread interleaving is the machine's). `CHAOS_N` sets the
number of intents (default 40 under `make test`; `make chaos N=200` for larger runs).
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from google.cloud.firestore_v1.base_query import FieldFilter

from execution.client_order_ids import client_order_id_for
from execution.clock import system_clock
from tests.chaos.harness import Rig
from tests.chaos.invariants import (
    Check,
    Evidence,
    Monitor,
    audit_leases,
    final_checks,
    message_resolved,
    over_limits,
    render,
    zombie_staged,
)
from tests.chaos.workload import Account, Plan, build_plan
from tests.support.builders import intent_id_at_broker

CHAOS_N = int(os.environ.get("CHAOS_N") or 40)
SEED = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1, 1_000_000))


def say(capsys: pytest.CaptureFixture[str], text: str) -> None:
    """Print past pytest's capture: the seed and the table belong in every run's output."""
    with capsys.disabled():
        print(text, flush=True)


def drain_bound(plan: Plan) -> float:
    """How long, after the storm, every message may take to end (a bound, not a sleep).

    A killed or clock-jumped lease blocks its intent for at most one TTL, a redelivery comes about
    every second, and a budget-full account admits the next intent as soon as a lease ends; a few
    TTLs cover chains of those, plus the function timeout for the slowest invocation.
    """
    return 4 * plan.timing.ttl + 2 * plan.timing.function_timeout + plan.n * 0.1


def read_state(rig: Rig) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    reservations = {
        (doc := snap.to_dict() or {}).get("client_intent_id", snap.id): doc
        for snap in rig.direct.collection_group("execution_reservations").stream(timeout=10)
    }
    dead_letters = {
        (doc := snap.to_dict() or {}).get("message_id", snap.id): doc
        for snap in rig.direct.collection("execution_dead_letters").stream(timeout=10)
    }
    return reservations, dead_letters


def drain(rig: Rig, bound: float) -> tuple[bool, float]:
    """Wait until every published message ended terminal or dead-lettered, within `bound` s."""
    began = time.monotonic()
    while True:
        try:
            reservations, dead_letters = read_state(rig)
            if all(message_resolved(p, reservations, dead_letters) for p in rig.log.published):
                return True, time.monotonic() - began
        except Exception:  # a read during the last seconds of recovery
            pass
        if time.monotonic() - began > bound:
            return False, time.monotonic() - began
        time.sleep(0.5)


def release_grace(plan: Plan) -> timedelta:
    """The longest a release may keep retrying (its attempts, each one store timeout)."""
    return timedelta(seconds=6 * plan.timing.firestore_timeout)


def settle_leases(rig: Rig, bound: float) -> float:
    """Wait until every invocation still running has ended its lease (bounded)."""
    began = time.monotonic()
    grace = release_grace(rig.plan)
    while audit_leases(list(rig.lives()), grace).unended and time.monotonic() - began < bound:
        time.sleep(0.25)
    return time.monotonic() - began


def collect(rig: Rig, monitor: Monitor) -> Evidence:
    reservations, dead_letters = read_state(rig)
    reserved = [
        snap.reference.path
        for snap in rig.direct.collection_group("execution_reservations")
        .where(filter=FieldFilter("status", "==", "reserved"))
        .stream(timeout=10)
    ]
    inflight = {}
    for account in rig.plan.accounts:
        if account.max_inflight_usd is None:
            continue
        snap = (
            rig.direct.collection("tenants", account.tenant_id, "execution_inflight")
            .document(account.account_id)
            .get(timeout=10)
        )
        inflight[account.key] = snap.to_dict() or {}
    return Evidence(
        plan=rig.plan,
        published=rig.log.published,
        reservations=reservations,
        dead_letters=dead_letters,
        reserved_after_sweep=reserved,
        inflight=inflight,
        # Keyed by intent id: the chaos plan's intents all fit the plain client order id form.
        orders={intent_id_at_broker(c): order for c, order in rig.sandbox.orders.items()},
        posted=[intent_id_at_broker(c) for c in rig.sandbox.posted_client_order_ids()],
        monitor=monitor,
        audit=audit_leases(list(rig.lives()), release_grace(rig.plan)),
        checked_at=system_clock(),
        reconcile=rig.log.reconcile,
        storms=rig.log.storms,
    )


def facts(rig: Rig, ev: Evidence, drained: bool, drain_seconds: float) -> list[tuple[str, str]]:
    """What happened in the run, beside the invariants."""
    log = rig.log
    outcomes: dict[str, Counter[str]] = {}
    for published in log.published:
        message = published.message
        if message.intent_id is None:
            outcome = "dead_letter" if published.message_id in ev.dead_letters else "unresolved"
        else:
            doc = ev.reservations.get(message.intent_id) or {}
            outcome = str(doc.get("outcome"))
            if published.message_id in ev.dead_letters:
                outcome = "dead_letter"
        outcomes.setdefault(message.kind, Counter())[outcome] += 1
    records = [r for _server, records, _killed in rig.lives() for r in records]
    events = Counter(r.get("event") for r in records)
    retries = Counter(
        str(r.get("error", "")).split(":", 1)[0]
        for r in records
        if r.get("event") == "exec.delivery.retry"
    )
    rejected = Counter(
        str((ev.reservations.get(i) or {}).get("error", "")).split(":", 1)[0]
        for i in ev.reservations
        if (ev.reservations.get(i) or {}).get("outcome") == "rejected"
    )
    rows = [
        ("plan", rig.plan.summary()),
        (
            "outcomes per message kind",
            "; ".join(
                f"{kind}: " + ", ".join(f"{o} {c}" for o, c in sorted(counter.items()))
                for kind, counter in sorted(outcomes.items())
            ),
        ),
        ("rejection reasons", ", ".join(f"{r!r} {c}" for r, c in rejected.most_common())),
        (
            "deliveries",
            f"{events['exec.delivery.received']} received, {events['exec.delivery.acked']} acked, "
            f"{events['exec.delivery.dead_lettered']} dead-lettered, "
            f"{events['exec.delivery.retry']} retried ("
            + ", ".join(f"{k} {v}" for k, v in retries.most_common())
            + ")",
        ),
        (
            "staged zombie take-over",
            ", ".join(f"{k}={v}" for k, v in log.zombie.items()),
        ),
        (
            "zombie storms",
            "; ".join(
                f"{r.storm.point}/{r.storm.transition} on S{r.storm.server}: "
                + (
                    f"paused {r.paused_seconds:g}s, take-over "
                    f"{'ended ' + str(r.take_over_outcome) if r.taken_over else 'did not end'}, "
                    f"final {_final(ev, r.intent)}"
                    if r.reached
                    else r.note
                )
                for r in log.storms
            ),
        ),
        (
            "reconciler",
            ", ".join(
                f"{k}={v}" for k, v in log.reconcile.items() if k not in {"since", "skipped"}
            ),
        ),
        (
            "Firestore outages",
            "; ".join(
                f"at {o.at:.1f}s with {o.calls_in_flight} broker calls in flight: cut "
                f"{o.cut_seconds:.1f}s (emulator export {o.export_seconds:.2f}s, "
                f"restart {o.emulator_start_seconds:.1f}s), a client through the proxy answered "
                + (
                    f"{o.probe_recovery_seconds:.2f}s after restore"
                    if o.probe_recovery_seconds is not None
                    else "never within 30 s of restore"
                )
                for o in log.outages
            ),
        ),
        (
            "kills",
            "; ".join(
                f"at {k.at:.1f}s S{'+S'.join(map(str, k.servers))} with {k.hung_calls} broker "
                "calls hanging"
                for k in log.kills
            ),
        ),
        (
            "clock jumps",
            "; ".join(
                ("staged" if j.at < 0 else f"at {j.at:.1f}s")
                + f" +{j.seconds:.0f}s expired {j.expired}"
                + (f" (failed: {j.error})" if j.error else "")
                for j in log.jumps
            ),
        ),
        (
            "final sweep",
            ", ".join(f"{k}={v}" for k, v in log.final_sweep.items() if k != "expired_ids"),
        ),
        (
            "time",
            ", ".join(f"{k} {v:.1f}s" for k, v in log.timings.items())
            + f", drain {drain_seconds:.1f}s{'' if drained else ' (bound reached)'}",
        ),
    ]
    rows += [("harness error", e) for e in log.errors]
    return rows


def _final(ev: Evidence, intent_id: str) -> str:
    """An intent's final record in a few words: outcome, and the repair where there is one."""
    doc = ev.reservations.get(intent_id) or {}
    repair = doc.get("repair") or {}
    text = str(doc.get("outcome"))
    if repair:
        text += (
            f" (repaired by {repair.get('found_by')} from {repair.get('previous_outcome')}, "
            f"cancel {repair.get('cancel')})"
        )
    return text


@pytest.mark.timeout(240 + CHAOS_N * 2)
def test_no_failure_poisons_the_system(
    pubsub_emulator_host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = build_plan(SEED, CHAOS_N)
    replay = f"CHAOS_SEED={SEED} CHAOS_N={CHAOS_N}"
    say(capsys, f"\nchaos: seed {SEED} ({replay} replays it): {plan.summary()}")
    began = time.monotonic()
    rig = Rig(plan, tmp_path, project=f"demo-chaos-{SEED}")
    try:
        rig.start()
        monitor = Monitor(
            rig.direct,
            plan.accounts,
            broker=rig.sandbox,
            jumped=rig.jumped,
            lives=rig.emulator.lives,
        )
        monitor.start()
        step = time.monotonic()
        rig.zombie_takeover()
        rig.log.timings["zombie"] = time.monotonic() - step
        rig.run_timeline()
        rig.resume_all()
        drained, drain_seconds = drain(rig, drain_bound(plan))
        rig.final_sweep()
        rig.log.timings["settle"] = settle_leases(rig, 2 * plan.timing.function_timeout + 10)
        # As Cloud Scheduler would, once everything has ended (the broker's faults with it: one
        # left queued would fail the listing, which the reconciler reports as incomplete).
        rig.sandbox.clear_faults()
        rig.reconcile()
        monitor.stop()
        evidence = collect(rig, monitor)
        checks = final_checks(evidence)
        lives = list(rig.lives())
    finally:
        rig.close()
    staging = zombie_staged(lives, plan.zombie.payload["client_intent_id"])
    checks.append(
        Check(
            "staged: a take-over while the first attempt ran",
            staging is None,
            "yes" if staging is None else f"no: {staging}",
            [] if staging is None else [f"the fence was not exercised: {staging}"],
        )
    )
    rig.log.timings["total"] = time.monotonic() - began
    table = render(checks, facts(rig, evidence, drained, drain_seconds))
    say(capsys, f"\nchaos invariants, seed {SEED} ({replay}):\n{table}\n")
    failed = [c.name for c in checks if not c.ok]
    assert not failed, f"chaos seed {SEED} ({replay}) broke: {', '.join(failed)}\n{table}"


def test_the_plan_is_a_function_of_the_seed() -> None:
    first, again = build_plan(1234, 30), build_plan(1234, 30)
    other = build_plan(4321, 30)

    assert [m.data for m in first.messages] == [m.data for m in again.messages]
    assert [(f.at, f.label) for f in first.broker_faults] == [
        (f.at, f.label) for f in again.broker_faults
    ]
    assert [m.data for m in first.messages] != [m.data for m in other.messages]


def _order(number: int, side: str, submitted: str, qty: int = 2) -> dict[str, Any]:
    return {
        "id": f"order-{number}",
        "client_order_id": client_order_id_for("limits-co", "acct-pos", f"intent-{number}"),
        "symbol": "AAPL",
        "side": side,
        "qty": str(qty),
        "submitted_at": submitted,
    }


def test_the_broker_side_limit_check_flags_a_position_past_its_limit_unless_repaired_late() -> None:
    account = Account("limits-co", "acct-pos", 400.0, 250.0, max_position_qty=5)
    monitor = Monitor(None, (account,))  # type: ignore[arg-type]  # never polled here
    at = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
    orders = [_order(n, "buy", f"2026-01-05T14:59:0{n}Z") for n in range(3)]  # 6 shares
    monitor.book_samples.append((account, at, orders, orders))

    breaches, peaks = over_limits(monitor, late=set())
    excused, _ = over_limits(monitor, late={"order-2"})

    assert len(breaches) == 1
    assert "6 > max_position_qty=5" in breaches[0]
    assert peaks[("limits-co", "acct-pos", "max_position_qty")] == 6
    assert excused == []


def test_an_excused_order_left_out_of_a_position_is_no_breach_while_the_book_is_within() -> None:
    account = Account("limits-co", "acct-pos", 400.0, 250.0, max_position_qty=5)
    monitor = Monitor(None, (account,))  # type: ignore[arg-type]  # never polled here
    at = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
    buy = _order(0, "buy", "2026-01-05T14:59:00Z", qty=2)
    sells = [_order(n, "sell", f"2026-01-05T14:59:0{n}Z", qty=3) for n in (1, 2)]  # book: -4
    monitor.book_samples.append((account, at, sells, [buy, *sells]))  # the buy was excused

    breaches, _ = over_limits(monitor, late=set())

    assert breaches == []
