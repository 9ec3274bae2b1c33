"""Which symbolic-size expressions of a `.pt2` archive may reach `sympy.sympify` (layer 1).

`sympify` is `eval`, so an expression must be plain arithmetic: symbols
(s0, u3, zuf0, ...), the functions and assumptions torch writes, sympy's
numbers. And arithmetic on constants is computed when parsed: `9**9**9**9`
is a number with more digits than atoms in the universe, and sympy would try.
So the magnitude of every constant sub-result is bounded first, from the
expression's syntax alone (`MAX_BITS`).
"""

from __future__ import annotations

import ast
import io
import math
import re
import tokenize

# No tensor size reaches 2**63; 2**256 leaves room for strides and products of
# many symbols, and every constant sympy would compute stays instant.
MAX_BITS = 256

_SYMBOL = re.compile(r"[a-z]+[0-9]+")
_QUOTED_SYMBOL = re.compile(r"""(['"])[A-Za-z][A-Za-z0-9_]*\1""")
_NUMBER = re.compile(r"[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
EXPR_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Max", "Min", "Abs", "Eq", "Ne", "Lt", "Le",
    "Gt", "Ge", "LessThan", "StrictLessThan", "GreaterThan", "StrictGreaterThan", "Equality",
    "Unequality", "And", "Or", "Not", "Mul", "Add", "Pow", "Mod", "floor", "ceiling", "sqrt",
    "oo", "zoo", "nan", "True", "False", "Piecewise",
    "FloorDiv", "ModularIndexing", "Where", "PythonMod", "CleanDiv", "CeilToInt", "FloorToInt",
    "CeilDiv", "LShift", "RShift", "PowByNatural", "FloatPow", "FloatTrueDiv", "IntTrueDiv",
    "IsNonOverlappingAndDenseIndicator", "TruncToFloat", "TruncToInt", "RoundToInt",
    "RoundDecimal", "ToFloat", "Identity", "BitwiseFn_bitwise_and", "BitwiseFn_bitwise_or",
    "OpaqueUnaryFn_sqrt", "OpaqueUnaryFn_exp", "OpaqueUnaryFn_log",
    "integer", "positive", "negative", "nonnegative", "nonpositive", "real", "finite",
    "zero", "nonzero", "even", "odd", "rational", "commutative",
})
_EXPR_OPS = frozenset({"+", "-", "*", "/", "//", "%", "**", "(", ")", ",", "=", "<", ">", "<=",
                       ">=", "==", "!=", "&", "|", "~"})
_POWERS = frozenset({"Pow", "PowByNatural", "FloatPow"})
_EXP = frozenset({"OpaqueUnaryFn_exp"})


def is_plain_arithmetic(expr: str) -> bool:
    """True when `expr` uses only symbols, numbers, arithmetic and torch's shape functions,
    and no constant in it, computed, exceeds 2**MAX_BITS."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(expr).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return False
    for tok in tokens:
        if tok.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER):
            continue
        if tok.type == tokenize.NUMBER and _NUMBER.fullmatch(tok.string):
            continue
        if tok.type == tokenize.NAME and (tok.string in EXPR_NAMES or _SYMBOL.fullmatch(tok.string)):
            continue
        if tok.type == tokenize.OP and tok.string in _EXPR_OPS:
            continue
        if tok.type == tokenize.STRING and _QUOTED_SYMBOL.fullmatch(tok.string):
            continue
        return False
    return magnitude_bits(expr) <= MAX_BITS


def magnitude_bits(expr: str) -> float:
    """An upper bound on log2 of the largest number sympy would compute for `expr`
    (a symbol counts as one bit: it stays a symbol); inf when it cannot be read."""
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return math.inf
    try:
        return _bits(tree.body)
    except RecursionError:
        return math.inf


def _bits(node: ast.AST) -> float:
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or isinstance(value, str):
            return 1.0
        if isinstance(value, (int, float)):
            return _log2(abs(value))
        return math.inf
    if isinstance(node, ast.Name):
        return 1.0
    if isinstance(node, ast.UnaryOp):
        return _bits(node.operand)
    if isinstance(node, ast.BinOp):
        return _combine(type(node.op).__name__, [node.left, node.right])
    if isinstance(node, (ast.Compare, ast.BoolOp)):
        parts = [node.left, *node.comparators] if isinstance(node, ast.Compare) else node.values
        return max(_bits(p) for p in parts)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return _combine(node.func.id, list(node.args))
    return math.inf


def _combine(op: str, args: list[ast.AST]) -> float:
    if not args:
        return 1.0
    bits = [_bits(a) for a in args]
    if op in ("Mult", "Mul"):
        return sum(bits)
    if op in ("Add", "Sub"):
        return max(bits) + _log2(len(bits))
    if op in ("Pow", *_POWERS) and len(bits) == 2:
        return _power(bits[0], bits[1])
    if op == "LShift" and len(bits) == 2:
        return bits[0] + _value_bound(bits[1])
    if op in _EXP:
        return _value_bound(bits[0]) * math.log2(math.e)
    # Division, modulo, min/max, comparisons, rounding: no larger than their largest argument.
    return max(bits)


def _power(base_bits: float, exponent_bits: float) -> float:
    # |a ** b| <= 2 ** (bits(a) * |b|), and |b| <= 2 ** bits(b).
    return max(base_bits, 1.0) * _value_bound(exponent_bits)


def _value_bound(bits: float) -> float:
    return math.inf if bits > 1024 else 2.0 ** bits


def _log2(value: float) -> float:
    return math.log2(value + 1) if value == value and value != math.inf else math.inf
