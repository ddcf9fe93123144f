"""Data-ID queries: the ``where`` language, keyword constraints and result ordering.

A query is a `Predicate` tree, evaluated two ways that give identical answers: in Python
(`Predicate.matches`, for repositories listed without an index) and as a SQL boolean
expression with bound parameters (`Predicate.to_sql`, for the dataset index). Both follow
SQL: integers compare numerically, strings by Unicode code point (the index uses binary
collation), and a dimension without a value is SQL ``NULL``, with SQL's three-valued logic
(a comparison with ``NULL`` is neither true nor false, and so is its ``NOT``).

Values never reach SQL text: `Predicate.to_sql` writes ``:p0``, ``:p1``... placeholders and
puts the values in the parameter mapping.

The ``where`` grammar (keywords case-insensitive; ``not`` binds tighter than ``and``, which
binds tighter than ``or``)::

    expr  := and ("or" and)*
    and   := not ("and" not)*
    not   := "not" not | atom
    atom  := "(" expr ")"
           | NAME op LITERAL | LITERAL op NAME
           | NAME ["not"] "in" "(" LITERAL ("," LITERAL)* [","] ")"
           | NAME ["not"] "between" LITERAL "and" LITERAL
    op    := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="

Literals are integers with an optional sign (``-3``, ``+7``) and strings in single or double
quotes, the quote doubled inside (``'O''Brien'``); there are no backslash escapes.

.. versionadded:: 0.2
"""

from __future__ import annotations

import operator
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from ._errors import InvalidDataIdError, QueryError
from ._mapper import coerce_value

if TYPE_CHECKING:
    from ._policy import DatasetType

__all__ = [
    "FALSE",
    "MAX_DEPTH",
    "MAX_IN_VALUES",
    "MAX_TOKENS",
    "MAX_WHERE_LENGTH",
    "TRUE",
    "And",
    "Compare",
    "Const",
    "In",
    "Not",
    "Or",
    "Predicate",
    "constraints_predicate",
    "parse_order_by",
    "parse_where",
    "query_predicate",
    "sort_key",
]

#: Longest ``where`` text accepted, in characters.
MAX_WHERE_LENGTH = 10_000
#: Deepest nesting of parentheses and ``not`` accepted in ``where``.
MAX_DEPTH = 64
#: Most values in one ``in (...)`` list or one list/range constraint.
MAX_IN_VALUES = 10_000
#: Most tokens in one ``where`` text.
MAX_TOKENS = 20_000

#: Digits an integer literal may have (a string dimension's longest value).
_MAX_DIGITS = 200

Value = int | str

_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_SQL_OPERATORS = {"=": "=", "!=": "<>", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
#: ``LITERAL op NAME`` is ``NAME mirrored-op LITERAL``.
_MIRRORED = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
#: Spellings accepted in ``where`` → canonical operator.
_SPELLINGS = {
    "=": "=",
    "==": "=",
    "!=": "!=",
    "<>": "!=",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
}
#: The integers an index column holds (64-bit). `Predicate.to_sql` never binds one outside:
#: SQLite cannot, and for 64-bit columns ``x < 10**20`` is exactly ``x <= 2**63 - 1``.
_INT64 = (-(2**63), 2**63 - 1)
#: op → (op, bound) equivalent, on 64-bit values, to comparing with a value above the range...
_ABOVE_INT64 = {
    "<": ("<=", _INT64[1]),
    "<=": ("<=", _INT64[1]),
    "!=": ("<=", _INT64[1]),
    ">": (">", _INT64[1]),
    ">=": (">", _INT64[1]),
    "=": (">", _INT64[1]),
}
#: ...and below it.
_BELOW_INT64 = {
    ">": (">=", _INT64[0]),
    ">=": (">=", _INT64[0]),
    "!=": (">=", _INT64[0]),
    "<": ("<", _INT64[0]),
    "<=": ("<", _INT64[0]),
    "=": ("<", _INT64[0]),
}
_KEYWORDS = frozenset({"and", "or", "not", "in", "between"})
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


def _short(value: Any, limit: int = 60) -> str:
    """``repr`` of a text for messages, cut to about ``limit`` characters."""
    if not isinstance(value, str):
        from ._mapper import _short_repr  # bounded, never failing (huge ints, hostile reprs)

        return _short_repr(value, limit)
    text = value
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


def _check_value(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise QueryError(f"{where}: a query value must be an int or a str, not {_short(value)}")


def _check_dimension(dimension: Any) -> None:
    if not isinstance(dimension, str) or not _IDENTIFIER.match(dimension):
        raise QueryError(f"invalid dimension name {_short(dimension)} in a query predicate")


def _placeholder(params: dict[str, Any], value: Any) -> str:
    """Add ``value`` to ``params`` under a fresh ``p<N>`` name; return ``:p<N>``."""
    n = len(params)
    while f"p{n}" in params:
        n += 1
    params[f"p{n}"] = value
    return f":p{n}"


def _data_value(data_id: Mapping[str, Any], dimension: str, kind: type) -> Any:
    """The data ID's value of ``dimension`` as ``kind`` (int or str); None when absent."""
    value = data_id.get(dimension)
    if value is None:
        return None
    if kind is str:
        if isinstance(value, str):
            return value
    elif not isinstance(value, bool | str):
        if isinstance(value, int):
            return value
        if hasattr(value, "__index__"):  # numpy integers
            return int(value.__index__())
    raise InvalidDataIdError(
        f"data ID value {dimension}={_short(value)} is not an {kind.__name__}, the type the "
        f"query compares {dimension!r} with"
    )


@dataclass(frozen=True)
class Predicate(ABC):
    """A condition on data IDs, evaluated in Python (`matches`) or in SQL (`to_sql`)."""

    def matches(self, data_id: Mapping[str, Any]) -> bool:
        """Whether a data ID satisfies the predicate, exactly as SQL ``WHERE`` would decide.

        A dimension missing from ``data_id`` (or ``None``) is SQL ``NULL``.
        """
        return self._evaluate(data_id) is True

    @abstractmethod
    def _evaluate(self, data_id: Mapping[str, Any]) -> bool | None:
        """SQL's three-valued result: True, False, or None for ``NULL`` (unknown)."""

    @abstractmethod
    def to_sql(self, column: Callable[[str], str], params: dict[str, Any]) -> str:
        """A SQL boolean expression with ``:p<N>`` placeholders; values go into ``params``.

        Parameters
        ----------
        column
            Gives the (quoted) column expression of a dimension.
        params
            Receives each value under a fresh name ``p<N>`` (``N`` = ``len(params)``).

        Notes
        -----
        Integer columns are taken to hold 64-bit values, as the index does: a comparison
        with an integer beyond that range is written as the equivalent comparison with the
        range's bound (no database is sent an integer it cannot hold).
        """

    @abstractmethod
    def dimensions(self) -> frozenset[str]:
        """The dimensions the predicate refers to."""

    def equalities(self) -> dict[str, Value]:
        """Dimensions every matching data ID has one known value of (for narrowing a listing)."""
        return {}


@dataclass(frozen=True)
class Const(Predicate):
    """A constant: `TRUE` matches every data ID, `FALSE` none."""

    value: bool

    def __post_init__(self) -> None:
        if not isinstance(self.value, bool):
            raise QueryError(f"Const takes a bool, not {_short(self.value)}")

    def _evaluate(self, data_id: Mapping[str, Any]) -> bool | None:
        return self.value

    def to_sql(self, column: Callable[[str], str], params: dict[str, Any]) -> str:
        return "1=1" if self.value else "1=0"

    def dimensions(self) -> frozenset[str]:
        return frozenset()


TRUE = Const(True)
FALSE = Const(False)


@dataclass(frozen=True)
class Compare(Predicate):
    """``dimension op value``, ``op`` one of ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=``."""

    dimension: str
    op: str
    value: Value

    def __post_init__(self) -> None:
        _check_dimension(self.dimension)
        if self.op not in _OPERATORS:
            raise QueryError(
                f"unknown comparison operator {_short(self.op)}; use one of {list(_OPERATORS)}"
            )
        _check_value(self.value, f"comparison of {self.dimension!r}")

    def _evaluate(self, data_id: Mapping[str, Any]) -> bool | None:
        value = _data_value(data_id, self.dimension, type(self.value))
        if value is None:
            return None
        return _OPERATORS[self.op](value, self.value)

    def to_sql(self, column: Callable[[str], str], params: dict[str, Any]) -> str:
        op, value = self.op, self.value
        if isinstance(value, int) and not _INT64[0] <= value <= _INT64[1]:
            op, value = (_ABOVE_INT64 if value > 0 else _BELOW_INT64)[op]
        return f"{column(self.dimension)} {_SQL_OPERATORS[op]} {_placeholder(params, value)}"

    def dimensions(self) -> frozenset[str]:
        return frozenset((self.dimension,))

    def equalities(self) -> dict[str, Value]:
        return {self.dimension: self.value} if self.op == "=" else {}


@dataclass(frozen=True)
class In(Predicate):
    """``dimension IN (values...)``; an empty ``values`` matches nothing (even ``NULL``)."""

    dimension: str
    values: tuple[Value, ...]
    _set: frozenset[Value] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_dimension(self.dimension)
        if not isinstance(self.values, tuple):
            raise QueryError(f"In takes a tuple of values, not {_short(self.values)}")
        _check_count(len(self.values), f"the values of {self.dimension!r}")
        for value in self.values:
            _check_value(value, f"values of {self.dimension!r}")
        if len({type(v) for v in self.values}) > 1:
            raise QueryError(
                f"the values of {self.dimension!r} mix integers and strings: {_short(self.values)}"
            )
        object.__setattr__(self, "_set", frozenset(self.values))

    def _evaluate(self, data_id: Mapping[str, Any]) -> bool | None:
        if not self.values:  # SQL: x IN () is false, even for NULL
            return False
        value = _data_value(data_id, self.dimension, type(self.values[0]))
        if value is None:
            return None
        return value in self._set

    def to_sql(self, column: Callable[[str], str], params: dict[str, Any]) -> str:
        if not self.values:  # "IN ()" is not valid SQL everywhere
            return "1=0"
        kept = [v for v in self.values if isinstance(v, str) or _INT64[0] <= v <= _INT64[1]]
        if not kept:  # false, or NULL for NULL, as IN would be
            return f"{column(self.dimension)} > {_placeholder(params, _INT64[1])}"
        names = ", ".join(_placeholder(params, v) for v in kept)
        return f"{column(self.dimension)} IN ({names})"

    def dimensions(self) -> frozenset[str]:
        return frozenset((self.dimension,))

    def equalities(self) -> dict[str, Value]:
        return {self.dimension: self.values[0]} if len(self.values) == 1 else {}


def _check_items(items: Any, cls: str) -> None:
    if not isinstance(items, tuple) or not all(isinstance(i, Predicate) for i in items):
        raise QueryError(f"{cls} takes a tuple of predicates, not {_short(items)}")


@dataclass(frozen=True)
class And(Predicate):
    """All of ``items``; ``And(())`` is true."""

    items: tuple[Predicate, ...]

    def __post_init__(self) -> None:
        _check_items(self.items, "And")

    def _evaluate(self, data_id: Mapping[str, Any]) -> bool | None:
        result: bool | None = True
        for item in self.items:
            value = item._evaluate(data_id)
            if value is False:
                return False
            if value is None:
                result = None
        return result

    def to_sql(self, column: Callable[[str], str], params: dict[str, Any]) -> str:
        if not self.items:
            return "1=1"
        return "(" + " AND ".join(i.to_sql(column, params) for i in self.items) + ")"

    def dimensions(self) -> frozenset[str]:
        return frozenset().union(*(i.dimensions() for i in self.items))

    def equalities(self) -> dict[str, Value]:
        found: dict[str, Value] = {}
        conflicting: set[str] = set()
        for item in self.items:
            for dimension, value in item.equalities().items():
                if found.setdefault(dimension, value) != value:
                    conflicting.add(dimension)  # nothing matches; narrow by neither
        return {d: v for d, v in found.items() if d not in conflicting}


@dataclass(frozen=True)
class Or(Predicate):
    """Any of ``items``; ``Or(())`` is false."""

    items: tuple[Predicate, ...]

    def __post_init__(self) -> None:
        _check_items(self.items, "Or")

    def _evaluate(self, data_id: Mapping[str, Any]) -> bool | None:
        result: bool | None = False
        for item in self.items:
            value = item._evaluate(data_id)
            if value is True:
                return True
            if value is None:
                result = None
        return result

    def to_sql(self, column: Callable[[str], str], params: dict[str, Any]) -> str:
        if not self.items:
            return "1=0"
        return "(" + " OR ".join(i.to_sql(column, params) for i in self.items) + ")"

    def dimensions(self) -> frozenset[str]:
        return frozenset().union(*(i.dimensions() for i in self.items))


@dataclass(frozen=True)
class Not(Predicate):
    """The negation of ``item`` (``NOT NULL`` stays ``NULL``, as in SQL)."""

    item: Predicate

    def __post_init__(self) -> None:
        if not isinstance(self.item, Predicate):
            raise QueryError(f"Not takes a predicate, not {_short(self.item)}")

    def _evaluate(self, data_id: Mapping[str, Any]) -> bool | None:
        value = self.item._evaluate(data_id)
        return None if value is None else not value

    def to_sql(self, column: Callable[[str], str], params: dict[str, Any]) -> str:
        inner = self.item.to_sql(column, params)
        if not (isinstance(self.item, And | Or | Not) and inner.startswith("(")):
            inner = f"({inner})"  # MySQL's HIGH_NOT_PRECEDENCE would read NOT a = b as (NOT a) = b
        return f"(NOT {inner})"

    def dimensions(self) -> frozenset[str]:
        return self.item.dimensions()


def _check_count(count: int, what: str) -> None:
    if count > MAX_IN_VALUES:
        raise QueryError(f"{what}: {count} values; at most {MAX_IN_VALUES} are allowed")


def _conjunction(items: Iterable[Predicate]) -> Predicate:
    kept = [i for i in items if i != TRUE]
    if not kept:
        return TRUE
    return kept[0] if len(kept) == 1 else And(tuple(kept))


# --- the where language ----------------------------------------------------------------


class _Token(NamedTuple):
    kind: str  # "name", "int", "str", "op", "(", ")", ",", "end"
    text: str  # as written
    pos: int
    value: Any = None  # int for "int", the unquoted text for "str", canonical op for "op"


_LEXER = re.compile(
    r"""
    (?P<space>[ \t\r\n]+)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<int>[+-]?[0-9]+)
    | (?P<str>'[^']*+(?:''[^']*+)*+'|"[^"]*+(?:""[^"]*+)*+")  # possessive: '' is a quote
    | (?P<op>==|!=|<>|<=|>=|=|<|>)
    | (?P<punct>[(),])
    """,
    re.VERBOSE,
)
#: What is shown of a character sequence the lexer refuses.
_JUNK = re.compile(r"--|/\*|\*/|.", re.DOTALL)


class _Parser:
    def __init__(self, text: str, dataset_type: DatasetType) -> None:
        self.text = text
        self.dataset_type = dataset_type
        self.depth = 0
        self.i = 0
        self.tokens = self._tokenize()

    # errors

    def error(self, message: str) -> QueryError:
        return QueryError(f"where {_short(self.text)}: {message}")

    def unexpected(self, token: _Token, expected: str) -> QueryError:
        if token.kind == "end":
            return self.error(
                f"unexpected end of expression at position {token.pos}; expected {expected}"
            )
        return self.error(
            f"unexpected {_short(token.text, 30)} at position {token.pos}; expected {expected}"
        )

    # tokens

    def _tokenize(self) -> list[_Token]:
        text = self.text
        tokens: list[_Token] = []
        pos = 0
        while pos < len(text):
            match = _LEXER.match(text, pos)
            if match is None:
                if text[pos] in "'\"":
                    raise self.error(
                        f"unterminated string starting at position {pos}: close it with "
                        f"{text[pos]} (a quote inside is written twice)"
                    )
                junk = _JUNK.match(text, pos)
                assert junk is not None  # "." with DOTALL matches any character
                raise self.error(
                    f"unexpected {_short(junk.group(), 30)} at position {pos}; a where "
                    f"expression holds dimension names, numbers, quoted strings, comparison "
                    f"operators, and/or/not/in/between, commas and parentheses"
                )
            kind = match.lastgroup
            word = match.group()
            if kind == "int":
                if len(word.lstrip("+-")) > _MAX_DIGITS:
                    raise self.error(f"number at position {pos} has more than {_MAX_DIGITS} digits")
                tokens.append(_Token("int", word, pos, int(word)))
            elif kind == "str":
                quote = word[0]
                tokens.append(_Token("str", word, pos, word[1:-1].replace(quote * 2, quote)))
            elif kind == "op":
                tokens.append(_Token("op", word, pos, _SPELLINGS[word]))
            elif kind == "punct":
                tokens.append(_Token(word, word, pos))
            elif kind == "name":
                tokens.append(_Token("name", word, pos))
            if len(tokens) > MAX_TOKENS:
                raise self.error(f"more than {MAX_TOKENS} tokens (at position {pos})")
            pos = match.end()
        tokens.append(_Token("end", "", len(text)))
        return tokens

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def advance(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def keyword(self, word: str) -> bool:
        token = self.tokens[self.i]
        return token.kind == "name" and token.text.lower() == word

    def enter(self, token: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(
                f"nested deeper than {MAX_DEPTH} levels of parentheses and 'not' at "
                f"position {token.pos}"
            )

    # grammar

    def parse(self) -> Predicate:
        if self.peek().kind == "end":
            raise self.error("empty expression")
        predicate = self.disjunction()
        token = self.peek()
        if token.kind == ")":
            raise self.error(f"unbalanced parentheses: ')' at position {token.pos} closes nothing")
        if token.kind != "end":
            raise self.unexpected(token, "'and', 'or' or the end of the expression")
        return predicate

    def disjunction(self) -> Predicate:
        items = [self.conjunction()]
        while self.keyword("or"):
            self.advance()
            items.append(self.conjunction())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def conjunction(self) -> Predicate:
        items = [self.negation()]
        while self.keyword("and"):
            self.advance()
            items.append(self.negation())
        return items[0] if len(items) == 1 else And(tuple(items))

    def negation(self) -> Predicate:
        if not self.keyword("not"):
            return self.atom()
        token = self.advance()
        self.enter(token)
        inner = self.negation()
        self.depth -= 1
        return Not(inner)

    def atom(self) -> Predicate:
        token = self.peek()
        if token.kind == "(":
            self.advance()
            self.enter(token)
            inner = self.disjunction()
            close = self.peek()
            if close.kind == "end":
                raise self.error(
                    f"unbalanced parentheses: '(' at position {token.pos} is never closed"
                )
            if close.kind != ")":
                raise self.unexpected(close, "'and', 'or' or ')'")
            self.advance()
            self.depth -= 1
            return inner
        if token.kind == "name" and token.text.lower() not in _KEYWORDS:
            return self.dimension_first()
        if token.kind in ("int", "str"):
            return self.literal_first()
        raise self.unexpected(token, "a dimension name, a number, a quoted string, 'not' or '('")

    def dimension_first(self) -> Predicate:
        dimension = self.dimension(self.advance())
        negate = False
        if self.keyword("not"):
            self.advance()
            negate = True
            if not (self.keyword("in") or self.keyword("between")):
                raise self.unexpected(self.peek(), "'in' or 'between' after 'not'")
        token = self.peek()
        predicate: Predicate
        if self.keyword("in"):
            self.advance()
            predicate = In(dimension, self.value_list(dimension))
        elif self.keyword("between"):
            self.advance()
            low = self.literal(dimension)
            if not self.keyword("and"):
                raise self.unexpected(self.peek(), "'and' (between LOW and HIGH)")
            self.advance()
            high = self.literal(dimension)
            predicate = And((Compare(dimension, ">=", low), Compare(dimension, "<=", high)))
        elif token.kind == "op" and not negate:
            self.advance()
            predicate = Compare(dimension, token.value, self.literal(dimension))
        else:
            raise self.unexpected(
                token,
                f"a comparison operator, 'in', 'not in' or 'between' after dimension {dimension!r}",
            )
        return Not(predicate) if negate else predicate

    def literal_first(self) -> Predicate:
        literal = self.advance()
        op = self.peek()
        if op.kind != "op":
            raise self.unexpected(op, "a comparison operator after the literal")
        self.advance()
        name = self.peek()
        if name.kind != "name" or name.text.lower() in _KEYWORDS:
            raise self.unexpected(
                name, "a dimension name (a comparison has a dimension on one side)"
            )
        dimension = self.dimension(self.advance())
        return Compare(dimension, _MIRRORED[op.value], self.typed(literal, dimension))

    def value_list(self, dimension: str) -> tuple[Value, ...]:
        opening = self.peek()
        if opening.kind != "(":
            raise self.unexpected(opening, "'(' after 'in'")
        self.advance()
        values: dict[Value, None] = {}  # ordered, without repeats
        count = 0
        while True:
            values[self.literal(dimension)] = None
            count += 1
            _check_count(count, f"where {_short(self.text)}: the 'in' list of {dimension!r}")
            token = self.peek()
            if token.kind == ",":
                self.advance()
                token = self.peek()
            if token.kind == ")":
                self.advance()
                return tuple(values)
            if token.kind == "end":
                raise self.error(
                    f"unbalanced parentheses: '(' at position {opening.pos} is never closed"
                )
            if self.tokens[self.i - 1].kind != ",":
                raise self.unexpected(token, "',' or ')'")

    def literal(self, dimension: str) -> Value:
        token = self.peek()
        if token.kind not in ("int", "str"):
            raise self.unexpected(token, "a number or a quoted string")
        return self.typed(self.advance(), dimension)

    def dimension(self, token: _Token) -> str:
        dimensions = self.dataset_type.dimensions
        if token.text not in dimensions:
            raise self.error(
                f"unknown dimension {_short(token.text, 30)} at position {token.pos}; dataset "
                f"type {self.dataset_type.name!r} has dimensions {list(dimensions)}"
            )
        return token.text

    def typed(self, token: _Token, dimension: str) -> Value:
        """The literal as a value of ``dimension``, validated as data ID values are."""
        kind = self.dataset_type.dimensions[dimension]
        if token.kind == "str" and kind == "int":
            raise self.error(
                f"dimension {dimension!r} is an int dimension: expected a number, not the "
                f"string {_short(token.text, 30)} at position {token.pos}"
            )
        try:
            value: Value = coerce_value(self.dataset_type, dimension, token.value)
        except InvalidDataIdError as exc:
            raise self.error(f"{exc} (the literal at position {token.pos})") from None
        return value


def parse_where(text: str, dataset_type: DatasetType) -> Predicate:
    """Parse a ``where`` expression on the dimensions of ``dataset_type``.

    Parameters
    ----------
    text
        The expression (grammar in this module's docstring), e.g.
        ``"visit >= 100 and band in ('g', 'r')"``.
    dataset_type
        Gives the dimensions and their types; every literal is checked as a data ID value.

    Returns
    -------
    Predicate
        The parsed condition.

    Raises
    ------
    QueryError
        The text is not a valid expression, names an unknown dimension, has a literal of
        the wrong type or an invalid value, or exceeds a limit (`MAX_WHERE_LENGTH`,
        `MAX_DEPTH`, `MAX_IN_VALUES`, `MAX_TOKENS`). The message gives the position.
    """
    if not isinstance(text, str):
        raise QueryError(f"where must be a string, not {type(text).__name__}")
    if len(text) > MAX_WHERE_LENGTH:
        raise QueryError(
            f"where {_short(text)}: {len(text)} characters; at most {MAX_WHERE_LENGTH} are allowed"
        )
    return _Parser(text, dataset_type).parse()


# --- keyword constraints ---------------------------------------------------------------


def constraints_predicate(constraints: Mapping[str, Any], dataset_type: DatasetType) -> Predicate:
    """The conjunction of keyword constraints (``visit=[1, 2], ccd=range(0, 9)``).

    A scalar is an equality; a list, tuple, set or frozenset is a set of values (empty:
    matches nothing); ``range(a, b)`` is ``a <= x < b`` (other steps: its values);
    ``slice(lo, hi)`` is ``lo <= x < hi``, either end ``None`` being open. Ranges and
    slices need an int dimension. Every value is checked as a data ID value.

    Raises
    ------
    QueryError
        An unknown dimension, a value a data ID could not hold, a sliced or ranged string
        dimension, a slice with a step, or more than `MAX_IN_VALUES` values.
    """
    if not isinstance(constraints, Mapping):
        raise QueryError(f"constraints must be a mapping, not {type(constraints).__name__}")
    dimensions = dataset_type.dimensions
    items: list[Predicate] = []
    for dimension, value in constraints.items():
        if not isinstance(dimension, str) or dimension not in dimensions:
            raise QueryError(
                f"unknown dimension {_short(dimension, 30)} in constraints; dataset type "
                f"{dataset_type.name!r} has dimensions {list(dimensions)}"
            )
        items.append(_constraint(dataset_type, dimension, value))
    return _conjunction(items)


def _coerced(dataset_type: DatasetType, dimension: str, value: Any) -> Value:
    try:
        result: Value = coerce_value(dataset_type, dimension, value)
    except InvalidDataIdError as exc:
        raise QueryError(f"constraint on {dimension!r}: {exc}") from None
    return result


def _constraint(dataset_type: DatasetType, dimension: str, value: Any) -> Predicate:
    where = f"constraint {dimension}={_short(value)} of dataset type {dataset_type.name!r}"
    if isinstance(value, range | slice) and dataset_type.dimensions[dimension] != "int":
        raise QueryError(
            f"{where}: a {type(value).__name__} needs an int dimension; {dimension!r} is a "
            f"{dataset_type.dimensions[dimension]} dimension (give a list of values)"
        )
    if isinstance(value, range):
        if value.step == 1:
            return And(
                (
                    Compare(dimension, ">=", _coerced(dataset_type, dimension, value.start)),
                    Compare(dimension, "<", _coerced(dataset_type, dimension, value.stop)),
                )
            )
        try:
            count = len(value)
        except OverflowError:  # more values than a C ssize_t
            count = MAX_IN_VALUES + 1
        _check_count(count, where)
        return In(dimension, tuple(_coerced(dataset_type, dimension, v) for v in value))
    if isinstance(value, slice):
        if value.step is not None:
            raise QueryError(
                f"{where}: a slice with a step is not supported; use range(start, stop, step)"
            )
        bounds: list[Predicate] = []
        if value.start is not None:
            bounds.append(Compare(dimension, ">=", _coerced(dataset_type, dimension, value.start)))
        if value.stop is not None:
            bounds.append(Compare(dimension, "<", _coerced(dataset_type, dimension, value.stop)))
        return _conjunction(bounds)
    if isinstance(value, list | tuple | set | frozenset):
        _check_count(len(value), where)
        values = [_coerced(dataset_type, dimension, v) for v in value]
        if isinstance(value, set | frozenset):
            values.sort()  # one type after coercion; a stable SQL text
        return In(dimension, tuple(dict.fromkeys(values)))
    return Compare(dimension, "=", _coerced(dataset_type, dimension, value))


def query_predicate(
    dataset_type: DatasetType, where: str | None, constraints: Mapping[str, Any]
) -> Predicate:
    """The predicate of ``Butler.datasets``: ``where`` (if given) and the constraints.

    Raises
    ------
    QueryError
        ``where`` is neither a string nor None, or `parse_where` or
        `constraints_predicate` refuses its input.
    """
    if where is not None and not isinstance(where, str):
        raise QueryError(f"where must be a string or None, not {type(where).__name__}")
    parts = [] if where is None else [parse_where(where, dataset_type)]
    parts.append(constraints_predicate(constraints, dataset_type))
    return _conjunction(parts)


# --- ordering --------------------------------------------------------------------------


def parse_order_by(
    order_by: str | Sequence[str] | None, dataset_type: DatasetType
) -> list[tuple[str, bool]]:
    """``[(dimension, descending)]`` from ``"visit"``, ``"-visit"``, ``"band,-visit"`` or a list.

    Raises
    ------
    QueryError
        An unknown or repeated dimension, an empty term, or an argument of another type.
    """
    if order_by is None:
        return []
    if isinstance(order_by, str):
        terms = [order_by]
    elif isinstance(order_by, Sequence) and all(isinstance(t, str) for t in order_by):
        terms = list(order_by)
    else:
        raise QueryError(f"order_by must be a string or a list of strings, not {_short(order_by)}")
    dimensions = dataset_type.dimensions
    result: list[tuple[str, bool]] = []
    for term in terms:
        for part in term.split(","):
            name = part.strip()
            descending = name.startswith("-")
            if descending:
                name = name[1:].strip()
            if not name:
                raise QueryError(
                    f"order_by {_short(order_by)}: empty term; give dimension names, "
                    f"'-name' for descending"
                )
            if name not in dimensions:
                raise QueryError(
                    f"order_by {_short(order_by)}: unknown dimension {_short(name, 30)}; "
                    f"dataset type {dataset_type.name!r} has dimensions {list(dimensions)}"
                )
            if any(name == seen for seen, _ in result):
                raise QueryError(f"order_by {_short(order_by)}: dimension {name!r} given twice")
            result.append((name, descending))
    return result


def _descending(text: str) -> tuple[int, ...]:
    """A key ordering strings by code point, reversed (a longer string before its prefix)."""
    return (*(-ord(c) for c in text), 1)


def sort_key(
    order: list[tuple[str, bool]], dataset_type: DatasetType
) -> Callable[[Mapping[str, Any]], Any]:
    """A key function ordering data IDs as SQL ``ORDER BY`` the ``order`` would.

    The dimensions ``order`` leaves out follow, ascending, in declaration order, so the
    order is total. Strings compare by code point (binary collation).

    Raises
    ------
    QueryError
        ``order`` names a dimension the dataset type does not have.
    InvalidDataIdError
        (from the key function) a data ID lacks a dimension or has a value of the wrong type.
    """
    dimensions = dataset_type.dimensions
    for name, _ in order:
        if name not in dimensions:
            raise QueryError(
                f"cannot order by unknown dimension {_short(name, 30)}; dataset type "
                f"{dataset_type.name!r} has dimensions {list(dimensions)}"
            )
    named = {name for name, _ in order}
    spec = [*order, *((d, False) for d in dimensions if d not in named)]
    kinds = {d: int if k == "int" else str for d, k in dimensions.items()}

    def key(data_id: Mapping[str, Any]) -> tuple[Any, ...]:
        parts: list[Any] = []
        for name, descending in spec:
            value = _data_value(data_id, name, kinds[name])
            if value is None:
                raise InvalidDataIdError(
                    f"data ID {_short(dict(data_id))} has no value for {name!r}: it cannot "
                    f"be ordered (dataset type {dataset_type.name!r})"
                )
            if descending:
                value = -value if isinstance(value, int) else _descending(value)
            parts.append(value)
        return tuple(parts)

    return key
