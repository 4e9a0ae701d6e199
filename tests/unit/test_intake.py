"""The intake's pure parts: envelopes, dead-letter fields, printable text and freshness."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from execution.dead_letters import dead_letter_fields, stored_attribute_name
from execution.errors import InvalidIntentError
from execution.freshness import MAX_CLOCK_SKEW_SECONDS, stale_reason
from execution.intake import Delivery, delivery_from_cloud_event, parse_intent
from execution.models import validate_document_id
from execution.text import bounded_printable

NOW = datetime(2026, 1, 5, 14, 30, tzinfo=UTC)
MAX_AGE = 300.0


def test_printable_text_escapes_control_characters_and_lone_surrogates() -> None:
    assert bounded_printable("a\nb\x00c\ud800", 100) == "a\\nb\\x00c\\ud800"


def test_long_text_is_cut_to_its_bound_with_its_length_noted() -> None:
    cut = bounded_printable("x" * 10_000, 100)

    assert len(cut) == 100
    assert cut.endswith("[cut: 10000 characters]")


@pytest.mark.parametrize(
    ("name", "stored"),
    [
        ("origin", "origin"),
        ("__meta__", "%5F_meta__"),
        ("a.b`c", "a.b%60c"),
        ("", "(empty)"),
        ("caf\u00e9", "caf%C3%A9"),
        ("\ud800", "%ED%A0%80"),
    ],
)
def test_attribute_names_are_stored_under_names_firestore_accepts(name: str, stored: str) -> None:
    assert stored_attribute_name(name) == stored


def test_a_very_long_attribute_name_keeps_its_start_and_a_hash_of_the_whole() -> None:
    first, second = stored_attribute_name("n" * 5000 + "1"), stored_attribute_name("n" * 5000 + "2")

    assert len(first) == 256
    assert first != second


def test_a_dead_letter_of_a_large_payload_keeps_an_excerpt_its_size_and_hash() -> None:
    data = b"z" * 300_000
    fields = dead_letter_fields(Delivery("1", None, data, {}), "why", NOW)

    assert (fields["truncated"], fields["data_bytes"]) == (True, 300_000)
    assert fields["data_sha256"] == hashlib.sha256(data).hexdigest()
    assert len(fields["data"]) == 100_000


def test_messages_without_an_id_are_named_by_their_payload() -> None:
    first, second = Delivery("", None, b"a", {}), Delivery("", None, b"b", {})

    assert first.dead_letter_id == "payload-" + hashlib.sha256(b"a").hexdigest()
    assert first.dead_letter_id != second.dead_letter_id


def test_an_unsafe_message_id_is_hashed_into_a_document_id() -> None:
    delivery = Delivery("../ops/x", None, b"", {})

    assert delivery.dead_letter_id == "msg-" + hashlib.sha256(b"../ops/x").hexdigest()


def test_a_message_id_of_the_own_id_form_is_hashed_so_none_can_take_anothers_own_id() -> None:
    other = Delivery("7", None, b"{", {})
    squatter = Delivery(other.own_dead_letter_id, None, b"[", {})

    assert squatter.dead_letter_id.startswith("msg-")
    assert squatter.dead_letter_id != other.own_dead_letter_id


def test_the_delivery_hash_tells_messages_apart_by_each_of_id_time_data_and_attributes() -> None:
    base = Delivery("7", NOW, b"{", {"a": "1"})
    variants = [
        Delivery("8", NOW, b"{", {"a": "1"}),
        Delivery("7", None, b"{", {"a": "1"}),
        Delivery("7", NOW, b"[", {"a": "1"}),
        Delivery("7", NOW, b"{", {"a": "2"}),
        Delivery("7", NOW, b"{", {}),
    ]

    assert Delivery("7", NOW, b"{", {"a": "1"}).delivery_sha256 == base.delivery_sha256
    assert len({base.delivery_sha256, *(v.delivery_sha256 for v in variants)}) == 6
    assert validate_document_id(base.own_dead_letter_id) == base.own_dead_letter_id


@pytest.mark.parametrize(
    ("data", "event_type", "named"),
    [
        ({"message": "text"}, None, "message"),
        ("text", None, "message"),
        ({"message": {"data": 5}}, None, "message.data"),
        ({"message": {"attributes": "a"}}, None, "message.attributes"),
        ({"message": {"attributes": {"a": 1}}}, None, "message.attributes"),
        ({"message": {"publishTime": "2026-01-05T14:30:00"}}, None, "publishTime"),
        ({"message": {"publishTime": "0001-01-01T00:00:00+23:59"}}, None, "publishTime"),
        ({"message": {"messageId": {"a": 1}}}, None, "messageId"),
        ({"message": {}}, "google.cloud.storage.object.v1.finalized", "CloudEvent type"),
    ],
)
def test_a_broken_envelope_becomes_a_delivery_that_names_its_problem(
    data: object, event_type: str | None, named: str
) -> None:
    kwargs = {"event_type": event_type} if event_type else {}

    delivery = delivery_from_cloud_event(data, **kwargs)

    assert delivery.problem is not None and named in delivery.problem


# -- freshness ----------------------------------------------------------------------------------


def reason(created: timedelta | None, published: timedelta | None) -> str | None:
    return stale_reason(
        created_at=NOW + created if created is not None else None,
        published_at=NOW + published if published is not None else None,
        now=NOW,
        max_age_seconds=MAX_AGE,
    )


def test_a_fresh_intent_has_no_stale_reason() -> None:
    assert reason(timedelta(seconds=-10), timedelta(seconds=-5)) is None


def test_age_counts_from_the_earlier_of_created_at_and_the_publish_time() -> None:
    old = timedelta(seconds=-MAX_AGE - 1)

    assert reason(timedelta(0), old) is not None
    assert reason(old, timedelta(0)) is not None


def test_a_created_at_ahead_of_the_publish_time_within_the_skew_is_fresh() -> None:
    assert reason(timedelta(seconds=MAX_CLOCK_SKEW_SECONDS), timedelta(0)) is None


def test_a_created_at_ahead_of_the_publish_time_beyond_the_skew_is_refused() -> None:
    found = reason(timedelta(seconds=MAX_CLOCK_SKEW_SECONDS + 1), timedelta(0))

    assert found is not None and found.startswith("intent_from_the_future")


def test_a_publish_time_in_the_future_is_refused() -> None:
    found = reason(None, timedelta(hours=1))

    assert found is not None and found.startswith("intent_from_the_future")


def test_without_a_publish_time_created_at_is_checked_against_now() -> None:
    assert reason(timedelta(hours=1), None) is not None
    assert reason(None, None) is None


def test_a_lone_surrogate_in_any_text_of_an_intent_is_refused() -> None:
    data = b'{"strategy_id": "\\ud800"}'

    with pytest.raises(InvalidIntentError) as refused:
        parse_intent(data)

    assert "surrogate" in str(refused.value)
