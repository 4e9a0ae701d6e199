"""Firestore adapters: the only modules that touch Firestore types (snapshots, batches, options)."""
