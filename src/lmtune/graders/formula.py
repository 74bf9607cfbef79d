"""A multi grader's `calculate_output`: an arithmetic formula over sub-grader scores, parsed, never eval'd.

Usage:
    formula = parse_formula("0.8 * correct + 0.2 * min(format, 1)", {"correct", "format"})
    formula({"correct": 1.0, "format": 0.5})      # 0.9

Python's `ast` parses the text; only numbers, sub-grader names, + - * / ** ^ (as power), unary +/-,
parentheses and the functions below pass the whitelist. Anything else (attributes, calls of other
names, comparisons, strings) is a FormulaError naming it.
"""

from __future__ import annotations

import ast
import math
import operator
from typing import Callable

FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil, "round": round,
    "sqrt": math.sqrt, "log": math.log, "exp": math.exp,
}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class FormulaError(ValueError):
    """calculate_output does not parse, or uses something outside the whitelist (formula_parse_error)."""


def _check(node: ast.AST, names: set[str], text: str) -> None:
    if isinstance(node, ast.Expression):
        return _check(node.body, names, text)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return None
    if isinstance(node, ast.Name):
        if node.id not in names:
            raise FormulaError(f"calculate_output {text!r}: {node.id!r} is not a sub-grader "
                               f"(known: {', '.join(sorted(names)) or 'none'})")
        return None
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        _check(node.left, names, text)
        return _check(node.right, names, text)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _check(node.operand, names, text)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS \
            and not node.keywords and node.args:
        for arg in node.args:
            _check(arg, names, text)
        return None
    shown = ast.get_source_segment(text, node) or type(node).__name__
    raise FormulaError(f"calculate_output {text!r}: {shown!r} is not allowed (numbers, sub-grader names, "
                       f"+ - * / ^ and {', '.join(FUNCTIONS)})")


def _evaluate(node: ast.AST, scores: dict[str, float]) -> float:
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, scores)
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(scores[node.id])
    if isinstance(node, ast.BinOp):
        return float(_BINARY[type(node.op)](_evaluate(node.left, scores), _evaluate(node.right, scores)))
    if isinstance(node, ast.UnaryOp):
        return float(_UNARY[type(node.op)](_evaluate(node.operand, scores)))
    call = node  # _check allowed nothing else
    return float(FUNCTIONS[call.func.id](*(_evaluate(a, scores) for a in call.args)))  # type: ignore[attr-defined]


def parse_formula(text: str, names: set[str]) -> Callable[[dict[str, float]], float]:
    """The formula as a function of the sub-grader scores; FormulaError when it is not allowed."""
    try:
        # "^" is power, binding tighter than * and / as in mathematics (Python's "^" would bind loosest).
        tree = ast.parse(text.strip().replace("^", "**"), mode="eval")
        _check(tree, names, text.strip().replace("^", "**"))
    except SyntaxError as err:
        raise FormulaError(f"calculate_output {text!r} does not parse: {err.msg}") from err
    except RecursionError as err:
        raise FormulaError(f"calculate_output is nested too deeply ({len(text)} characters)") from err

    def formula(scores: dict[str, float]) -> float:
        try:
            value = _evaluate(tree, scores)
        except (ZeroDivisionError, ValueError, OverflowError, TypeError) as err:
            raise FormulaError(f"calculate_output {text!r}: {err} with scores {scores}") from err
        if not math.isfinite(value):
            raise FormulaError(f"calculate_output {text!r} gave {value} with scores {scores}")
        return value

    return formula
