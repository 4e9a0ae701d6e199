"""Test package: lets test modules import `tests.support` helpers by name."""
