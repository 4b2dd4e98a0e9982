"""The shape the code keeps (docs/design.rst, issue 10): no class over 300 lines and
no function over 60 in redbeat/, counted from ``class``/``def`` to their last line.
Cyclomatic complexity (at most 10) is ruff's C901, set in pyproject.toml."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "redbeat"
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60


def oversized(path: Path) -> list[str]:
    """Each class and function of ``path`` over its limit, as 'file:line name (n lines)'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ClassDef):
            limit = MAX_CLASS_LINES
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            limit = MAX_FUNCTION_LINES
        else:
            continue
        assert node.end_lineno is not None
        lines = node.end_lineno - node.lineno + 1
        if lines > limit:
            found.append(f"{path.name}:{node.lineno} {node.name} ({lines} lines, at most {limit})")
    return found


def test_no_class_or_function_in_redbeat_is_over_its_line_limit():
    modules = sorted(PACKAGE.glob("*.py"))
    assert modules
    offenders = [offender for path in modules for offender in oversized(path)]
    assert not offenders, "\n".join(offenders)
