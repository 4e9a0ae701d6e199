"""End-to-end fixtures: the Firestore fixtures of the emulator tier, shared."""

from tests.emulator.conftest import db, firestore_project, reset_firestore

__all__ = ["db", "firestore_project", "reset_firestore"]
