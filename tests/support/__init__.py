"""Helpers shared by the emulator and end-to-end tests: real fault injection, not mocks."""
