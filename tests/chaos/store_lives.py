"""Which `read_time` snapshots of the chaos rig's Firestore emulator show a whole database.

The rig's outage restarts the emulator with an import of its own export. The emulator imports
lazily, at the first request after the start, and that request returns only once the import is
done; but it commits the import in batches (about 500 documents each, not in path order), each
stamped with its own update time, over a second or more on a busy machine. A read at a
`read_time` inside that window sees the batches stamped before it and not the others: an account's
state document without the reservation whose lease it counts, say (seed 632106, N=1000: one
snapshot saw lease dd94143f "counted but its reservation has no live reservation"). A read at a
`read_time` before the import sees an empty database, and one whose reads were served by two
lives of the emulator mixes them. None of these is a state the product ever wrote.

So the rig tells `StoreLives` when a restart begins and when its import has settled (the first
request answered), and the monitor judges a snapshot only if its `read_time` is at or after the
current life's settlement and no restart began before its last read returned.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Life:
    """One life of the emulator, as a snapshot began in it."""

    number: int


class StoreLives:
    """The emulator's lives: a restart ends one; its settled import starts the next."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._number = 0
        self._restarting = False
        self._settled_at = datetime.min.replace(tzinfo=UTC)

    def restart_begins(self) -> None:
        """The emulator is about to stop: every snapshot not finished yet may mix two lives."""
        with self._lock:
            self._number += 1
            self._restarting = True

    def import_settled(self, at: datetime) -> None:
        """The new life answered its first request at `at`: its import is complete by then."""
        with self._lock:
            self._restarting = False
            self._settled_at = at

    def life_for(self, read_time: datetime) -> Life | None:
        """The life a snapshot at `read_time` may be judged in; None where it would show a
        database the import had not finished writing (or one that is being replaced)."""
        with self._lock:
            if self._restarting or read_time < self._settled_at:
                return None
            return Life(self._number)

    def still(self, life: Life) -> bool:
        """Whether no restart began since `life` was handed out (the reads all came from it)."""
        with self._lock:
            return not self._restarting and life.number == self._number
