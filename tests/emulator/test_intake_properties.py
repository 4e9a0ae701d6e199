"""Property-based: any delivery, valid or hostile, is answered, and only valid intents trade.

Hypothesis generates Pub/Sub deliveries (envelopes good and broken, payloads valid, mutated into
invalid ones, or junk), each travelling either as a CloudEvent (`main.execute_intent`, Eventarc)
or as the raw body of a push subscription (`main.execute_intent_push`: any bytes, any JSON
shape), and answers each with the intake of that entry point and `main.answer_delivery`, on the
Firestore emulator with the paper broker behind a recording wrapper. The generator knows what it
made, and each call must:

- ack (return) or raise a `RetryableError`; the only retry an intact store allows is a valid
  share-sized market order whose symbol has no quote yet (`PriceUnavailableError`, by design);
- on ack, leave a terminal reservation (valid intents) or a dead letter written by this call;
- let nothing reach the broker unless the intent is valid, and place nothing stale or dry.

Run size: `FUZZ_EXAMPLES` (500 under `make test`, 20,000 under `make fuzz`). Failing examples
are kept in `.hypothesis/` (git-ignored) and replayed first on the next run.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cloudevents.http import CloudEvent
from google.cloud import firestore
from hypothesis import HealthCheck, example, find, given, settings
from hypothesis import strategies as st

import main
from execution.bootstrap import Service
from execution.brokers.paper import PaperBroker
from execution.clock import system_clock
from execution.dead_letters import MAX_REASON_CHARS
from execution.errors import (
    OutcomeUnrecordedError,
    PriceUnavailableError,
    ReservationInFlightError,
    RetryableError,
    StoreUnavailableError,
)
from execution.firestore.support import CallPolicy
from execution.intake import (
    PUBSUB_MESSAGE_PUBLISHED,
    Delivery,
    delivery_from_cloud_event,
    delivery_from_push_body,
)
from execution.models import (
    MAX_NOTIONAL_USD,
    MAX_PRICE_USD,
    MAX_QTY,
    MONEY_DECIMAL_PLACES,
    TERMINAL_OUTCOMES,
)
from tests.support.builders import client_at, emulator_service, fast_settings
from tests.support.tcp_proxy import CuttableProxy
from tests.support.waiting import wait_until

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "500"))
QUOTED = ("AAPL", "MSFT", "SPY", "BRK.B")
TENANT = "tenant-fuzz"
MAX_AGE_SECONDS = 300.0
STORE_DEADLINE_SECONDS = 10.0
REDELIVERY_SECONDS = 90.0  # above the reservation TTL of fast_settings (30 s)
REQUIRED = ("tenant_id", "broker_account_id", "client_intent_id", "symbol", "side", "qty")


class RecordingBroker:
    """A Broker that passes every call to the paper broker and records the method's name."""

    def __init__(self, inner: PaperBroker) -> None:
        self._inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._inner, name)
        if not callable(attribute):
            return attribute

        def recorded(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return attribute(*args, **kwargs)

        return recorded


@dataclass
class Rig:
    service: Service
    broker: RecordingBroker
    db: firestore.Client


@pytest.fixture(scope="module")
def rig(db: firestore.Client) -> Iterator[Rig]:
    # Deadlines for a busy shared machine: the property is about answers, not latency (a store
    # that still misses one is an outage, and the delivery is redelivered as Pub/Sub would).
    policy = CallPolicy(timeout_seconds=STORE_DEADLINE_SECONDS)
    broker = RecordingBroker(PaperBroker(db, clock=system_clock, policy=policy))
    # Quotes written once stay fresh for a whole run (`make fuzz` outlasts a minute); one stamped
    # ahead of the clock would be refused as from the future.
    settings_ = fast_settings(
        intent_max_age_seconds=MAX_AGE_SECONDS,
        firestore_timeout_seconds=STORE_DEADLINE_SECONDS,
        router_quote_max_age_seconds=86_400,
    )
    service = emulator_service(db, system_clock, settings=settings_, broker=broker)
    for symbol in QUOTED:
        db.collection("market_quotes").document(symbol).set(
            {"bid": 99.9, "ask": 100.0, "ts": datetime.now(UTC)}
        )
    yield Rig(service, broker, db)


# -- payloads --------------------------------------------------------------------------------

ids = st.from_regex(r"[A-Za-z0-9_\-]{1,24}", fullmatch=True).filter(
    lambda s: not (s.startswith("__") and s.endswith("__"))
)
symbols = st.sampled_from(QUOTED) | st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,7}", fullmatch=True)


def money(low: float, high: float) -> st.SearchStrategy[float]:
    """Floats a publisher may send: at most 9 decimal places (`MONEY_DECIMAL_PLACES`)."""
    return st.floats(low, high).map(lambda value: round(value, MONEY_DECIMAL_PLACES))


quantities = st.integers(1, 10**6) | money(1e-6, 1e6)
prices = st.integers(1, 10**5) | money(0.01, 1e5)
json_leaves = st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.text(max_size=8)
hostile_text = st.text(st.characters(exclude_categories=()), max_size=40)
ENUM_VALUES = {"buy", "sell", "market", "limit", "day", "gtc", "ioc", "fok", "opg", "cls"}
not_an_enum = hostile_text.filter(lambda t: t.strip() not in ENUM_VALUES)


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid intent, except `created_at`: seconds from now (or None), dated at call time."""
    order_type = draw(st.sampled_from(["market", "limit"]))
    spec: dict[str, Any] = {
        "tenant_id": TENANT,
        "broker_account_id": draw(ids),
        "client_intent_id": draw(ids),
        "symbol": draw(symbols),
        "side": draw(st.sampled_from(["buy", "sell"])),
        "qty": draw(quantities),
        "order_type": order_type,
    }
    if order_type == "limit":
        spec["limit_price"] = draw(prices)
    optional = {
        "notional_usd": money(1.0, 1e6),
        "time_in_force": st.sampled_from(["day", "gtc", "ioc", "fok", "opg", "cls"]),
        "strategy_id": st.text(max_size=128),
        "created_at": st.floats(-200.0, 20.0),
        "dry_run": st.booleans(),
        "metadata": st.dictionaries(st.text(max_size=8), json_leaves, max_size=4),
    }
    for name, strategy in optional.items():
        if draw(st.booleans()):
            spec[name] = draw(strategy)
    return spec


class Raw:
    """A JSON token written as it is (NaN, 1e999, 5000 digits, 3000 levels)."""

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return f"Raw({self.token[:20]!r}... {len(self.token)} characters)"


def too_deep(levels: int) -> Raw:
    return Raw('{"a": ' * levels + "1" + "}" * levels)


NOT_NUMBERS = [True, False, "7", "1e2", "", [], {}, "NaN"]
BAD_NUMBERS = [0, -1, -1e-9, Raw("NaN"), Raw("Infinity"), Raw("1e999"), Raw("9" * 5000)]
BAD_IDS = ["", "a/b", ".", "..", "__x__", "x" * 129, "caf\u00e9", "a b", "\ud800"]
BAD_SYMBOLS = ["\u017fpy", "\u0131bm", "\ufb00", "", "$$$", "A" * 33, "-SPY", "SP Y", "\u0391"]
BAD_TIMES = [
    "yesterday",
    "2026-01-05T14:30:00",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59",
    1_700_000_000,
    True,
    [],
]
FIELDS = {*REQUIRED, "order_type", "limit_price", "notional_usd", "time_in_force"}
FIELDS |= {"strategy_id", "created_at", "dry_run", "metadata"}


def mutations() -> st.SearchStrategy[tuple[str, Any]]:
    """(field, value) changes that make any valid intent invalid; value `DROP` removes it."""
    numbers = st.sampled_from(["qty", "limit_price", "notional_usd"])
    return st.one_of(
        st.tuples(st.sampled_from(REQUIRED), st.just(DROP)),
        st.tuples(numbers, st.sampled_from(NOT_NUMBERS + BAD_NUMBERS)),
        st.tuples(numbers, st.sampled_from([5e-324, 1e-10, 1.0000000001])),
        st.tuples(st.just("qty"), st.just(MAX_QTY * 2)),
        st.tuples(st.just("limit_price"), st.just(MAX_PRICE_USD * 2)),
        st.tuples(st.just("notional_usd"), st.just(MAX_NOTIONAL_USD * 2)),
        st.tuples(st.sampled_from(REQUIRED[:3]), st.sampled_from(BAD_IDS)),
        st.tuples(st.just("symbol"), st.sampled_from(BAD_SYMBOLS)),
        st.tuples(st.sampled_from(["side", "order_type", "time_in_force"]), not_an_enum),
        st.tuples(st.just("created_at"), st.sampled_from(BAD_TIMES)),
        st.tuples(hostile_text.filter(lambda k: k not in FIELDS), json_leaves),
        st.tuples(st.just("metadata"), st.sampled_from([[], "m", 5, too_deep(17)])),
        st.tuples(st.just("metadata"), st.just(too_deep(3000))),
        st.tuples(st.just("metadata"), st.just(Raw('{"big": "' + "x" * 5000 + '"}'))),
        st.tuples(st.just("strategy_id"), st.sampled_from(["s" * 129, 5, True])),
        st.tuples(st.just("dry_run"), st.sampled_from(["true", 1, "yes", None])),
        st.tuples(st.just("order_type"), st.just(MISMATCH)),
        st.tuples(st.just("padding"), st.just(PAD)),
    )


DROP, MISMATCH, PAD = object(), object(), object()


@dataclass(frozen=True)
class PayloadSpec:
    """What to send: a valid intent, one made invalid, or junk (never an intent)."""

    intent: dict[str, Any] | None
    mutation: tuple[str, Any] | None = None
    junk: bytes | None = None

    @property
    def valid(self) -> bool:
        return self.intent is not None and self.mutation is None


junk = st.binary(max_size=200) | st.text(max_size=200).map(str.encode)


def json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.lists(inner) | st.dictionaries(hostile_text, inner)


junk_json = st.recursive(json_leaves, json_containers, max_leaves=10)


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, each drawn in proportion to its weight (`one_of` is flat)."""
    return st.sampled_from([s for weight, s in choices for _ in range(weight)]).flatmap(
        lambda strategy: strategy
    )


payload_specs = weighted(
    (4, valid_specs().map(lambda spec: PayloadSpec(spec))),
    (4, st.builds(PayloadSpec, valid_specs(), mutations())),
    (1, junk.map(lambda data: PayloadSpec(None, junk=data))),
    (1, junk_json.map(lambda value: PayloadSpec(None, junk=json.dumps(value).encode()))),
)


def payload_bytes(spec: PayloadSpec, now: datetime, unique_id: str) -> bytes:
    """The message data for `spec`, dated at `now`, its intent id made unique to this call."""
    if spec.junk is not None:
        return spec.junk
    assert spec.intent is not None
    intent = {**spec.intent, "client_intent_id": f"{spec.intent['client_intent_id']}-{unique_id}"}
    if isinstance(intent.get("created_at"), float):
        intent["created_at"] = (now + timedelta(seconds=intent["created_at"])).isoformat()
    raws: dict[str, str] = {}
    padding = ""
    if spec.mutation is not None:
        field, value = spec.mutation
        if value is DROP:
            intent.pop(field, None)
        elif value is MISMATCH:
            limit = intent["order_type"] == "limit"
            intent["order_type"] = "market" if limit else "limit"
        elif value is PAD:
            padding = " " * (64 * 1024)
        elif isinstance(value, Raw):
            placeholder = f"raw-{len(raws)}"
            raws[f'"{placeholder}"'] = value.token
            intent[field] = placeholder
        else:
            intent[field] = value
    text = json.dumps(intent) + padding
    for placeholder, token in raws.items():
        text = text.replace(placeholder, token)
    return text.encode("utf-8", "surrogatepass")


# -- envelopes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvelopeSpec:
    """How the message travels: `broken` names what makes the envelope unusable (or None).

    `push`: as the raw body of a push subscription, else as a CloudEvent.
    """

    broken: str | None = None
    push: bool = False
    message_id: Any = "id"
    publish: str = "now"
    attributes: Any = None
    encoding: str = "base64"
    event_type: str = PUBSUB_MESSAGE_PUBLISHED
    replacement: Any = None


good_envelopes = st.builds(
    EnvelopeSpec,
    message_id=st.sampled_from(["id", "", None]) | hostile_text | st.integers(0, 10**20),
    publish=st.sampled_from(["now", "now", "now", "absent", "old", "future"]),
    attributes=st.none()
    | st.dictionaries(hostile_text | st.sampled_from(["__meta__", ""]), hostile_text, max_size=5),
    encoding=st.sampled_from(["base64", "base64", "text"]),
    push=st.booleans(),
)


def broken(where: str, replacement: st.SearchStrategy[Any]) -> st.SearchStrategy[EnvelopeSpec]:
    """An envelope whose `where` (the envelope, or a message field) holds `replacement`."""
    return st.builds(
        EnvelopeSpec, broken=st.just(where), replacement=replacement, push=st.booleans()
    )


ENVELOPE_IN_ARRAY = object()
"""As a push body: the whole (valid) envelope inside a JSON array."""
not_an_object = st.none() | st.integers() | st.text(max_size=20) | st.lists(st.integers())
# A push body may be anything at all: JSON of any shape (the golden envelope inside an array
# among them), or bytes that are not JSON.
any_json = st.recursive(json_leaves | st.floats(allow_nan=False), json_containers, max_leaves=8)
raw_bodies = any_json.map(lambda value: json.dumps(value).encode()) | junk
broken_envelopes = st.one_of(
    broken("data", not_an_object),
    st.builds(EnvelopeSpec, broken=st.just("body"), replacement=raw_bodies, push=st.just(True)),
    st.builds(
        EnvelopeSpec,
        broken=st.just("body"),
        replacement=st.just(ENVELOPE_IN_ARRAY),
        push=st.just(True),
    ),
    broken("message", not_an_object),
    broken("message.data", st.integers() | st.lists(st.integers(), max_size=3) | st.booleans()),
    broken(
        "message.attributes",
        st.text(max_size=20)
        | st.lists(st.text(max_size=3), max_size=3)
        | st.dictionaries(st.text(max_size=5), st.integers(), min_size=1, max_size=3),
    ),
    broken(
        "message.publishTime",
        st.sampled_from(["2026-01-05T14:30:00", "soon", "0001-01-01T00:00:00+23:59"])
        | st.integers(),
    ),
    broken(
        "message.messageId",
        st.lists(st.integers(), max_size=2)
        | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)
        | st.floats(allow_nan=False),
    ),
    st.builds(
        EnvelopeSpec,
        broken=st.just("type"),
        event_type=hostile_text.filter(lambda t: t not in {"", PUBSUB_MESSAGE_PUBLISHED}),
    ),
)

envelope_specs = weighted((4, good_envelopes), (1, broken_envelopes))

PUBLISH_OFFSETS = {"now": timedelta(0), "old": timedelta(hours=-1), "future": timedelta(hours=1)}


@dataclass(frozen=True)
class Sent:
    """One generated delivery as its entry point receives it: a CloudEvent, or push bytes."""

    event: CloudEvent | None
    body: bytes | None

    def delivery(self) -> Delivery:
        """What the entry point's intake makes of it (as `main.execute_intent[_push]` do)."""
        if self.body is not None:
            return delivery_from_push_body(self.body)
        assert self.event is not None
        return delivery_from_cloud_event(self.event.data, self.event["type"])


def sent(spec: EnvelopeSpec, data: bytes, now: datetime, unique_id: str) -> Sent:
    """`data` travelling as `spec` says: a push body, or a CloudEvent."""
    event = cloud_event(spec, data, now, unique_id)
    if not spec.push:
        return Sent(event, None)
    if spec.broken == "body":
        if spec.replacement is ENVELOPE_IN_ARRAY:
            return Sent(None, json.dumps([event.data]).encode())
        return Sent(None, spec.replacement)
    return Sent(None, json.dumps(event.data, default=repr).encode())


def cloud_event(spec: EnvelopeSpec, data: bytes, now: datetime, unique_id: str) -> CloudEvent:
    """The CloudEvent for `data` travelling as `spec` says."""
    message: dict[str, Any] = {
        "data": base64.b64encode(data).decode(),
        "messageId": unique_id if spec.message_id == "id" else spec.message_id,
    }
    if spec.encoding == "text" and data.startswith(b"{"):
        with contextlib.suppress(UnicodeDecodeError):  # only text can travel as text
            message["data"] = data.decode("utf-8", "surrogatepass")
    if spec.publish in PUBLISH_OFFSETS:
        message["publishTime"] = (now + PUBLISH_OFFSETS[spec.publish]).isoformat()
    if spec.attributes is not None:
        message["attributes"] = spec.attributes
    envelope: Any = {"message": message, "subscription": "projects/p/subscriptions/s"}
    if spec.broken == "data":
        envelope = spec.replacement
    elif spec.broken == "message":
        envelope["message"] = spec.replacement
    elif spec.broken and spec.broken.startswith("message."):
        message[spec.broken.removeprefix("message.")] = spec.replacement
    attributes = {
        "type": spec.event_type,
        "source": "//pubsub.googleapis.com/fuzz",
        "id": unique_id,
    }
    return CloudEvent(attributes, envelope)


# -- the property ----------------------------------------------------------------------------


def reservation(db: firestore.Client, data: bytes) -> dict[str, Any] | None:
    """The reservation of the intent in `data`, if `data` names one we can look up."""
    try:
        document = json.loads(data)
        ref = db.collection("tenants", TENANT, "execution_reservations")
        snap = ref.document(document["client_intent_id"]).get()
    except Exception:  # not an intent we could have reserved
        return None
    return snap.to_dict() if snap.exists else None


def deliver(service: Service, delivery: Delivery) -> RetryableError | None:
    """Deliver `event` as Pub/Sub would, again while the store does not answer; the retry left.

    A store outage (here: a deadline missed on a busy machine) is the one reason a retry is
    always right; while the lease its failed release left runs out, the intent is in flight.
    """
    deadline = time.monotonic() + REDELIVERY_SECONDS
    while True:
        try:
            main.answer_delivery(service, delivery)
            return None
        except (StoreUnavailableError, OutcomeUnrecordedError, ReservationInFlightError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
        except RetryableError as exc:
            return exc


def check_one(rig: Rig, payload: PayloadSpec, envelope: EnvelopeSpec) -> str:
    """Deliver one generated message and check the properties; returns what became of it."""
    now = datetime.now(UTC)
    unique_id = uuid.uuid4().hex[:12]
    data = payload_bytes(payload, now, unique_id)
    delivery = sent(envelope, data, now, unique_id).delivery()
    rig.broker.calls.clear()
    valid = payload.valid and envelope.broken is None
    fresh = envelope.publish in {"now", "absent"}

    retried = deliver(rig.service, delivery)

    if retried is not None:
        assert valid and fresh and isinstance(retried, PriceUnavailableError), repr(retried)
        assert payload.intent and payload.intent["symbol"] not in QUOTED
        assert rig.broker.calls == []
        return "retried: no quote"

    if not valid:
        assert rig.broker.calls == [], "an invalid delivery reached the broker"
        assert reservation(rig.db, data) is None or payload.intent is None
        # This message's own letter: a hostile id (`0`, `x`) recurs across examples. A delivery
        # whose broken envelope left nothing of this example's own (the same id, no publish
        # time, the same data and attributes as an earlier example's) is that message delivered
        # again: its one letter is the earlier one, so no age is asked of it.
        letters = (
            rig.db.collection("execution_dead_letters")
            .where(filter=firestore.FieldFilter("delivery_sha256", "==", delivery.delivery_sha256))
            .get()
        )
        assert len(letters) == 1, "acked without a dead letter, or with two"
        letter = letters[0].to_dict()
        assert len(letter["reason"]) <= MAX_REASON_CHARS and letter["reason"].isprintable()
        if envelope.broken is None:
            assert letter["data_sha256"] == hashlib.sha256(data).hexdigest()
        return f"dead letter: {envelope.broken or 'payload'}"
    record = reservation(rig.db, data)
    assert record is not None, "a valid intent acked without a record"
    assert record["status"] == "released" and record["outcome"] in TERMINAL_OUTCOMES, record
    placed = rig.broker.calls.count("place_order")
    if not fresh or payload.intent.get("dry_run"):
        assert placed == 0 and record["outcome"] in {"stale", "dry_run"}, record
    else:
        assert placed <= 1
    return f"acked: {record['outcome']}"


GOLDEN_INTENT = {
    "tenant_id": TENANT,
    "broker_account_id": "acct-golden",
    "client_intent_id": "golden",
    "symbol": "AAPL",
    "side": "buy",
    "qty": 1,
    "order_type": "market",
}
# One delivery of each kind the generator makes, replayed by every run before the generated ones,
# so each ending is met whatever the draw (a 500-example draw once missed a broken `message`).
BROKEN_EXAMPLES = {
    "data": 5,
    "body": b"[]",
    "message": "m",
    "message.data": 5,
    "message.attributes": "a",
    "message.publishTime": "soon",
    "message.messageId": [1],
}
ENDINGS = {
    "acked: placed",
    "acked: stale",
    "dead letter: payload",
    "via push",
    "via CloudEvent",
    *(f"dead letter: {kind}" for kind in [*BROKEN_EXAMPLES, "type"]),
}


def with_every_kind_of_ending(test: Any) -> Any:
    """`test` with an explicit example of each ending (`ENDINGS`) applied."""
    golden = PayloadSpec(GOLDEN_INTENT)
    cases = [
        (golden, EnvelopeSpec(push=True)),
        (golden, EnvelopeSpec(publish="old")),
        (PayloadSpec(GOLDEN_INTENT, ("qty", True)), EnvelopeSpec()),
        (golden, EnvelopeSpec(broken="type", event_type="bogus")),
        (golden, EnvelopeSpec(broken="body", replacement=ENVELOPE_IN_ARRAY, push=True)),
    ]
    for kind, replacement in BROKEN_EXAMPLES.items():
        for push in (True, False) if kind != "body" else (True,):  # a body is only pushed
            cases.append((golden, EnvelopeSpec(broken=kind, replacement=replacement, push=push)))
    for payload, envelope in cases:
        test = example(payload=payload, envelope=envelope)(test)
    return test


# A bound against a hang that grows with the run (0.1-0.2 s an example on a busy emulator).
@pytest.mark.timeout(120 + EXAMPLES)
def test_every_delivery_is_answered_and_only_valid_intents_reach_the_broker(rig: Rig) -> None:
    became: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @with_every_kind_of_ending
    @given(payload=payload_specs, envelope=envelope_specs)
    def every_delivery(payload: PayloadSpec, envelope: EnvelopeSpec) -> None:
        became[check_one(rig, payload, envelope)] += 1
        became["via push" if envelope.push else "via CloudEvent"] += 1

    every_delivery()

    print(dict(became))  # with -s: how the run's deliveries ended
    assert sum(became.values()) >= EXAMPLES
    assert set(became) >= ENDINGS, "an explicit example no longer ends as it is named"


SEARCH = settings(database=None, max_examples=5_000)


@pytest.mark.parametrize("kind", [*BROKEN_EXAMPLES, "type"])
def test_the_generator_breaks_envelopes_in_each_way(kind: str) -> None:
    find(envelope_specs, lambda envelope: envelope.broken == kind, settings=SEARCH)


def test_the_generator_makes_valid_invalid_and_junk_payloads() -> None:
    find(payload_specs, lambda payload: payload.valid, settings=SEARCH)
    find(payload_specs, lambda payload: payload.mutation is not None, settings=SEARCH)
    find(payload_specs, lambda payload: payload.junk is not None, settings=SEARCH)
    old_push = find(envelope_specs, lambda e: e.push and e.publish == "old", settings=SEARCH)
    assert old_push.broken is None


# -- the one retry a bad delivery may cause: the store is down while it is recorded -------------


@pytest.fixture
def proxy(db: firestore.Client) -> Iterator[CuttableProxy]:
    cuttable = CuttableProxy(os.environ["FIRESTORE_EMULATOR_HOST"])
    yield cuttable
    cuttable.close()


def acked(service: Service, delivery: Delivery) -> bool:
    try:
        main.answer_delivery(service, delivery)
    except StoreUnavailableError:
        return False
    return True


def test_a_bad_delivery_is_retried_while_the_store_is_down_and_dead_lettered_after(
    db: firestore.Client, proxy: CuttableProxy
) -> None:
    unique_id = uuid.uuid4().hex[:12]
    delivery = sent(EnvelopeSpec(), b"{not json", datetime.now(UTC), unique_id).delivery()
    with client_at(proxy.address, db.project) as proxied:
        service = emulator_service(proxied, system_clock, settings=fast_settings())
        proxy.cut()
        with pytest.raises(StoreUnavailableError):
            main.answer_delivery(service, delivery)
        proxy.restore()

        # As Pub/Sub would: deliver again until acked (the client reconnects with a backoff).
        wait_until(lambda: acked(service, delivery), timeout=60, what="the redelivery's ack")

    letter = db.collection("execution_dead_letters").document(unique_id).get()
    assert letter.exists
    assert "not JSON" in letter.get("reason")
