"""Filter text to a bounded, correctly grouped parse tree (RFC 7644 §3.4.2.2).

scim2-filter-parser tokenizes and parses the text. Two things are added here:

- Bounds, checked before anything recursive walks the filter.
- Precedence. The parser gives ``and`` and ``or`` the same precedence and groups from the
  left, so ``a or b and c`` comes out as ``(a or b) and c``; RFC 7644 says ``and`` binds
  tighter (``a or (b and c)``). A parenthesised group comes out wrapped in two ``Filter``
  nodes, an operand of a chain in one, so ``regroup`` can flatten each unparenthesised
  chain and rebuild it with ``and`` before ``or``.

Entra only sends ``attr eq "value"`` (at most one ``emails[type eq "work"]``
value filter), so a filter is refused with 400 ``invalidFilter`` beyond:

- ``MAX_FILTER_LENGTH`` = 4096 characters;
- ``MAX_FILTER_COMPARISONS`` = 50 comparisons (``attr op value`` or ``attr pr``),
  counted on the tokens before parsing;
- ``MAX_FILTER_DEPTH`` = 12 levels, counted on the tokens before parsing (each ``(``
  and ``[``) and on the parse tree (``_levels``: each ``not``, value filter, and group
  of ``and`` or ``or`` that the SQL nests).

Measured by running the compiled query on SQLite 3.40 with the bounds lifted, the smallest
depth that fails ("parser stack overflow"), by shape: 31 for ``a or (b and (c or ...))``
with JSON or login-id leaves, 33 with plain ones; 39 for ``not`` inside a value filter; 42
for nested ``not (...)`` (44 ``not (`` deep was a server error before these bounds) and for
``not (a or not (b and ...))``; 56 for ``not`` around a 20-comparison chain. Alternating
``and``/``or`` without parentheses nested too while the parser's left grouping was used as
is (SQLite overflowed at 171 such comparisons); regrouped, they are an ``or`` of ``and``
chains, two levels. A flat chain fails at 498 ``and``-ed comparisons ("Expression tree is
too large (maximum depth 1000)"). So 12 levels is under 40% of the smallest failing depth
and 50 comparisons 10% of the shortest failing chain. PostgreSQL 15 ran every shape to 2,496
levels ("memory exhausted" in its parser beyond) and chains of 4,096 comparisons.
scim2-filter-parser's parser is an LALR table (3,000 nested parentheses parse without
recursion); the recursion is in this compiler (parentheses 949 deep were a RecursionError)
and in SQLAlchemy's, and the bounds keep both to a few hundred frames.
"""

from __future__ import annotations

import re
from typing import Any

from scim2_filter_parser import ast
from scim2_filter_parser.lexer import SCIMLexer
from scim2_filter_parser.parser import SCIMParser, SCIMParserError

from gateway.web.errors import InvalidFilter, shown

MAX_FILTER_LENGTH = 4096
MAX_FILTER_COMPARISONS = 50
MAX_FILTER_DEPTH = 12

LITERAL = re.compile(r'"([^"]*)"')
PLACEHOLDER = re.compile(r"\x00(\d+)")


def split_literals(text: str) -> tuple[str, list[str]]:
    """Take the quoted values out of a filter: its shape, and the values in order.

    Filters that differ only in their values (every ``userName eq "…"`` Entra sends)
    share one shape, so they are parsed and compiled once.
    """
    values: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        values.append(match.group(1))
        return f'"\x00{len(values) - 1}"'

    return LITERAL.sub(placeholder, text), values


_COMPARISONS = frozenset({"EQ", "NE", "CO", "SW", "EW", "GT", "LT", "GE", "LE", "PR"})
_OPENING = frozenset({"LPAREN", "LBRACKET"})
_CLOSING = frozenset({"RPAREN", "RBRACKET"})


def _unparsable(exc: Exception) -> InvalidFilter:
    reason = shown(str(exc).replace("\x00", ""))
    return InvalidFilter(
        f'The filter cannot be parsed ({reason}). Example of a valid filter: userName eq "'
        'alice@example.com"'
    )


def _too_deep() -> InvalidFilter:
    return InvalidFilter(
        f"The filter nests more than {MAX_FILTER_DEPTH} levels deep (each not, value filter "
        "[...], parenthesis, and change between and and or is a level). Entra sends filters "
        'such as userName eq "alice@contoso.com", which nest none: simplify the filter.'
    )


def _bounded_tokens(shape: str) -> list[Any]:
    """The tokens of a filter shape, refused beyond the nesting and comparison bounds.

    Checked before parsing, so that the tree the compiler walks recursively stays small.
    """
    tokens: list[Any] = []
    depth = comparisons = 0
    try:
        for token in SCIMLexer().tokenize(shape):
            tokens.append(token)
            if token.type in _OPENING:
                depth += 1
                if depth > MAX_FILTER_DEPTH:
                    raise _too_deep()
            elif token.type in _CLOSING:
                depth = max(0, depth - 1)
            elif token.type in _COMPARISONS:
                comparisons += 1
                if comparisons > MAX_FILTER_COMPARISONS:
                    raise InvalidFilter(
                        f"The filter has more than {MAX_FILTER_COMPARISONS} comparisons; "
                        'Entra sends one, such as userName eq "alice@contoso.com".'
                    )
    except ValueError as exc:
        raise _unparsable(exc) from exc
    return tokens


def _levels(node: Any, joined_by: str | None = None) -> int:
    """How deeply the SQL of ``node`` nests: each not, value filter and and/or group.

    A chain of one operator renders flat (SQLAlchemy flattens ``and_(and_(a, b), c)``),
    so it is one level; a change of operator opens another, as does every ``NOT (...)``
    and ``EXISTS (...)``. SQLite's parser keeps about three entries per level.
    """
    if isinstance(node, ast.Filter):
        if node.negated or node.namespace is not None:
            return 1 + _levels(node.expr)
        return _levels(node.expr, joined_by)
    if isinstance(node, ast.LogExpr):
        op = str(node.op).lower()
        own = 0 if joined_by == op else 1
        return own + max(_levels(node.expr1, op), _levels(node.expr2, op))
    if isinstance(node, ast.AttrExpr) and isinstance(node.attr_path.attr_name, ast.Filter):
        return _levels(node.attr_path.attr_name)
    return 0


def _chain_operand(node: Any) -> Any:
    """The ``LogExpr`` of an unparenthesised operand that continues a chain, else None."""
    if (
        isinstance(node, ast.Filter)
        and not node.negated
        and node.namespace is None
        and isinstance(node.expr, ast.LogExpr)
    ):
        return node.expr
    return None


def _flatten(node: Any, operands: list[Any], operators: list[str]) -> None:
    left, right = _chain_operand(node.expr1), _chain_operand(node.expr2)
    if left is not None:
        _flatten(left, operands, operators)
    else:
        operands.append(regroup(node.expr1))
    operators.append(str(node.op).lower())
    if right is not None:
        _flatten(right, operands, operators)
    else:
        operands.append(regroup(node.expr2))


def _joined(op: str, nodes: list[Any]) -> Any:
    joined = nodes[0]
    for node in nodes[1:]:
        joined = ast.Filter(ast.LogExpr(op, joined, node), False, None)
    return joined


def regroup(node: Any) -> Any:
    """``node`` with every chain of ``and``/``or`` grouped as RFC 7644 says: ``and`` first."""
    if isinstance(node, ast.Filter):
        return ast.Filter(regroup(node.expr), node.negated, node.namespace)
    if not isinstance(node, ast.LogExpr):
        return node
    operands: list[Any] = []
    operators: list[str] = []
    _flatten(node, operands, operators)
    terms: list[list[Any]] = [[operands[0]]]
    for operator, operand in zip(operators, operands[1:], strict=True):
        if operator == "and":
            terms[-1].append(operand)
        else:
            terms.append([operand])
    grouped = _joined("or", [_joined("and", term) for term in terms])
    return grouped.expr if isinstance(grouped, ast.Filter) else grouped


def parse_shape(shape: str) -> Any:
    """The parse tree of a filter shape within the bounds, or 400 ``invalidFilter``."""
    tokens = _bounded_tokens(shape)
    try:
        tree = SCIMParser().parse(iter(tokens))
    except (SCIMParserError, ValueError, AttributeError, TypeError) as exc:
        raise _unparsable(exc) from exc
    if tree is None:
        raise InvalidFilter('The filter cannot be parsed. Example: userName eq "a@example.com"')
    tree = regroup(tree)
    if _levels(tree) > MAX_FILTER_DEPTH:
        raise _too_deep()
    return tree
