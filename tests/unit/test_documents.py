"""The stored documents' models and paths: contract names, round trips, one error for bad input."""

from __future__ import annotations

import dataclasses
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import firestore

from execution.account_state import AccountState, Lease
from execution.documents import (
    AccountSettings,
    AccountStateDocument,
    DeadLetterDocument,
    KillSwitchDocument,
    LedgerEntry,
    MalformedAccountError,
    MalformedDocumentError,
    PaperOrderDocument,
    QuoteDocument,
    ReservationDocument,
    leases_to_document,
    reservation_from_document,
    reservation_to_document,
    state_from_document,
)
from execution.firestore import paths
from execution.models import BrokerOrder, Outcome
from execution.positions import Position
from execution.reservations import ReservationRecord, ReservationStatus

NOW = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)

# ARCHITECTURE.md, "Reservations": the document's contract fields.
RESERVATION_CONTRACT = {
    "tenant_id",
    "broker_account_id",
    "client_intent_id",
    "symbol",
    "amount_usd",
    "status",
    "lease_id",
    "attempt",
    "created_at",
    "expires_at",
    "released_at",
    "outcome",
    "error",
    "broker_order_id",
    "payload_hash",
    "client_order_id",
}


BASE = ReservationRecord(
    tenant_id="t-1",
    broker_account_id="a-1",
    client_intent_id="i-1",
    symbol="AAPL",
    amount_usd=190.5,
    status=ReservationStatus.RELEASED,
    lease_id="lease-1",
    attempt=2,
    created_at=NOW,
    expires_at=NOW + timedelta(minutes=10),
    payload_hash="h",
    released_at=NOW + timedelta(seconds=3),
    outcome=Outcome.PLACED,
    broker_order_id="o-1",
    side="buy",
    qty=1.0,
    counts_against_budget=True,
    client_order_id="coid-1",
)


def record(**overrides: Any) -> ReservationRecord:
    return dataclasses.replace(BASE, **overrides)


@pytest.fixture(scope="module")
def db() -> firestore.Client:
    return firestore.Client(project="demo-documents", credentials=AnonymousCredentials())


def test_the_reservation_document_carries_every_contract_field_and_every_record_field() -> None:
    written = reservation_to_document(record())

    assert set(written) >= RESERVATION_CONTRACT
    assert {f.name for f in dataclasses.fields(ReservationRecord)} <= set(
        ReservationDocument.model_fields
    )


def test_a_reservation_reads_back_as_the_record_it_was_written_from() -> None:
    original = record(repair=None)

    assert reservation_from_document(reservation_to_document(original)) == original


def test_a_reservation_is_written_with_plain_strings_and_no_purge_time_while_live() -> None:
    written = reservation_to_document(record(status=ReservationStatus.RESERVED, outcome=None))

    assert type(written["status"]) is str and written["status"] == "reserved"
    assert written["outcome"] is None and written["purge_at"] is None
    assert "repair" not in written  # an acquire's update leaves a repair as the repair wrote it


def test_a_reservation_older_than_client_order_ids_is_sent_under_its_intent_id() -> None:
    stored = reservation_to_document(record())
    del stored["client_order_id"]

    assert reservation_from_document(stored).client_order_id == "i-1"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("attempt", "2"),
        ("attempt", None),
        ("attempt", True),
        ("tenant_id", 5),
        ("lease_id", ""),
        ("amount_usd", math.nan),
        ("amount_usd", -1.0),
        ("status", "paused"),
        ("expires_at", "2026-01-05T14:30:00Z"),
    ],
)
def test_a_malformed_reservation_raises_one_error_naming_the_field_never_its_value(
    field: str, value: object
) -> None:
    stored = {**reservation_to_document(record()), field: value}

    with pytest.raises(MalformedDocumentError) as raised:
        reservation_from_document(stored)

    assert isinstance(raised.value, ValueError)  # what every caller already handles
    message = str(raised.value)
    assert message.startswith(f"malformed reservation document: {field}")
    assert repr(value) not in message or value is None


def test_a_missing_field_is_named() -> None:
    stored = reservation_to_document(record())
    del stored["lease_id"]

    with pytest.raises(MalformedDocumentError, match="lease_id: Field required"):
        ReservationDocument.parse(stored)


def test_an_account_document_keeps_its_own_error_type_and_ignores_an_operators_fields() -> None:
    assert AccountSettings.parse({"max_inflight_usd": 10, "ticket": "OPS-1"}).max_inflight_usd == 10
    with pytest.raises(MalformedAccountError, match="malformed account document: max_daily_orders"):
        AccountSettings.parse({"max_daily_orders": "7"})
    assert issubclass(MalformedAccountError, MalformedDocumentError)


def test_the_account_state_reads_back_as_written() -> None:
    lease = Lease("i-1", 50.0, NOW, symbol="AAPL", side="buy", qty=2.0)
    stored = {
        "leases": leases_to_document({"lease-1": lease}),
        "exact_positions": {"MSFT": {"shares": -2, "billionths": -500_000_000}},
        "positions": {"AAPL": -3},  # an earlier version's float sum
        "placed_orders": {"2026-01-05": 4},
    }

    state = state_from_document(stored)

    positions = {"AAPL": Position(None, -3.0), "MSFT": Position(-2_500_000_000)}
    assert state == AccountState({"lease-1": lease}, positions, {"2026-01-05": 4})
    assert state_from_document(None) == AccountState()


@pytest.mark.parametrize(
    "damage",
    [
        {"positions": {"AAPL": math.inf}},
        {"exact_positions": {"AAPL": {"shares": 1.5, "billionths": 0}}},
        {"exact_positions": {"AAPL": {"shares": 2**63 - 1, "billionths": 0}}},  # saturated
        {"exact_positions": {"AAPL": {"shares": 0, "billionths": -(2**63)}}},
        {"placed_orders": {"2026-01-05": -1}},
        {"leases": {"l": {"client_intent_id": "i", "amount_usd": math.nan, "expires_at": NOW}}},
        {"leases": {"l": {"client_intent_id": "i", "amount_usd": 1.0}}},
    ],
)
def test_an_account_state_with_a_number_no_limit_can_count_is_malformed(
    damage: dict[str, Any],
) -> None:
    with pytest.raises(MalformedDocumentError, match="malformed account state document"):
        AccountStateDocument.parse(damage)


def test_a_paper_order_reads_back_as_the_broker_order_it_stored() -> None:
    order = BrokerOrder("o-1", "c-1", "AAPL", "buy", 2.0, "filled", 10.0, "limit", 10.0, "day", NOW)

    document = PaperOrderDocument.from_order(order, "a-1").to_document()

    assert document["broker_account_id"] == "a-1"
    assert PaperOrderDocument.parse(document).to_order() == order


@pytest.mark.parametrize(
    "fields",
    [
        {"bid": math.nan, "ask": 100.0},
        {"bid": 101.0, "ask": 100.0},
        {"bid": "99", "ask": "100"},
        {"bid": True, "ask": True},
        {"bid": 99.0},
    ],
)
def test_a_quote_that_cannot_price_an_order_is_malformed(fields: dict[str, Any]) -> None:
    with pytest.raises(MalformedDocumentError, match="malformed quote document"):
        QuoteDocument.parse({"ts": NOW, **fields})


def test_a_quote_reads_as_the_routing_quote() -> None:
    quote = QuoteDocument.parse({"bid": 99, "ask": 100.5, "ts": NOW}).to_quote("AAPL")

    assert (quote.symbol, quote.bid, quote.ask, quote.ts) == ("AAPL", 99.0, 100.5, NOW)


@pytest.mark.parametrize(
    ("stored", "halts"),
    [
        ({"enabled": True}, True),
        ({"enabled": False}, False),
        ({"enabled": "yes"}, True),
        ({"enabled": 0}, True),
        ({"enabled": "false"}, True),
        ({"enabled": None}, True),
        ({"Enabled": False}, True),
    ],
)
def test_a_kill_switch_that_exists_is_on_unless_enabled_is_false(
    stored: dict[str, object], halts: bool
) -> None:
    switch = KillSwitchDocument.parse({**stored, "reason": 5, "updated_at": "today"})

    assert (switch.enabled, switch.updated_at) == (halts, None)
    assert (switch.reason or "").startswith("on: `enabled`") is (
        halts and stored != {"enabled": True}
    )


def test_an_absent_kill_switch_is_off() -> None:
    assert KillSwitchDocument.read(None).enabled is False


def test_ledger_and_dead_letter_documents_refuse_what_they_could_not_store() -> None:
    with pytest.raises(MalformedDocumentError):
        LedgerEntry.parse({"tenant_id": "t", "qty": math.nan})
    with pytest.raises(MalformedDocumentError):
        DeadLetterDocument.parse({"message_id": "m", "reason": "r", "data": b"raw"})


def test_paths_name_the_contract_documents(db: firestore.Client) -> None:
    assert {
        paths.reservation_ref(db, "t", "i").path,
        paths.account_ref(db, "t", "a").path,
        paths.inflight_ref(db, "t", "a").path,
        paths.ledger_ref(db, "t", "o").path,
        paths.paper_order_ref(db, "t", "c").path,
        paths.kill_switch_ref(db, None).path,
        paths.kill_switch_ref(db, "t").path,
        paths.dead_letter_ref(db, "m").path,
        paths.quote_ref(db, "AAPL").path,
    } == {
        "tenants/t/execution_reservations/i",
        "tenants/t/accounts/a",
        "tenants/t/execution_inflight/a",
        "tenants/t/ledger_trades/o",
        "tenants/t/paper_orders/c",
        "ops/execution_kill_switch",
        "tenants/t/ops/execution_kill_switch",
        "execution_dead_letters/m",
        "market_quotes/AAPL",
    }
    assert paths.account_path("t", "a") == paths.account_ref(db, "t", "a").path
    assert paths.inflight_path("t", "a") == paths.inflight_ref(db, "t", "a").path
