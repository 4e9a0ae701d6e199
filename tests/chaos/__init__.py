"""The chaos suite: a seeded storm of intents and faults, then the invariants that must hold."""
