"""Evaluates the subset of CEL that the CRD's cross-field rules use, and applies schema defaults.

The API server evaluates each `x-kubernetes-validations` rule on the object after it has
applied the schema's defaults; tests use this module to do the same without a cluster
and compare the verdict with the rule's Python `check`. It knows literals (int, string,
bool, list, map), field selection, indexing, `has()`, `startsWith`, `size`, the
arithmetic, comparison, `in`, logical and conditional operators, and CEL's rule that
`||` and `&&` absorb an error on one side when the other side decides. Anything else
raises `CelError`, as does selecting a field that is absent.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(
    r"""\s*(?:
        (?P<int>\d+)
      | (?P<string>r?'(?:[^'\\]|\\.)*'|r?"(?:[^"\\]|\\.)*")
      | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
      | (?P<op>\|\||&&|==|!=|<=|>=|[-+*/%<>!?:.,()\[\]{}])
    )""",
    re.VERBOSE,
)


class CelError(Exception):
    """An expression this subset cannot parse, or an evaluation error (as CEL's)."""


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


def tokenize(source: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    source = source.rstrip()
    while position < len(source):
        match = _TOKEN.match(source, position)
        if match is None or match.end() == position:
            raise CelError(f"cannot read {source[position:]!r}")
        kind = match.lastgroup
        assert kind is not None
        tokens.append(Token(kind, match.group(kind)))
        position = match.end()
    return tokens


Node = tuple[Any, ...]
_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "in": lambda a, b: a in b,
}
_LEVELS = (("==", "!=", "<", "<=", ">", ">=", "in"), ("+", "-"), ("*", "/", "%"))


class _Parser:
    def __init__(self, source: str) -> None:
        self.tokens = tokenize(source)
        self.index = 0

    def peek(self) -> str | None:
        return self.tokens[self.index].text if self.index < len(self.tokens) else None

    def take(self, expected: str | None = None) -> Token:
        if self.index >= len(self.tokens):
            raise CelError(f"unexpected end, expected {expected or 'more'}")
        token = self.tokens[self.index]
        if expected is not None and token.text != expected:
            raise CelError(f"expected {expected!r}, found {token.text!r}")
        self.index += 1
        return token

    def parse(self) -> Node:
        node = self.conditional()
        if self.peek() is not None:
            raise CelError(f"unexpected {self.peek()!r}")
        return node

    def conditional(self) -> Node:
        condition = self.disjunction()
        if self.peek() != "?":
            return condition
        self.take("?")
        then = self.conditional()
        self.take(":")
        return ("?:", condition, then, self.conditional())

    def disjunction(self) -> Node:
        node = self.conjunction()
        while self.peek() == "||":
            self.take("||")
            node = ("||", node, self.conjunction())
        return node

    def conjunction(self) -> Node:
        node = self.binary(0)
        while self.peek() == "&&":
            self.take("&&")
            node = ("&&", node, self.binary(0))
        return node

    def binary(self, level: int) -> Node:
        if level == len(_LEVELS):
            return self.unary()
        node = self.binary(level + 1)
        while self.peek() in _LEVELS[level]:
            op = self.take().text
            node = (op, node, self.binary(level + 1))
        return node

    def unary(self) -> Node:
        if self.peek() in ("!", "-"):
            op = self.take().text
            return ("unary" + op, self.unary())
        return self.member()

    def arguments(self, close: str) -> list[Node]:
        items: list[Node] = []
        while self.peek() != close:
            items.append(self.conditional())
            if self.peek() != close:
                self.take(",")
        self.take(close)
        return items

    def member(self) -> Node:
        node = self.primary()
        while self.peek() in (".", "["):
            if self.take().text == ".":
                name = self.take().text
                if self.peek() == "(":
                    self.take("(")
                    node = ("method", name, node, self.arguments(")"))
                else:
                    node = ("select", node, name)
            else:
                node = ("index", node, self.conditional())
                self.take("]")
        return node

    def primary(self) -> Node:
        token = self.take()
        if token.kind in ("int", "string") or token.text in ("true", "false"):
            return ("lit", _literal(token))
        if token.text == "(":
            node = self.conditional()
            self.take(")")
            return node
        if token.text == "[":
            return ("list", self.arguments("]"))
        if token.text == "{":
            return ("map", self.entries())
        if token.kind != "name":
            raise CelError(f"unexpected {token.text!r}")
        if self.peek() == "(":
            self.take("(")
            return ("call", token.text, self.arguments(")"))
        return ("ident", token.text)

    def entries(self) -> list[tuple[Node, Node]]:
        found: list[tuple[Node, Node]] = []
        while self.peek() != "}":
            key = self.conditional()
            self.take(":")
            found.append((key, self.conditional()))
            if self.peek() != "}":
                self.take(",")
        self.take("}")
        return found


def _literal(token: Token) -> int | str | bool:
    if token.kind == "int":
        return int(token.text)
    if token.kind == "string":
        if token.text.startswith("r"):
            return token.text[2:-1]
        return token.text[1:-1].encode().decode("unicode_escape")
    return token.text == "true"


def _divide(op: str, a: int, b: int) -> int:
    if b == 0:
        raise CelError("division by zero")
    quotient = abs(a) // abs(b) * (1 if (a >= 0) == (b >= 0) else -1)
    return quotient if op == "/" else a - b * quotient


def _ident(node: Node, env: dict[str, Any]) -> Any:
    if node[1] not in env:
        raise CelError(f"undeclared reference {node[1]!r}")
    return env[node[1]]


def _select(node: Node, env: dict[str, Any]) -> Any:
    target = _evaluate(node[1], env)
    if not isinstance(target, dict) or node[2] not in target:
        raise CelError(f"no such key: {node[2]}")
    return target[node[2]]


def _index(node: Node, env: dict[str, Any]) -> Any:
    target, key = _evaluate(node[1], env), _evaluate(node[2], env)
    try:
        return target[key]
    except (KeyError, IndexError, TypeError) as exc:
        raise CelError(f"no such key: {key!r}") from exc


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise CelError(f"{what} needs a bool")
    return value


def _operator(node: Node, env: dict[str, Any]) -> Any:
    op = node[0]
    a, b = _evaluate(node[1], env), _evaluate(node[2], env)
    if op in ("/", "%"):
        return _divide(op, a, b)
    if op in ("<", "<=", ">", ">=", "+", "-", "*") and type(a) is not type(b):
        raise CelError(f"no matching overload for {op} on {type(a).__name__}, {type(b).__name__}")
    return _BINARY[op](a, b)


_NODES: dict[str, Callable[[Node, dict[str, Any]], Any]] = {
    "lit": lambda node, env: node[1],
    "ident": _ident,
    "list": lambda node, env: [_evaluate(item, env) for item in node[1]],
    "map": lambda node, env: {_evaluate(k, env): _evaluate(v, env) for k, v in node[1]},
    "select": _select,
    "index": _index,
    "call": lambda node, env: _call(node[1], node[2], env),
    "method": lambda node, env: _method(
        node[1], _evaluate(node[2], env), [_evaluate(a, env) for a in node[3]]
    ),
    "||": lambda node, env: _logical("||", node[1], node[2], env),
    "&&": lambda node, env: _logical("&&", node[1], node[2], env),
    "?:": lambda node, env: _evaluate(
        node[2] if _bool(_evaluate(node[1], env), "a condition") else node[3], env
    ),
    "unary!": lambda node, env: not _bool(_evaluate(node[1], env), "!"),
    "unary-": lambda node, env: -_evaluate(node[1], env),
}


def _evaluate(node: Node, env: dict[str, Any]) -> Any:
    return _NODES.get(node[0], _operator)(node, env)


def _logical(op: str, left: Node, right: Node, env: dict[str, Any]) -> bool:
    """`||` and `&&` as CEL has them: a side that decides wins over an error on the other."""
    decides = op == "||"
    results: list[bool | CelError] = []
    for side in (left, right):
        try:
            value = _evaluate(side, env)
        except CelError as exc:
            results.append(exc)
            continue
        if not isinstance(value, bool):
            raise CelError(f"{op} needs bools")
        if value is decides:
            return decides
        results.append(value)
    for result in results:
        if isinstance(result, CelError):
            raise result
    return not decides


def _call(name: str, args: list[Node], env: dict[str, Any]) -> Any:
    if name == "has":
        if len(args) != 1 or args[0][0] != "select":
            raise CelError("has() takes one field selection")
        target = _evaluate(args[0][1], env)
        return isinstance(target, dict) and args[0][2] in target
    values = [_evaluate(a, env) for a in args]
    if name == "size" and len(values) == 1:
        return len(values[0])
    raise CelError(f"unknown function {name}()")


def _method(name: str, target: Any, args: list[Any]) -> Any:
    if name == "startsWith" and isinstance(target, str):
        return target.startswith(args[0])
    if name == "size" and not args:
        return len(target)
    raise CelError(f"unknown method {name}()")


def evaluate(rule: str, value: Any) -> Any:
    """The value of `rule` with `self` bound to `value` (an object as the API server holds it)."""
    return _evaluate(_Parser(rule).parse(), {"self": value})


def with_defaults(schema: dict[str, Any], value: Any) -> Any:
    """`value` with the schema's defaults filled in, as the API server does before validating.

    A field left out gets its `default`; the defaulted value is then walked too, so a
    section defaulted to {} gets its fields' own defaults.
    """
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, child in schema["properties"].items():
            if name not in out and "default" in child:
                out[name] = copy.deepcopy(child["default"])
            if name in out:
                out[name] = with_defaults(child, out[name])
        return out
    if isinstance(value, list) and "items" in schema:
        return [with_defaults(schema["items"], item) for item in value]
    return value
