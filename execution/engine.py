"""`ExecutionEngine.execute_intent`: reserve, route, risk, authority, dry run, broker, ledger.

The reservation is taken first and released in one `finally`, with the outcome, on every return
and every exception path: a failed trade can never leave its lease behind. What `finally` cannot
cover (a killed instance, a store outage during release) the lease's expiry and the sweeper do.

Every stage reaches the store through one `Invocation` per intent (a unit of work): the Firestore
one reads what the stages need in one round trip when it opens and writes the ledger entry with
the release. Stages that pass log at DEBUG; the outcome and its reason are logged once, at
INFO, as `exec.intent.completed`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from execution.accounts import AccountRead
from execution.authority import Authority
from execution.broker_truth import FORBIDDING_OUTCOMES, BrokerTruth, Settlement
from execution.brokers.base import Broker
from execution.brokers.matching import order_mismatch
from execution.client_order_ids import client_order_id_for
from execution.clock import Clock
from execution.errors import (
    AgentModeError,
    BrokerRejectedError,
    BrokerTransientError,
    ExecutionHaltedError,
    LeaseTooShortError,
    LimitWaitError,
    OrderConflictError,
    OutcomeUnrecordedError,
    PriceUnavailableError,
    StoreUnavailableError,
)
from execution.freshness import stale_reason
from execution.invocation import Invocation, InvocationStore
from execution.models import (
    BrokerOrder,
    ExecutionResult,
    OrderRequest,
    Outcome,
    TradeIntent,
    worth_usd,
)
from execution.reservations import (
    AlreadyExecuted,
    ReleaseResult,
    ReservationHandle,
    ReservationRecord,
    ReservationRequest,
    ReservationStatus,
)
from execution.risk import RiskGate
from execution.routing import Quote, RouteDecision, Router
from execution.telemetry import emit

logger = logging.getLogger(__name__)


class ExecutionEngine:
    """Executes one trade intent per call; safe to call again for the same intent."""

    def __init__(
        self,
        *,
        store: InvocationStore,
        router: Router,
        risk: RiskGate,
        authority: Authority,
        broker: Broker,
        truth: BrokerTruth,
        clock: Clock,
        intent_max_age_seconds: float,
        broker_call_seconds: float,
        clock_skew_seconds: float,
        dry_run: bool = False,
    ) -> None:
        """`broker_call_seconds` bounds one broker call, start to end (the broker's deadline);
        `clock_skew_seconds` is how far another instance's clock may be from ours."""
        self._store = store
        self._router = router
        self._risk = risk
        self._authority = authority
        self._broker = broker
        self._truth = truth
        self._clock = clock
        self._lease_margin = timedelta(seconds=broker_call_seconds + clock_skew_seconds)
        self._intent_max_age_seconds = intent_max_age_seconds
        self._dry_run = dry_run

    def execute_intent(
        self, intent: TradeIntent, *, published_at: datetime | None = None
    ) -> ExecutionResult:
        """Execute `intent` once; a business outcome is returned, a retryable failure raised.

        Raises `RetryableError` subclasses (the delivery should be retried) and
        `PayloadConflictError` (never); anything else unexpected propagates after release.
        """
        stale_reason = self._stale_reason(intent, published_at)
        invocation = self._store.open(intent)  # a store outage here retries: nothing is held
        quote: Quote | None = None
        amount: float | None
        if stale_reason is None:
            amount, quote = self._reserved_amount(invocation, intent)
        else:
            amount = intent.known_notional_usd()  # only recorded: never executed, never counted

        acquisition = invocation.reservations.acquire(
            _reservation_request(intent, amount, fresh=stale_reason is None)
        )
        if isinstance(acquisition, AlreadyExecuted):
            return self._recorded(invocation, intent, acquisition.record)

        handle = acquisition.handle
        refused = acquisition.refused
        result: ExecutionResult | None = None
        order: BrokerOrder | None = None
        error: str | None = None
        released = ReleaseResult.UNRECORDED
        # An earlier attempt may have placed an order under the intent's client order id.
        fate = OrderFate(unknown=handle.attempt > 1)
        try:
            result, order = self._execute_held(
                invocation, intent, handle, fate, stale_reason, amount, quote, refused
            )
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}"
            emit(
                logger,
                "exec.intent.exception",
                logging.ERROR,
                tenant_id=intent.tenant_id,
                client_intent_id=intent.client_intent_id,
                attempt=handle.attempt,
                error=error,
            )
            raise
        finally:
            if result is None:
                released = self._release(handle, intent, Outcome.EXCEPTION, error, None, fate)
                self._settle_lost_answer(intent, handle, fate, released)
            else:
                released = self._release(
                    handle, intent, result.outcome, result.reason, result.broker_order_id, fate
                )
            self._flush(invocation, intent)
        if released is ReleaseResult.FENCED:
            self._outlived(intent, handle, order)
        elif released is ReleaseResult.UNRECORDED:
            # Acking now would leave the record to the sweeper (`expired`) while, say, the broker
            # holds the order: redeliver; the next attempt finds the order by its client order id.
            raise OutcomeUnrecordedError(
                f"intent {intent.client_intent_id!r} ended {result.outcome.value} but the store "
                "could not record it; the delivery will be retried to record it"
            )
        return self._answer(invocation, intent, handle, result)

    def _answer(
        self,
        invocation: Invocation,
        intent: TradeIntent,
        handle: ReservationHandle,
        result: ExecutionResult,
    ) -> ExecutionResult:
        """What a delivery whose outcome is recorded answers (its ack ends the message).

        A take-over's outcome that forbids an order (`stale`, `halted`...) may sit beside an
        outlived attempt's late order. Finding this lease live, that attempt marked the record
        (`unsettled_order`): before this release landed (the marker changed the update time, so
        the release read the record again and kept the marker), or after it, and then it
        settled the final record itself. One read tells; a marked record is settled to the
        broker's answer before the ack, since the redelivery the outlived attempt asked for may
        never come once this ack ends the message.
        """
        if handle.attempt <= 1 or result.outcome not in FORBIDDING_OUTCOMES:
            return result
        record = self._truth.record(intent.tenant_id, intent.client_intent_id)
        if record is None or record.unsettled_order is None:
            return result
        return self._recorded(invocation, intent, record)

    def _outlived(
        self, intent: TradeIntent, handle: ReservationHandle, order: BrokerOrder | None
    ) -> None:
        """A newer attempt held or ended the intent while this one ran: ack only what is settled.

        This delivery is the message's; a newer attempt is another delivery of it, and the ack of
        either ends the message. Acking while the newer attempt still holds the lease would leave
        nothing to deliver the intent again if that attempt dies: redeliver instead (a duplicate
        of a recorded outcome is acked at once).
        """
        if order is not None and self._settle_or_mark(intent, handle, order):
            return  # the record names the order now, or a conflict was alerted
        raise OutcomeUnrecordedError(
            f"intent {intent.client_intent_id!r}: attempt {handle.attempt} outlived its lease "
            "and a newer attempt holds or ended the intent; the delivery will be retried so "
            "that the message is acked only once the intent's record is final"
        )

    def _settle_lost_answer(
        self,
        intent: TradeIntent,
        handle: ReservationHandle,
        fate: OrderFate,
        released: ReleaseResult,
    ) -> None:
        """This attempt's broker call lost its answer and a newer attempt held or ended the
        intent meanwhile: settle the record to the order, if the broker has one.

        The newer attempt may have asked the broker before this order landed and recorded, say,
        `halted`; its redeliveries are then duplicates of that record, and nothing else would look
        for the order before the reconciler. Contained: the exception that ended this attempt is
        already on its way (the delivery is retried), and the reconciler is the net.
        """
        if released is not ReleaseResult.FENCED or not (fate.unknown and fate.called):
            return
        try:
            order = self._earlier_order(intent, handle.client_order_id)
            if order is not None:
                self._settle_or_mark(intent, handle, order)  # marks the record where pending
                return
        except Exception as exc:
            emit(
                logger,
                "exec.intent.lost_answer_unsettled",
                logging.ERROR,
                tenant_id=intent.tenant_id,
                client_intent_id=intent.client_intent_id,
                attempt=handle.attempt,
                error=repr(exc),
            )
        # No order found (yet), or no answer: the next delivery to meet the record asks again.
        self._leave_marker(intent, handle, None)

    def _settle_or_mark(
        self, intent: TradeIntent, handle: ReservationHandle, order: BrokerOrder
    ) -> bool:
        """Settle the record to this outlived attempt's `order`; True where that is done.

        Where a newer attempt still holds a live lease (PENDING) it may have asked the broker
        before this order landed and will record, say, `halted`: leave a marker, so that the next
        delivery meeting the final record asks the broker before answering `duplicate`, then
        settle once more. The marker changes the record's update time: either that attempt's
        fenced release fails its precondition and writes over a record that carries the marker,
        or it landed before the marker and the second settle here repairs the record.
        Raises `OutcomeUnrecordedError` where the store fails.
        """
        if self._settle_outlived(intent, handle, order) is not Settlement.PENDING:
            return True
        self._leave_marker(intent, handle, order)
        return self._settle_outlived(intent, handle, order) is not Settlement.PENDING

    def _leave_marker(
        self, intent: TradeIntent, handle: ReservationHandle, order: BrokerOrder | None
    ) -> None:
        """Mark the record (`BrokerTruth.leave_marker`); contained: this delivery is retried in
        any case, and where the store fails the reconciler is the net."""
        try:
            self._truth.leave_marker(
                intent.tenant_id,
                intent.client_intent_id,
                lease_id=handle.lease_id,
                attempt=handle.attempt,
                broker_order_id=order.broker_order_id if order else None,
            )
        except Exception as exc:
            emit(
                logger,
                "exec.intent.unsettled_unmarked",
                logging.ERROR,
                tenant_id=intent.tenant_id,
                client_intent_id=intent.client_intent_id,
                attempt=handle.attempt,
                error=repr(exc),
            )

    def _settle_outlived(
        self, intent: TradeIntent, handle: ReservationHandle, order: BrokerOrder
    ) -> Settlement:
        """This attempt holds an order but outlived its lease: the record may say otherwise.

        A newer attempt took the intent over while this one was paused (a GC, a throttled CPU, a
        VM pause) and may have recorded `stale` or `halted` before this order reached the broker.
        The broker is the truth: settle the record to the order (see `execution.broker_truth`).
        """
        try:
            settlement = self._truth.settle(
                intent.tenant_id,
                intent.client_intent_id,
                order,
                found_by=f"outlived_attempt {handle.attempt}",
            )
        except StoreUnavailableError as exc:
            raise OutcomeUnrecordedError(
                f"intent {intent.client_intent_id!r}: order {order.broker_order_id} was placed "
                f"after the lease lapsed and the store could not record it ({exc}); retried, "
                "and the reconciler settles it"
            ) from exc
        if settlement is not Settlement.AGREED:
            emit(
                logger,
                "exec.intent.outlived_lease",
                logging.ERROR,
                tenant_id=intent.tenant_id,
                client_intent_id=intent.client_intent_id,
                attempt=handle.attempt,
                broker_order_id=order.broker_order_id,
                settlement=settlement.value,
            )
        return settlement

    @staticmethod
    def _release(
        handle: ReservationHandle,
        intent: TradeIntent,
        outcome: Outcome,
        error: str | None,
        broker_order_id: str | None,
        fate: OrderFate,
    ) -> ReleaseResult:
        """Release, containing a handle that raises (then UNRECORDED).

        The one place "release never raises" is enforced (`ReservationHandle.release`). Here,
        because this `finally` is what the rule protects: a raise here would replace the outcome
        (a placed order would look failed) or mask the original exception. Contained here, it
        holds for every handle (Firestore, the simulated store, fakes, fail-open's no-op, any
        adapter to come) while each adapter reports a failure by raising, as every port does.
        The lease then lapses and the redelivery or the sweeper records the outcome.
        """
        try:
            return handle.release(
                outcome,
                error=error,
                broker_order_id=broker_order_id,
                fate_unknown=fate.unknown and outcome is not Outcome.PLACED,
            )
        except Exception as exc:
            emit(
                logger,
                "exec.reservation.release_failed",
                logging.ERROR,
                tenant_id=intent.tenant_id,
                client_intent_id=intent.client_intent_id,
                lease_id=handle.lease_id,
                outcome=outcome.value,
                error=repr(exc),
            )
            return ReleaseResult.UNRECORDED

    @staticmethod
    def _flush(invocation: Invocation, intent: TradeIntent) -> None:
        """Write what the release did not carry; contained like the release, for the same reason."""
        try:
            invocation.flush()
        except Exception as exc:  # the ledger is best-effort by contract; the order stands
            emit(
                logger,
                "exec.ledger_write_failed",
                logging.ERROR,
                client_intent_id=intent.client_intent_id,
                error=repr(exc),
            )

    def _execute_held(
        self,
        invocation: Invocation,
        intent: TradeIntent,
        handle: ReservationHandle,
        fate: OrderFate,
        stale_reason: str | None,
        amount: float | None,
        quote: Quote | None,
        refused: str | None = None,
    ) -> tuple[ExecutionResult, BrokerOrder | None]:
        """The stages run while the lease is held; business outcomes come back as values.

        Returns the result and the broker's order where this attempt placed or found one.
        `refused` names an account limit the acquire found this intent can never pass; `fate`
        follows whether the broker may hold an order this attempt does not know of.
        """

        def finish(
            outcome: Outcome, reason: str | None = None, **fields: object
        ) -> ExecutionResult:
            result = ExecutionResult.for_intent(
                intent, outcome, reason=reason, attempt=handle.attempt, amount_usd=amount, **fields
            )
            emit(
                logger,
                "exec.intent.completed",
                tenant_id=intent.tenant_id,
                broker_account_id=intent.broker_account_id,
                client_intent_id=intent.client_intent_id,
                attempt=handle.attempt,
                outcome=outcome.value,
                reason=reason,
                broker_order_id=result.broker_order_id,
            )
            return result

        account = self._read_account(invocation, intent)
        if handle.attempt > 1 and self._may_reach_broker(account):
            # An earlier attempt may have reached the broker and died before recording it: the
            # order, if any, is the outcome, whatever the gates would say now.
            existing = self._earlier_order(intent, handle.client_order_id)
            fate.unknown = False  # the broker answered for every earlier attempt
            if existing is not None:
                return self._adopt(invocation, intent, existing, finish), existing

        if stale_reason is not None:
            return finish(Outcome.STALE, stale_reason), None
        if amount is None:  # a fresh intent is sized before acquire; kept for the type checker
            raise PriceUnavailableError(f"intent {intent.client_intent_id!r} has no size")
        if quote is None:
            quote = self._best_effort_quote(invocation, intent)
        refusal = self._gates(invocation, intent, amount, quote, account, refused)
        if refusal is not None:
            return finish(*refusal), None

        order = self._call_broker(intent, handle, quote, fate)
        if isinstance(order, BrokerRejectedError):
            return finish(Outcome.REJECTED, f"broker_rejected: {order}"), None
        return self._adopt(invocation, intent, order, finish), order

    def _adopt(
        self,
        invocation: Invocation,
        intent: TradeIntent,
        order: BrokerOrder,
        finish: Callable[..., ExecutionResult],
    ) -> ExecutionResult:
        """The outcome the broker's `order` is: `placed` (booked in the ledger), or `rejected`
        with its id where the broker closed it with nothing filled (`BrokerOrder.never_fills`).

        An order rejected after its id was assigned exists, but never trades: recorded `placed`
        it would disagree with the broker, book a trade in the ledger and count against the
        account's day and position for good. Recorded `rejected`, its hold ends uncounted, as a
        4xx refusal's does: a dead order takes none of the limits' room. Its id is kept, so the
        reconciler meeting it in the broker's listing agrees (`execution.broker_truth`).
        """
        if order.never_fills():
            reason = (
                f"broker_rejected: order {order.broker_order_id} {order.status} at the broker, "
                "nothing filled"
            )
            return finish(Outcome.REJECTED, reason, broker_order_id=order.broker_order_id)
        self._record_ledger(invocation, intent, order)
        return finish(Outcome.PLACED, broker_order_id=order.broker_order_id)

    def _call_broker(
        self, intent: TradeIntent, handle: ReservationHandle, quote: Quote | None, fate: OrderFate
    ) -> BrokerOrder | BrokerRejectedError:
        """Place the order once the lease has room for the call; the broker's refusal is
        returned. The fate is unknown while the call runs: a lost answer may hide an order."""
        reference_price = quote.price_for(intent.side) if quote else None
        if reference_price is None and intent.notional_usd is not None:
            reference_price = intent.notional_usd / intent.qty
        self._check_lease_room(intent, handle)
        request = OrderRequest.from_intent(intent, reference_price, handle.client_order_id)
        fate.unknown = fate.called = True
        try:
            order = self._broker.place_order(request)
        except BrokerRejectedError as exc:
            fate.unknown = False
            return exc
        _check_answer_is_ours(request, order)  # else the fate stays unknown: a retry asks
        fate.unknown = False
        return order

    def _gates(
        self,
        invocation: Invocation,
        intent: TradeIntent,
        amount: float,
        quote: Quote | None,
        account: AccountRead,
        refused: str | None,
    ) -> tuple[Outcome, str | None] | None:
        """Route, risk (with the limit the acquire refused), authority and dry run, in that
        order: the first refusal, or None."""
        route = self._route(intent, quote)
        if not route.allowed:
            return Outcome.REJECTED, route.reason
        risk = self._risk.validate(intent, amount, account)
        emit(
            logger,
            "exec.stage.risk",
            logging.DEBUG,
            client_intent_id=intent.client_intent_id,
            allowed=risk.allowed,
            reason=risk.reason,
        )
        if not risk.allowed:
            return Outcome.REJECTED, risk.reason
        if refused is not None:
            return Outcome.REJECTED, refused
        if account.outage is not None:
            # The account's `trading_mode` is a kill switch: a read the store could not answer
            # never passes for "not halted", even where risk is configured fail-open (retry).
            raise account.outage
        try:
            self._authority.check(
                intent,
                broker_is_paper=self._broker.is_paper,
                switches=invocation.switches,
                account_mode=account.settings.trading_mode if account.settings else None,
            )
        except (AgentModeError, ExecutionHaltedError) as exc:
            return Outcome.HALTED, str(exc)
        emit(
            logger, "exec.stage.authority", logging.DEBUG, client_intent_id=intent.client_intent_id
        )
        if intent.dry_run or self._dry_run:
            return Outcome.DRY_RUN, "intent" if intent.dry_run else "EXECUTION_DRY_RUN"
        return None

    def _may_reach_broker(self, account: AccountRead) -> bool:
        """Whether the trading mode lets this broker be asked anything (OFF/OBSERVE never)."""
        try:
            self._authority.check_mode(
                broker_is_paper=self._broker.is_paper,
                account_mode=account.settings.trading_mode if account.settings else None,
            )
        except AgentModeError:
            return False
        return True

    def _earlier_order(self, intent: TradeIntent, client_order_id: str) -> BrokerOrder | None:
        """The order an earlier attempt placed under `client_order_id`, if it is this intent's.

        Any refusal of the lookup (401/403/404 pages, garbage, 5xx) is an outage, never an answer:
        an earlier attempt may have placed the order, so the delivery is retried rather than
        dead-lettered. An order under our id that is not this intent's is never adopted.
        """
        try:
            found = self._broker.get_order_by_client_order_id(
                intent.tenant_id, intent.broker_account_id, client_order_id
            )
        except BrokerRejectedError as exc:
            raise BrokerTransientError(
                f"looking up client_order_id {client_order_id} was refused ({exc}); an earlier "
                "attempt may have placed the order, so the delivery will be retried"
            ) from exc
        if found is None:
            return None
        mismatch = order_mismatch(OrderRequest.from_intent(intent, None, client_order_id), found)
        if mismatch is not None:
            raise OrderConflictError(
                f"the broker's order {found.broker_order_id} under client_order_id "
                f"{client_order_id} is not this intent's ({mismatch}); it is not adopted"
            )
        return found

    def _check_lease_room(self, intent: TradeIntent, handle: ReservationHandle) -> None:
        """Refuse a broker call that might not end before the lease lapses.

        No read is needed to know the lease is still ours: until `expires_at` no other attempt may
        take the intent over (only a lapsed lease is taken over), the sweeper expires only lapsed
        leases, and only this lease releases it. Their clocks may differ from ours by up to the
        clock skew, so the call must end that much before `expires_at`. A process paused after
        this check can still outlive the lease: the fenced release then settles the record.
        """
        expires_at = handle.expires_at
        if expires_at is None:  # fail-open: no lease is held, so none can be outlived
            return
        now = self._clock()
        if now + self._lease_margin >= expires_at:
            raise LeaseTooShortError(
                f"lease {handle.lease_id} of intent {intent.client_intent_id!r} ends at "
                f"{expires_at.isoformat()}; a broker call (up to {self._lease_margin} with clock "
                "skew) might not end inside it; the delivery will be retried with a fresh lease"
            )

    @staticmethod
    def _record_ledger(invocation: Invocation, intent: TradeIntent, order: BrokerOrder) -> None:
        try:
            invocation.ledger.record_trade(intent, order)
        except Exception as exc:  # the order stands; the ledger is best-effort by contract
            emit(
                logger,
                "exec.ledger_write_failed",
                logging.ERROR,
                client_intent_id=intent.client_intent_id,
                broker_order_id=order.broker_order_id,
                error=repr(exc),
            )

    @staticmethod
    def _reserved_amount(invocation: Invocation, intent: TradeIntent) -> tuple[float, Quote | None]:
        """The amount to reserve and cap: the largest of the declared `notional_usd` and what the
        order is worth at its limit price or, for a market order, the quote (also returned).

        A declared notional may raise the amount, never lower it below the order's worth. A
        market order needs a usable quote to be valued: without one the delivery retries (nothing
        is held yet) rather than reserve blind.
        """
        declared = intent.notional_usd or 0.0
        if intent.limit_price is not None:
            return max(declared, worth_usd(intent.qty, intent.limit_price)), None
        quote = invocation.quotes.latest(intent.symbol)
        price = quote.price_for(intent.side) if quote is not None else None
        if price is None or not math.isfinite(price) or price <= 0:
            raise PriceUnavailableError(
                f"no usable quote at market_quotes/{intent.symbol} (price {price!r}) to value a "
                "market order; publish one"
            )
        return max(declared, worth_usd(intent.qty, price)), quote

    def _stale_reason(self, intent: TradeIntent, published_at: datetime | None) -> str | None:
        return stale_reason(
            created_at=intent.created_at,
            published_at=published_at,
            now=self._clock(),
            max_age_seconds=self._intent_max_age_seconds,
        )

    @staticmethod
    def _read_account(invocation: Invocation, intent: TradeIntent) -> AccountRead:
        """The account settings, read once for risk and authority; a failure is kept, not raised,
        except a wait: the lease was admitted under limits the account no longer has."""
        try:
            return AccountRead(invocation.accounts.get(intent.tenant_id, intent.broker_account_id))
        except LimitWaitError:
            raise
        except StoreUnavailableError as exc:
            return AccountRead(error=f"{type(exc).__name__}: {exc}", outage=exc)
        except Exception as exc:  # risk decides what unreadable limits mean (fail-closed)
            return AccountRead(error=f"{type(exc).__name__}: {exc}")

    @staticmethod
    def _best_effort_quote(invocation: Invocation, intent: TradeIntent) -> Quote | None:
        try:
            return invocation.quotes.latest(intent.symbol)
        except Exception as exc:  # routing is best-effort: an unreadable quote is no quote
            emit(
                logger,
                "exec.route.quote_unavailable",
                logging.WARNING,
                client_intent_id=intent.client_intent_id,
                error=repr(exc),
            )
            return None

    def _route(self, intent: TradeIntent, quote: Quote | None) -> RouteDecision:
        try:
            decision = self._router.route(intent, quote)
        except Exception as exc:  # a faulty router must not block trading: it is advisory
            emit(
                logger,
                "exec.route.failed",
                logging.ERROR,
                client_intent_id=intent.client_intent_id,
                error=repr(exc),
            )
            return RouteDecision(True, "router_failed")
        emit(
            logger,
            "exec.stage.route",
            logging.DEBUG,
            client_intent_id=intent.client_intent_id,
            allowed=decision.allowed,
            reason=decision.reason,
        )
        return decision

    def _recorded(
        self, invocation: Invocation, intent: TradeIntent, record: ReservationRecord
    ) -> ExecutionResult:
        """The intent's final record; where an outlived attempt marked it (`unsettled_order`),
        the broker is asked first and the record repaired to its answer.

        With the trading mode OFF/OBSERVE nothing may reach the broker: the duplicate is acked
        and the marker kept, with an ERROR, for a delivery under another mode or the reconciler.
        """
        if record.unsettled_order is None:
            return self._duplicate(intent, record)
        if not self._may_reach_broker(self._read_account(invocation, intent)):
            emit(
                logger,
                "exec.intent.unsettled_kept",
                logging.ERROR,
                tenant_id=intent.tenant_id,
                client_intent_id=intent.client_intent_id,
                unsettled_order=record.unsettled_order,
            )
            return self._duplicate(intent, record)
        order = self._earlier_order(intent, record.client_order_id)
        settled = self._truth.settle_marked(
            intent.tenant_id, intent.client_intent_id, order, found_by="unsettled_order"
        )
        if settled is Settlement.PENDING:
            raise OutcomeUnrecordedError(
                f"intent {intent.client_intent_id!r}: its record carries an unsettled order "
                "marker that could not be settled yet; the delivery will be retried"
            )
        if order is not None and settled is not Settlement.CONFLICT:
            record = replace(
                record,
                status=ReservationStatus.RELEASED,
                outcome=Outcome.PLACED,
                broker_order_id=order.broker_order_id,
                error=None,
                unsettled_order=None,
            )
        return self._duplicate(intent, record)

    def _duplicate(self, intent: TradeIntent, record: ReservationRecord) -> ExecutionResult:
        emit(
            logger,
            "exec.intent.duplicate",
            tenant_id=intent.tenant_id,
            client_intent_id=intent.client_intent_id,
            recorded_outcome=record.outcome.value if record.outcome else None,
            broker_order_id=record.broker_order_id,
        )
        return ExecutionResult.for_intent(
            intent,
            Outcome.DUPLICATE,
            reason=record.error,
            broker_order_id=record.broker_order_id,
            attempt=record.attempt,
            amount_usd=record.amount_usd,
            recorded_outcome=record.outcome,
        )


@dataclass
class OrderFate:
    """Whether an order under the intent's client order id may exist that this attempt does not
    know of; the release then keeps the intent counting against the account's limits."""

    unknown: bool
    called: bool = False
    """This attempt started a broker call (its own order may exist, not only an earlier one's)."""


def _check_answer_is_ours(request: OrderRequest, order: BrokerOrder) -> None:
    """Raise "outcome unknown" where the broker's answer to our order names another order.

    An answer proves only that something answered (a proxy, a cache, a broker's bug): recorded,
    it would be `placed` with an order the broker's book may not hold for this intent. Retried
    instead, the next attempt asks the broker by client order id, and that answer decides.
    """
    mismatch = order_mismatch(request, order)
    if mismatch is None:
        return
    emit(
        logger,
        "exec.broker.answer_not_ours",
        logging.ERROR,
        tenant_id=request.tenant_id,
        client_order_id=request.client_order_id,
        broker_order_id=order.broker_order_id,
        mismatch=mismatch,
    )
    raise BrokerTransientError(
        f"the broker answered client_order_id {request.client_order_id} with order "
        f"{order.broker_order_id}, which is not this intent's ({mismatch}); outcome unknown, "
        "the delivery will be retried and the broker asked by client order id"
    )


def _reservation_request(
    intent: TradeIntent, amount: float | None, *, fresh: bool
) -> ReservationRequest:
    """What `intent` asks to reserve, under its tenant-safe client order id."""
    return ReservationRequest(
        tenant_id=intent.tenant_id,
        broker_account_id=intent.broker_account_id,
        client_intent_id=intent.client_intent_id,
        symbol=intent.symbol,
        side=intent.side,
        qty=intent.qty,
        amount_usd=amount or 0.0,
        payload_hash=intent.payload_hash(),
        client_order_id=client_order_id_for(
            intent.tenant_id, intent.broker_account_id, intent.client_intent_id
        ),
        # A stale intent is only recorded, never executed: it must not wait for budget.
        enforce_budget=fresh,
    )
