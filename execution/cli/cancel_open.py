"""`kill-switch on --cancel-open`: cancel the broker's open orders of ours in the halted scope.

A kill switch stops new orders; orders already working at the broker keep working. This lists
the broker's orders of the lookback window (`Broker.list_orders`), keeps those whose client
order id is ours (`is_ours`), still open, and owned by the scope (global: all of ours; a tenant;
one account of a tenant), and asks the broker to cancel each. The owner of a plain-form id is
read from the id (`parse_plain`); a hashed one is located through the reservation carrying it
(`FirestorePlacedRecords.locate`, then its `broker_account_id`). An order of ours whose owner
cannot be found is reported, never cancelled blind.

Safe to run twice: a cancelled order is closed at the next listing and skipped, and one that
closed between the listing and the cancel (`OrderNotCancelableError`) is reported as such.

The listing cannot see an order not placed yet: an intent of the scope that passed its gates
before the switch went on (or read the switch, or its account's trading mode, just before) may
still be on its way to the broker. Its lease says until when: every live lease of the scope,
up to its expiry plus the broker call and the clock skew, is reported `in_flight`, and the
command answers "run again" (exit 1) rather than success while any is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from execution.broker_truth import FINAL_ORDER_STATUSES
from execution.brokers.base import Broker
from execution.client_order_ids import client_order_id_for, is_ours, parse_plain
from execution.errors import BrokerRejectedError, BrokerTransientError, OrderNotCancelableError
from execution.models import BrokerOrder

CANCEL_PENDING = "pending_cancel"
"""Alpaca's state of an order whose cancel was asked and not yet done: nothing to ask again."""

Owner = tuple[str, str]
"""(tenant_id, broker_account_id) an order of ours was placed for."""


@dataclass(frozen=True)
class Scope:
    """What a kill switch halts: everything (no tenant), a tenant, or one account of a tenant."""

    tenant_id: str | None = None
    broker_account_id: str | None = None

    def covers(self, owner: Owner) -> bool:
        """Whether an order placed for `owner` is in this scope."""
        tenant, account = owner
        return (self.tenant_id is None or tenant == self.tenant_id) and (
            self.broker_account_id is None or account == self.broker_account_id
        )


@dataclass
class CancelReport:
    """Each open order of ours in the scope and what its cancel did."""

    since: datetime
    cancels: list[dict[str, Any]] = field(default_factory=list)
    unlocated: list[str] = field(default_factory=list)
    """Open orders of ours whose tenant and account no record names: not cancelled."""
    in_flight: list[dict[str, Any]] = field(default_factory=list)
    """Live leases of the scope: intents that may still place an order (`may_place_until`)."""
    complete: bool = True
    error: str | None = None
    switch_lifted: str | None = None
    """Set where the switch was no longer on once the cancels were done (someone resumed the
    scope meanwhile): new orders may have been placed after the listing."""

    @property
    def problems(self) -> bool:
        """Something a person must look at: a cancel not done, an unknown owner, a short list,
        an intent that may still place an order, a switch lifted under the command."""
        failed = any(
            c["result"] not in ("cancel_requested", "already_closed") for c in self.cancels
        )
        lifted = self.switch_lifted is not None
        return failed or lifted or bool(self.unlocated or self.in_flight) or not self.complete

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {**asdict(self), "since": self.since.isoformat()}


def plain_owner(client_order_id: str) -> Owner | None:
    """The owner a plain-form client order id spells out."""
    ids = parse_plain(client_order_id)
    return (ids[0], ids[1]) if ids else None


def cancel_open_orders(
    broker: Broker,
    scope: Scope,
    *,
    since: datetime,
    owner_of: Callable[[str], Owner | None],
    deadline_seconds: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> CancelReport:
    """Cancel every open order of ours in `scope` submitted after `since`; report each.

    Bounded by `deadline_seconds`, as the sweeper and the reconciler are: a broker whose listing
    never ends (it keeps paging) leaves the report incomplete rather than the command hung.
    """
    report = CancelReport(since=since)
    deadline = monotonic() + deadline_seconds
    try:
        for order in broker.list_orders(after=since):
            if monotonic() > deadline:  # checked on every order listed, open or not
                report.complete = False
                report.error = "deadline reached while listing orders: run it again"
                break
            if not _open_and_ours(order):
                continue
            owner = owner_of(order.client_order_id)
            if owner is None:
                report.unlocated.append(order.client_order_id)
            elif scope.covers(owner):
                report.cancels.append(_cancel(broker, order, owner))
    except BrokerTransientError as exc:
        # Nothing may be concluded from what the listing did not reach: run it again.
        report.complete = False
        report.error = f"{type(exc).__name__}: {exc}"
    return report


@dataclass(frozen=True)
class LiveLease:
    """A `reserved` intent: it may reach the broker until `may_place_until`."""

    tenant_id: str
    broker_account_id: str
    client_intent_id: str
    may_place_until: datetime


def note_in_flight(
    report: CancelReport, leases: Iterable[LiveLease], scope: Scope, now: datetime
) -> None:
    """Add the scope's leases that may still place an order after `now` to `report`."""
    for lease in leases:
        if scope.covers((lease.tenant_id, lease.broker_account_id)) and (
            lease.may_place_until > now
        ):
            report.in_flight.append(
                {
                    "tenant_id": lease.tenant_id,
                    "broker_account_id": lease.broker_account_id,
                    "client_intent_id": lease.client_intent_id,
                    "may_place_until": lease.may_place_until.isoformat(),
                }
            )


def _open_and_ours(order: BrokerOrder) -> bool:
    ended = FINAL_ORDER_STATUSES | {CANCEL_PENDING}
    return is_ours(order.client_order_id) and order.status not in ended


def _cancel(broker: Broker, order: BrokerOrder, owner: Owner) -> dict[str, Any]:
    tenant, account = owner
    try:
        broker.cancel_order(tenant, account, order.broker_order_id)
        result = "cancel_requested"
    except OrderNotCancelableError:
        result = "already_closed"
    except BrokerRejectedError as exc:
        result = f"refused: {exc}"
    except BrokerTransientError as exc:
        result = f"unknown, run again: {exc}"
    return {
        "tenant_id": tenant,
        "broker_account_id": account,
        "client_order_id": order.client_order_id,
        "broker_order_id": order.broker_order_id,
        "symbol": order.symbol,
        "status": order.status,
        "result": result,
    }


def owner_through_record(
    client_order_id: str,
    locate: Callable[[str], tuple[str, str] | None],
    account_of: Callable[[str, str], str | None],
) -> Owner | None:
    """A hashed id's owner: the record carrying it, whose ids must hash to it again."""
    located = locate(client_order_id)
    if located is None:
        return None
    tenant, intent = located
    account = account_of(tenant, intent)
    if account is None or client_order_id_for(tenant, account, intent) != client_order_id:
        return None
    return tenant, account
