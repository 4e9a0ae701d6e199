"""errors.py's docstring sketches the exception tree main.py decides ack or retry by: it must be
the tree the module defines, every error under its own parent."""

from __future__ import annotations

import inspect
import re

from execution import errors

ERROR_NAME = re.compile(r"[A-Z]\w+Error\b")


def drawn_parents() -> dict[str, str | None]:
    """Each error named in the docstring's tree, and the error drawn above it (None: the root)."""
    parents: dict[str, str | None] = {}
    stack: list[tuple[int, str]] = []
    for line in (errors.__doc__ or "").splitlines():
        match = ERROR_NAME.search(line)
        if match is None or not line.startswith("    "):
            continue
        depth, name = match.start(), match.group()  # a child is drawn right of its parent
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parents[name] = stack[-1][1] if stack else None
        stack.append((depth, name))
    return parents


def defined_parents() -> dict[str, str | None]:
    """Each error class errors.py defines, and its base (None for the root)."""
    classes = inspect.getmembers(errors, inspect.isclass)
    return {
        name: (None if cls is errors.ExecutionError else cls.__bases__[0].__name__)
        for name, cls in classes
        if cls.__module__ == errors.__name__
    }


def test_the_docstring_tree_is_the_module_s_exception_tree() -> None:
    assert drawn_parents() == defined_parents()
