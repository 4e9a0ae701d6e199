"""`FirestoreKillSwitches`: `ops/execution_kill_switch` and its per-tenant twin (contract).

Reading them is the engine's (`FirestoreKillSwitches`). Changing one is the operator's
(`change_switch`): every change is decided on a read of the document and written only if the
document is still the one read (`create` where it was absent, else an update or delete
preconditioned on its update time), so two operators, or an operator and the automation,
switching at once never lose a switch: the loser reads again and decides again. Halting is never
lost; a resume (`off`) whose switch moved meanwhile — an `on` landed after it read — stops with
`SwitchMovedError` instead of lifting a halt it never saw.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from google.api_core import exceptions as gexc
from google.cloud import firestore

from execution.documents import KillSwitchDocument
from execution.errors import SwitchMovedError
from execution.firestore.paths import kill_switch_ref
from execution.firestore.support import RACE_ERRORS, CallPolicy, snapshot_data, store_errors

LOST_TO_ANOTHER_WRITER: tuple[type[BaseException], ...] = (*RACE_ERRORS, gexc.NotFound)
"""The document changed (or went) between the read and the conditional write."""

SWITCH_ATTEMPTS = 5
"""Reads and conditional writes one switch change tries before it gives up (operators, not
a storm: a loser needs one more read)."""


def switch_refs(
    db: firestore.Client, tenant_id: str
) -> tuple[firestore.DocumentReference, firestore.DocumentReference]:
    """The global switch and `tenant_id`'s, in the order `engaged_switch` takes them."""
    return kill_switch_ref(db, None), kill_switch_ref(db, tenant_id)


def engaged_switch(
    global_data: dict[str, Any] | None, tenant_data: dict[str, Any] | None
) -> str | None:
    """`global`, `tenant` or None, from the two switch documents (None where absent)."""
    for name, data in (("global", global_data), ("tenant", tenant_data)):
        if data is not None and KillSwitchDocument.parse(data).enabled:
            return name
    return None


class FirestoreKillSwitches:
    """Reads both switch documents in one round trip."""

    def __init__(self, db: firestore.Client, *, policy: CallPolicy) -> None:
        self._db = db
        self._policy = policy

    def engaged(self, tenant_id: str) -> str | None:
        """`global`, `tenant` or None; raises `StoreUnavailableError` rather than guess."""
        global_doc, tenant_doc = switch_refs(self._db, tenant_id)
        with store_errors("kill switch read"):
            snaps = {
                s.reference.path: s
                for s in self._db.get_all([global_doc, tenant_doc], **self._policy.kwargs())
            }
        return engaged_switch(
            snapshot_data(snaps[global_doc.path]), snapshot_data(snaps[tenant_doc.path])
        )


# -- changing a switch -----------------------------------------------------------------------


@dataclass(frozen=True)
class SwitchWrite:
    """What a switch change writes, decided from the document it read: `fields` updated (the
    document created where absent), or the document deleted (`fields` None)."""

    fields: Mapping[str, Any] | None


@dataclass(frozen=True)
class SwitchChange:
    """How one command changes one switch document.

    `decide` turns the document read (None: absent) into the write, or None for nothing to
    write. `switch_of` picks from a document the part that is the switch itself; where
    `only_as_read` is set (a resume), a switch that differs from the first read stops the
    change (`SwitchMovedError`) rather than being decided again.
    """

    decide: Callable[[dict[str, Any] | None], SwitchWrite | None]
    switch_of: Callable[[dict[str, Any] | None], Any]
    only_as_read: bool


def change_switch(
    db: firestore.Client,
    ref: firestore.DocumentReference,
    change: SwitchChange,
    *,
    policy: CallPolicy,
    after_read: Callable[[], None] = lambda: None,
) -> dict[str, Any] | None:
    """Make `change` on `ref` atomically with its read; returns the document it replaced.

    `after_read` runs between each read and its write (a seam for tests that stage a race).
    Raises `SwitchMovedError` where the switch moved under an `only_as_read` change, or the
    document kept changing for `SWITCH_ATTEMPTS` reads; `StoreUnavailableError` on an outage.
    """
    first: Any = None
    for attempt in range(SWITCH_ATTEMPTS):
        with store_errors("kill switch read"):
            snap = ref.get(**policy.kwargs())
        data = snapshot_data(snap)
        if attempt == 0:
            first = change.switch_of(data)
        elif change.only_as_read and change.switch_of(data) != first:
            raise SwitchMovedError(
                f"{ref.path} changed after this command read it; nothing was changed", data
            )
        write = change.decide(data)
        after_read()
        if write is None:
            return data
        try:
            with store_errors("kill switch write"):
                _write_if_unchanged(db, ref, snap, write, policy)
        except LOST_TO_ANOTHER_WRITER:
            continue  # another writer landed first: read it, decide again
        return data
    raise SwitchMovedError(
        f"{ref.path} kept changing while this command tried to change it "
        f"({SWITCH_ATTEMPTS} reads); nothing was changed",
        None,
    )


def _write_if_unchanged(
    db: firestore.Client,
    ref: firestore.DocumentReference,
    snap: firestore.DocumentSnapshot[Any],
    write: SwitchWrite,
    policy: CallPolicy,
) -> None:
    """Write `write` only onto the document `snap` read (raising a `RACE_ERRORS` otherwise)."""
    if not snap.exists:
        if write.fields is not None:
            ref.create(dict(write.fields), **policy.kwargs())
        return
    unchanged = db.write_option(last_update_time=snap.update_time)
    if write.fields is None:
        ref.delete(option=unchanged, **policy.kwargs())
    else:
        ref.update(dict(write.fields), option=unchanged, **policy.kwargs())
