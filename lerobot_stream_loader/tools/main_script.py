"""Can spawned worker processes start from this program's main script without re-running it?

A spawned process imports the main script (as ``__mp_main__``) before it runs a task, so code at
the script's top level runs again in every worker unless it sits under
``if __name__ == "__main__":``. A script read from standard input cannot be imported at all.
:func:`spawn_unsafe_reason` tells, from the call stack and the script's source, whether either
is the case for the current call.
"""

from __future__ import annotations

import ast
import inspect
import sys
from pathlib import Path


def spawn_unsafe_reason() -> str | None:
    """Why processes spawned now would fail or re-run the main script's top-level code, or ``None``
    when they can start safely (no main script, or the call comes from under its main guard)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    path = getattr(spec, "origin", None) or getattr(main, "__file__", None)
    if main is None or path is None:
        return None  # interactive session or ``python -c``: workers do not import a main script
    if not Path(path).is_file():
        return f"the main script ({path}) is not a file that worker processes can import"
    line = _top_level_line(main.__dict__)
    if line is None:
        return None  # not called from the main script's top level (e.g. from another thread)
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=path)
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return None
    if _under_main_guard(tree, line):
        return None
    return (f"the call at {Path(path).name}:{line} is not under `if __name__ == \"__main__\":`, "
            "so every worker process would run that script's top level again")


def _top_level_line(main_globals: dict) -> int | None:
    """The line the main script's top-level code is executing in this thread's stack, if any."""
    frame = inspect.currentframe()
    try:
        while frame is not None:
            if frame.f_globals is main_globals and frame.f_code.co_name == "<module>":
                return frame.f_lineno
            frame = frame.f_back
        return None
    finally:
        del frame


def _under_main_guard(tree: ast.Module, line: int) -> bool:
    for node in tree.body:
        if isinstance(node, ast.If) and _is_main_test(node.test):
            if any(_spans(child, line) for child in node.body):
                return True
    return False


def _spans(node: ast.stmt, line: int) -> bool:
    end = getattr(node, "end_lineno", None) or node.lineno
    return node.lineno <= line <= end


def _is_main_test(test: ast.expr) -> bool:
    """``__name__ == "__main__"`` (either side first)."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = [test.left, test.comparators[0]]
    names = [s for s in sides if isinstance(s, ast.Name) and s.id == "__name__"]
    values = [s for s in sides if isinstance(s, ast.Constant) and s.value == "__main__"]
    return len(names) == 1 and len(values) == 1
