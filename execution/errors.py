"""Every exception the execution domain raises, split once into retryable and permanent.

The Pub/Sub entry point decides ack or retry from this tree alone::

    ExecutionError
    ├── RetryableError            raise → Pub/Sub redelivers later
    │   ├── ReservationInFlightError   another invocation holds the intent's lease
    │   ├── LimitWaitError             a per-account limit is full of intents in flight
    │   │   └── BudgetWaitError        the account's in-flight budget is full for now
    │   ├── ReservationContentionError optimistic writes lost too often; try again
    │   ├── StoreUnavailableError      Firestore unreachable before a terminal outcome
    │   ├── PriceUnavailableError      a share-sized market order has no quote to size it by yet
    │   ├── BrokerTransientError       timeout, connection error, 429/5xx: outcome unknown
    │   ├── LeaseTooShortError         too little lease left to finish a broker call inside it
    │   └── OutcomeUnrecordedError     the release could not record the outcome
    └── PermanentError            ack (after a dead-letter record where relevant)
        ├── InvalidIntentError         the payload can never be valid
        ├── PayloadConflictError       same client_intent_id, different payload
        ├── OrderConflictError         the broker's order under our id is not this intent's
        ├── BrokerRejectedError        the broker refused the order for good
        │   └── OrderNotCancelableError    a cancel of an order already closed (filled, canceled...)
        ├── AgentModeError             the trading mode forbids this broker call
        ├── ExecutionHaltedError       a kill switch is on
        ├── SettingsError              unsafe or incomplete configuration
        └── SwitchMovedError           a kill switch changed under an operator's change of it

`execution.documents.MalformedReservationError` is permanent too (and a `ValueError`, as every
malformed document is): the intent's own record fits no model until an operator repairs it.
"""

from __future__ import annotations

from typing import Any


class ExecutionError(Exception):
    """Root of every error the execution domain raises on purpose."""


class RetryableError(ExecutionError):
    """The intent may succeed if delivered again later."""


class PermanentError(ExecutionError):
    """Delivering the intent again can never change the answer."""


class ReservationInFlightError(RetryableError):
    """Another invocation holds an unexpired lease on this intent."""


class LimitWaitError(RetryableError):
    """A per-account limit (orders per day, position) may pass only once intents in flight end."""


class BudgetWaitError(LimitWaitError):
    """The account's in-flight budget cannot fit this intent until other leases end."""


class ReservationContentionError(RetryableError):
    """Concurrent writers kept winning the reservation's optimistic commit."""


class StoreUnavailableError(RetryableError):
    """The document store could not be reached or did not answer in time."""


class PriceUnavailableError(RetryableError):
    """A market order without `notional_usd` cannot be sized: no quote for its symbol yet."""


class BrokerTransientError(RetryableError):
    """The broker call failed in a way that may not be final (the order may even exist)."""


class OutcomeUnrecordedError(RetryableError):
    """The release could not record the outcome: redeliver, and let the next attempt record it.

    Acking would leave the intent's record to the sweeper (`expired`) although, for example, the
    broker has its order; the redelivery takes the lapsed lease over and finds the order by its
    client order id.
    """


class LeaseTooShortError(RetryableError):
    """The lease would lapse before a broker call could end: another attempt could take over
    while the order is in flight. Released as `exception`; the redelivery gets a fresh lease."""


class InvalidIntentError(PermanentError):
    """The payload is not a valid trade intent."""


class PayloadConflictError(PermanentError):
    """A client_intent_id was reused with a different payload."""


class OrderConflictError(PermanentError):
    """The order the broker holds under this intent's client order id is not this intent's
    (another symbol, side, quantity, type or limit): it is never adopted as this intent's."""


class BrokerRejectedError(PermanentError):
    """The broker refused the order; sending it again would be refused again."""


class OrderNotCancelableError(BrokerRejectedError):
    """The order cannot be cancelled any more: it is filled, canceled, expired or rejected.

    Alpaca answers a cancel of such an order with 422 "order is not cancelable"; the paper broker
    fills at once, so it refuses every cancel of a known order the same way.
    """


class AgentModeError(PermanentError):
    """The configured trading mode does not allow this broker call."""


class ExecutionHaltedError(PermanentError):
    """A kill switch (environment, global or tenant) halts execution."""


class SettingsError(PermanentError):
    """Settings are unsafe or incomplete; the message names the fix."""


class SwitchMovedError(PermanentError):
    """A kill switch changed between a command's read and its write: this change was not made.

    `document` holds the switch's document as it is now (None where it does not exist).
    """

    def __init__(self, message: str, document: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.document = document
