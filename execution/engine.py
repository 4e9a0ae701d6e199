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
from datetime import datetime

from execution.accounts import AccountRead
from execution.authority import Authority
from execution.brokers.base import Broker
from execution.clock import Clock
from execution.errors import (
    AgentModeError,
    BrokerRejectedError,
    ExecutionHaltedError,
    OutcomeUnrecordedError,
    PriceUnavailableError,
    StoreUnavailableError,
)
from execution.freshness import stale_reason
from execution.invocation import Invocation, InvocationStore
from execution.models import BrokerOrder, ExecutionResult, OrderRequest, Outcome, TradeIntent
from execution.reservations import (
    AlreadyExecuted,
    ReservationHandle,
    ReservationRecord,
    ReservationRequest,
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
        clock: Clock,
        intent_max_age_seconds: float,
        dry_run: bool = False,
    ) -> None:
        self._store = store
        self._router = router
        self._risk = risk
        self._authority = authority
        self._broker = broker
        self._clock = clock
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
        amount = intent.known_notional_usd()
        if amount is None and stale_reason is None:
            # A market order sized in shares: its reservation is priced from the quote, so a
            # store outage here must retry (nothing is held yet) rather than reserve blind.
            quote = invocation.quotes.latest(intent.symbol)
            if quote is None:
                raise PriceUnavailableError(
                    f"no quote at market_quotes/{intent.symbol} to size a market order in shares; "
                    "publish one, or give the intent notional_usd"
                )
            amount = intent.qty * quote.price_for(intent.side)

        acquisition = invocation.reservations.acquire(
            ReservationRequest(
                tenant_id=intent.tenant_id,
                broker_account_id=intent.broker_account_id,
                client_intent_id=intent.client_intent_id,
                symbol=intent.symbol,
                side=intent.side,
                qty=intent.qty,
                amount_usd=amount or 0.0,
                payload_hash=intent.payload_hash(),
                # A stale intent is only recorded, never executed: it must not wait for budget.
                enforce_budget=stale_reason is None,
            )
        )
        if isinstance(acquisition, AlreadyExecuted):
            return self._duplicate(intent, acquisition.record)

        handle = acquisition.handle
        result: ExecutionResult | None = None
        error: str | None = None
        recorded = False
        try:
            result = self._execute_held(
                invocation, intent, handle.attempt, stale_reason, amount, quote
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
                self._release(handle, intent, Outcome.EXCEPTION, error, None)
            else:
                recorded = self._release(
                    handle, intent, result.outcome, result.reason, result.broker_order_id
                )
            self._finish(invocation, intent)
        if not recorded:
            # Acking now would leave the record to the sweeper (`expired`) while, say, the broker
            # holds the order: redeliver; the next attempt finds the order by its client order id.
            raise OutcomeUnrecordedError(
                f"intent {intent.client_intent_id!r} ended {result.outcome.value} but the store "
                "could not record it; the delivery will be retried to record it"
            )
        return result

    @staticmethod
    def _release(
        handle: ReservationHandle,
        intent: TradeIntent,
        outcome: Outcome,
        error: str | None,
        broker_order_id: str | None,
    ) -> bool:
        """Release; False where the outcome is not recorded. Contains a handle that raises.

        A raise here would replace the outcome (a placed order would look failed) or mask the
        original exception; the lease then lapses and the redelivery or the sweeper records it.
        """
        try:
            return handle.release(outcome, error=error, broker_order_id=broker_order_id)
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
            return False

    @staticmethod
    def _finish(invocation: Invocation, intent: TradeIntent) -> None:
        """Write what the release did not carry; contained like the release, for the same reason."""
        try:
            invocation.finish()
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
        attempt: int,
        stale_reason: str | None,
        amount: float | None,
        quote: Quote | None,
    ) -> ExecutionResult:
        """The stages run while the lease is held; business outcomes come back as values."""

        def finish(
            outcome: Outcome, reason: str | None = None, **fields: object
        ) -> ExecutionResult:
            result = ExecutionResult.for_intent(
                intent, outcome, reason=reason, attempt=attempt, amount_usd=amount, **fields
            )
            emit(
                logger,
                "exec.intent.completed",
                tenant_id=intent.tenant_id,
                broker_account_id=intent.broker_account_id,
                client_intent_id=intent.client_intent_id,
                attempt=attempt,
                outcome=outcome.value,
                reason=reason,
                broker_order_id=result.broker_order_id,
            )
            return result

        if attempt > 1:
            # An earlier attempt may have reached the broker and died before recording it: the
            # order, if any, is the outcome, whatever the gates would say now.
            existing = self._broker.get_order_by_client_order_id(
                intent.tenant_id, intent.broker_account_id, intent.client_intent_id
            )
            if existing is not None:
                self._record_ledger(invocation, intent, existing)
                return finish(Outcome.PLACED, broker_order_id=existing.broker_order_id)

        if stale_reason is not None:
            return finish(Outcome.STALE, stale_reason)
        if amount is None:  # a fresh intent is sized before acquire; kept for the type checker
            raise PriceUnavailableError(f"intent {intent.client_intent_id!r} has no size")

        if quote is None:
            quote = self._best_effort_quote(invocation, intent)
        route = self._route(intent, quote)
        if not route.allowed:
            return finish(Outcome.REJECTED, route.reason)

        account = self._read_account(invocation, intent)
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
            return finish(Outcome.REJECTED, risk.reason)

        try:
            self._authority.check(
                intent,
                broker_is_paper=self._broker.is_paper,
                switches=invocation.switches,
                account_mode=account.settings.trading_mode if account.settings else None,
            )
        except (AgentModeError, ExecutionHaltedError) as exc:
            return finish(Outcome.HALTED, str(exc))
        emit(
            logger, "exec.stage.authority", logging.DEBUG, client_intent_id=intent.client_intent_id
        )

        if intent.dry_run or self._dry_run:
            return finish(Outcome.DRY_RUN, "intent" if intent.dry_run else "EXECUTION_DRY_RUN")

        reference_price = quote.price_for(intent.side) if quote else None
        if reference_price is None and intent.notional_usd is not None:
            reference_price = intent.notional_usd / intent.qty
        try:
            order = self._broker.place_order(OrderRequest.from_intent(intent, reference_price))
        except BrokerRejectedError as exc:
            return finish(Outcome.REJECTED, f"broker_rejected: {exc}")

        self._record_ledger(invocation, intent, order)
        return finish(Outcome.PLACED, broker_order_id=order.broker_order_id)

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

    def _stale_reason(self, intent: TradeIntent, published_at: datetime | None) -> str | None:
        return stale_reason(
            created_at=intent.created_at,
            published_at=published_at,
            now=self._clock(),
            max_age_seconds=self._intent_max_age_seconds,
        )

    @staticmethod
    def _read_account(invocation: Invocation, intent: TradeIntent) -> AccountRead:
        """The account settings, read once for risk and authority; a failure is kept, not raised."""
        try:
            return AccountRead(invocation.accounts.get(intent.tenant_id, intent.broker_account_id))
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
