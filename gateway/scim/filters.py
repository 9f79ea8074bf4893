"""SCIM filters (RFC 7644 §3.4.2.2) compiled to SQLAlchemy expressions.

scim2-filter-parser turns the filter text into a parse tree; this module walks the tree
and builds a WHERE clause over ``scim_users`` (and EXISTS sub-queries over
``scim_user_values`` for emails and phone numbers, ``scim_claims`` for the login id).
Values are always bound parameters. An attribute the gateway cannot filter on is an
``invalidFilter`` error, never a clause that matches everything: a filter that silently
matched every user would make Entra link the wrong account or create duplicates.

Every leaf is built to be TRUE or FALSE, never NULL (a comparison on an absent value
is FALSE), so ``not`` and ``ne`` mean what SCIM says they mean.

userName, emails and the login id compare by their folded key (``gateway.folding.fold``: NFKC,
case folding, no surrounding whitespace), the same key that makes them unique, so
``userName eq "Alice@Contoso.com "`` finds ``alice@contoso.com``, and so does the
same address in fullwidth letters (U+FF41...).

The text is bounded and parsed in ``filter_parsing``.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from scim2_filter_parser import ast
from sqlalchemy import ColumnElement, and_, bindparam, exists, func, not_, or_, select, true

from gateway.folding import fold
from gateway.scim.filter_parsing import (
    MAX_FILTER_LENGTH,
    PLACEHOLDER,
    parse_shape,
    split_literals,
)
from gateway.scim.schema import CLOUDLINK_USER, CORE_USER, ENTERPRISE_USER
from gateway.web.errors import InvalidFilter, InvalidValue, shown
from gateway.web.params import parse_iso8601
from storage.tables import SCIM_CLAIMS, SCIM_USER_VALUES, SCIM_USERS

claims = SCIM_CLAIMS
values = SCIM_USER_VALUES
users = SCIM_USERS

Kind = Literal["key", "ci", "exact", "bool", "datetime"]

document = users.c.document


@dataclass(frozen=True)
class Target:
    """A filterable single-valued attribute: its SQL expression and how it compares.

    A ``key`` target is a folded key column (the filter value is folded by
    ``gateway.folding.fold``); a ``ci`` target is ``lower()`` of a stored value (the filter value
    is lower-cased to match).
    """

    column: Any
    kind: Kind


def _json(*path: str, kind: Kind = "ci") -> Target:
    column = document[path].as_string()
    return Target(func.lower(column) if kind == "ci" else column, kind)


# (schema URN, attribute, sub-attribute), lower-cased -> target.
SIMPLE: dict[tuple[str, str, str | None], Target] = {
    (CORE_USER, "id", None): Target(users.c.id, "exact"),
    (CORE_USER, "externalid", None): Target(users.c.external_id, "exact"),
    (CORE_USER, "username", None): Target(users.c.user_name_key, "key"),
    (CORE_USER, "displayname", None): Target(func.lower(users.c.display_name), "ci"),
    (CORE_USER, "name", "givenname"): Target(func.lower(users.c.given_name), "ci"),
    (CORE_USER, "name", "familyname"): Target(func.lower(users.c.family_name), "ci"),
    (CORE_USER, "name", "formatted"): _json("name", "formatted"),
    (CORE_USER, "active", None): Target(users.c.active, "bool"),
    (CORE_USER, "meta", "created"): Target(users.c.created_at, "datetime"),
    (CORE_USER, "meta", "lastmodified"): Target(users.c.updated_at, "datetime"),
    (CLOUDLINK_USER, "extension", None): Target(users.c.extension, "exact"),
    (ENTERPRISE_USER, "manager", "value"): _json(ENTERPRISE_USER, "manager", "value", kind="exact"),
}
for _name in ("employeeNumber", "costCenter", "organization", "division", "department"):
    SIMPLE[(ENTERPRISE_USER, _name.lower(), None)] = _json(ENTERPRISE_USER, _name)

# Attributes compared through the user's claim of that kind (its folded key).
CLAIMED: dict[tuple[str, str, str | None], str] = {(CLOUDLINK_USER, "loginid", None): "loginId"}

# Multi-valued attributes kept in scim_user_values, and how each sub-attribute compares.
MULTI: dict[str, str] = {"emails": "emails", "phonenumbers": "phoneNumbers"}
MULTI_VALUE_KIND: dict[str, Kind] = {"emails": "key", "phoneNumbers": "exact"}

FILTERABLE = sorted(
    [
        "id",
        "externalId",
        "userName",
        "displayName",
        "name.givenName",
        "name.familyName",
        "name.formatted",
        "active",
        "meta.created",
        "meta.lastModified",
        "emails",
        "emails.value",
        "emails.type",
        "emails.primary",
        'emails[type eq "work"].value',
        "phoneNumbers",
        "phoneNumbers.value",
        "phoneNumbers.type",
        "phoneNumbers.primary",
        f"{CLOUDLINK_USER}:extension",
        f"{CLOUDLINK_USER}:loginId",
        f"{ENTERPRISE_USER}:employeeNumber",
        f"{ENTERPRISE_USER}:department",
        f"{ENTERPRISE_USER}:manager.value",
    ]
)

_ORDERING = {"gt", "ge", "lt", "le"}
_OPERATORS = {"eq", "ne", "co", "sw", "ew", "pr", *_ORDERING}


def _unknown_attribute(name: str) -> InvalidFilter:
    return InvalidFilter(
        f'Cannot filter on "{shown(name)}": the gateway filters on {", ".join(FILTERABLE)}. '
        "In Entra, choose one of these as the matching attribute."
    )


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _parse_bool(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in {"true", "false"}:
        return lowered == "true"
    raise InvalidFilter(f'"{shown(raw)}" is not a boolean; compare with true or false.')


def _is_iso8601(raw: str) -> bool:
    """Whether ``raw`` is written as an ISO 8601 date-time (whatever its range)."""
    try:
        datetime.fromisoformat(raw.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return False
    return True


def _parse_datetime(raw: str) -> datetime:
    """A date-time to compare meta.created / meta.lastModified with.

    A malformed one is a bad filter; a well-formed one outside what the databases store
    and compare (``0001-01-01T00:00:00+14:00`` is before year 1 in UTC) is a bad value.
    """
    try:
        return parse_iso8601(raw)
    except ValueError as exc:
        if _is_iso8601(raw):
            raise InvalidValue(
                f'"{shown(raw)}" is outside years 1 to 9999 once converted to UTC; compare '
                "meta.created and meta.lastModified with a date-time in that range, e.g. "
                "2026-01-31T12:00:00Z."
            ) from exc
        raise InvalidFilter(
            f'"{shown(raw)}" is not a date-time; use ISO 8601, e.g. 2026-01-31T12:00:00Z.'
        ) from exc


def _lowered(raw: str) -> str:
    """A filter value compared with ``lower()`` of a stored value (a ``ci`` target)."""
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", raw).lower())


Binder = Callable[[str, Callable[[str], Any]], Any]


def _converter(kind: Kind, op: str) -> Callable[[str], Any]:
    """How a filter value becomes the SQL value compared with a column of ``kind``."""
    if kind == "bool":
        if op != "eq":
            raise InvalidFilter(f'Operator "{op}" does not apply to a boolean; use eq or ne.')
        return _parse_bool
    if kind == "datetime":
        if op in {"co", "sw", "ew"}:
            raise InvalidFilter(f'Operator "{op}" does not apply to a date-time.')
        return _parse_datetime
    bases: dict[Kind, Callable[[str], str]] = {"key": fold, "ci": _lowered}
    base = bases.get(kind, str)
    patterns = {"co": "%{}%", "sw": "{}%", "ew": "%{}"}
    if op in patterns:
        pattern = patterns[op]
        return lambda raw: pattern.format(_like_escape(base(raw)))
    return base


def _compare(
    column: Any, kind: Kind, op: str, raw: str | None, bind: Binder
) -> ColumnElement[bool]:
    """A null-safe comparison of ``column`` with the filter value ``raw``."""
    if op == "pr":
        present = column.is_not(None)
        return and_(present, column != "") if kind in {"key", "ci", "exact"} else present
    assert raw is not None
    if op == "ne":
        return not_(_compare(column, kind, "eq", raw, bind))
    value = bind(raw, _converter(kind, op))
    builders: dict[str, Callable[[], ColumnElement[bool]]] = {
        "eq": lambda: column == value,
        "gt": lambda: column > value,
        "ge": lambda: column >= value,
        "lt": lambda: column < value,
        "le": lambda: column <= value,
        "co": lambda: column.like(value, escape="\\"),
        "sw": lambda: column.like(value, escape="\\"),
        "ew": lambda: column.like(value, escape="\\"),
    }
    return and_(column.is_not(None), builders[op]())


class _Compiler:
    """Walks one parse tree; ``scope`` is set while inside ``emails[...]``."""

    def __init__(self) -> None:
        self.scope: tuple[Any, str] | None = None
        self.converters: dict[int, Callable[[str], Any]] = {}

    def bind(self, raw: str, convert: Callable[[str], Any]) -> Any:
        """A bound parameter for a value taken out of the filter, else the converted literal."""
        match = PLACEHOLDER.fullmatch(raw)
        if match is None:
            return convert(raw)
        index = int(match.group(1))
        self.converters[index] = convert
        return bindparam(f"fv{index}")

    def node(self, node: Any) -> ColumnElement[bool]:
        if isinstance(node, ast.Filter):
            if node.namespace is not None:
                compiled = self._value_path(node.namespace, node.expr, None)
            else:
                compiled = self.node(node.expr)
            return not_(compiled) if node.negated else compiled
        if isinstance(node, ast.LogExpr):
            left, right = self.node(node.expr1), self.node(node.expr2)
            return and_(left, right) if node.op.lower() == "and" else or_(left, right)
        if isinstance(node, ast.AttrExpr):
            return self._attr_expr(node)
        raise InvalidFilter("Unsupported filter expression.")

    def _attr_expr(self, node: Any) -> ColumnElement[bool]:
        op = str(node.value).lower()
        if op not in _OPERATORS:
            raise InvalidFilter(f'Unknown operator "{node.value}".')
        raw = None if node.comp_value is None else str(node.comp_value.value)
        path = node.attr_path
        if isinstance(path.attr_name, ast.Filter):
            value_path = path.attr_name
            return self._value_path(value_path.namespace, value_path.expr, (op, raw))
        if self.scope is not None:
            return self._sub_attribute(path.attr_name, path.sub_attr, op, raw)
        urn = (path.uri or CORE_USER).rstrip(":")
        name = str(path.attr_name)
        sub = path.sub_attr.value if path.sub_attr is not None else None
        multi = MULTI.get(name.lower()) if urn == CORE_USER else None
        if multi is not None:
            return self._exists(multi, None, (op, raw), sub or "value")
        key = (urn, name.lower(), sub.lower() if sub else None)
        if key in CLAIMED:
            return self._claimed(CLAIMED[key], op, raw)
        target = SIMPLE.get(key)
        if target is None:
            label = f"{path.uri}:{name}" if path.uri else name
            raise _unknown_attribute(f"{label}.{sub}" if sub else label)
        return _compare(target.column, target.kind, op, raw, self.bind)

    def _claimed(self, kind: str, op: str, raw: str | None) -> ColumnElement[bool]:
        """A comparison with the folded key of the user's claim of ``kind`` (none: absent).

        ``ne`` is the negation of ``eq`` over the claim, so a user without one matches it,
        as with every other attribute.
        """
        if op == "ne":
            return not_(self._claimed(kind, "eq", raw))
        alias = claims.alias()
        clauses = [
            alias.c.account_id == users.c.account_id,
            alias.c.kind == kind,
            alias.c.user_pk == users.c.pk,
        ]
        if op != "pr":
            clauses.append(_compare(alias.c.value_key, "key", op, raw, self.bind))
        return exists(select(alias.c.user_pk).where(*clauses).correlate(users))

    def _value_path(
        self, namespace: Any, inner: Any, comparison: tuple[str, str | None] | None
    ) -> ColumnElement[bool]:
        if self.scope is not None or namespace.uri not in (None, CORE_USER):
            raise InvalidFilter("Nested value filters are not supported.")
        multi = MULTI.get(str(namespace.attr_name).lower())
        if multi is None:
            raise _unknown_attribute(f"{namespace.attr_name}[...]")
        sub = namespace.sub_attr.value if namespace.sub_attr is not None else "value"
        return self._exists(multi, inner, comparison, sub)

    def _exists(
        self,
        attribute: str,
        inner: Any,
        comparison: tuple[str, str | None] | None,
        sub: str,
    ) -> ColumnElement[bool]:
        alias = values.alias()
        clauses = [
            alias.c.user_pk == users.c.pk,
            alias.c.attribute == attribute,
        ]
        self.scope = (alias, attribute)
        try:
            if inner is not None:
                clauses.append(self.node(inner))
            if comparison is not None:
                clauses.append(self._sub_attribute(sub, None, *comparison))
        finally:
            self.scope = None
        return exists(select(alias.c.pk).where(*clauses).correlate(users))

    def _sub_attribute(self, name: Any, sub: Any, op: str, raw: str | None) -> ColumnElement[bool]:
        assert self.scope is not None
        alias, attribute = self.scope
        key = str(name).lower()
        if sub is not None or key not in {"value", "type", "primary"}:
            raise _unknown_attribute(f"{attribute}.{name}")
        if key == "value":
            return _compare(alias.c.value_key, MULTI_VALUE_KIND[attribute], op, raw, self.bind)
        if key == "type":
            return _compare(alias.c.type, "ci", op, raw, self.bind)
        return _compare(alias.c.primary, "bool", op, raw, self.bind)


@dataclass(frozen=True, eq=False)
class CompiledFilter:
    """A filter shape compiled once: its WHERE clause and how to bind each value."""

    where: ColumnElement[bool]
    converters: tuple[Callable[[str], Any], ...]
    # No filter: every user of the account (paged from its kept count and positions).
    everything: bool = False

    def parameters(self, values: list[str]) -> dict[str, Any]:
        """The bound values for one request (raises ``InvalidFilter`` on a bad value)."""
        return {f"fv{i}": convert(values[i]) for i, convert in enumerate(self.converters)}


@functools.lru_cache(maxsize=1024)
def compile_shape(shape: str) -> CompiledFilter:
    """Parse and compile a filter shape (see ``split_literals``); cached."""
    if not shape.strip():
        return CompiledFilter(true(), (), everything=True)
    tree = parse_shape(shape)
    compiler = _Compiler()
    where = compiler.node(tree)
    converters = tuple(compiler.converters[i] for i in sorted(compiler.converters))
    if len(converters) != len(compiler.converters) or (
        converters and max(compiler.converters) != len(converters) - 1
    ):
        raise InvalidFilter("Every quoted value of the filter must be compared with something.")
    return CompiledFilter(where, converters)


def compile_filter(text: str) -> tuple[CompiledFilter, dict[str, Any]]:
    """Compile a SCIM filter to a WHERE clause over ``scim_users`` and its bound values."""
    if len(text) > MAX_FILTER_LENGTH:
        raise InvalidFilter(f"The filter is longer than {MAX_FILTER_LENGTH} characters.")
    if "\x00" in text:  # also keeps the placeholders of split_literals unambiguous
        raise InvalidFilter("The filter may not contain NUL characters.")
    shape, values = split_literals(text)
    compiled = compile_shape(shape)
    if len(compiled.converters) != len(values):
        raise InvalidFilter("Every quoted value of the filter must be compared with something.")
    return compiled, compiled.parameters(values)
