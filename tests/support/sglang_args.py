"""Check rendered SGLang command lines against a snapshot of SGLang's real parser.

The snapshot (`tests/testdata/sglang/server-args-<version>.json`) is generated
from the released sglang package by `hack/snapshot-sglang-args.py`; this
module only reads it, with the standard library, and rebuilds an argparse
parser that accepts and refuses what SGLang's own parser does:

* the same option strings (aliases included), nargs, choices and required
  flags, and the same abbreviation rule (`allow_abbrev`) as recorded;
* flags that take no value (store_true, deprecated boolean spellings,
  `--x/--no-x` pairs) take no value here either;
* `int` and `float` values are converted and checked; of SGLang's own value
  parsers, `json.loads`, `json_list_type` and `human_readable_int` are checked
  by local equivalents, others (e.g. the CUDA-graph specs) accept any string.

Errors come back as `SglangArgsError` naming the flag, never as SystemExit.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any, NoReturn

DEFAULT_VERSION = "0.5.23"
SNAPSHOT_DIR = Path(__file__).resolve().parent.parent / "testdata" / "sglang"
LAUNCH_MODULE = "sglang.launch_server"
_PYTHON_NAME = re.compile(r"^python(\d+(\.\d+)?)?$")

Snapshot = dict[str, Any]


class SglangArgsError(ValueError):
    """SGLang's parser would refuse the command; `flag` names the culprit if known."""

    def __init__(self, message: str, flag: str | None = None) -> None:
        super().__init__(message)
        self.flag = flag


class _RaisingParser(argparse.ArgumentParser):
    """An ArgumentParser that raises SglangArgsError instead of exiting."""

    def error(self, message: str) -> NoReturn:
        named = re.match(
            r"(?:the following arguments are required|ambiguous option): ([^/,=\s]+)", message
        )
        raise SglangArgsError(
            f"sglang would refuse the command: {message}",
            named.group(1) if named else None,
        )


class _RefusedAction(argparse.Action):
    """A retired flag that SGLang stops on when it is used."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        raise argparse.ArgumentError(self, "sglang stops the launch when this flag is used")


class _ValueIgnoredAction(argparse.Action):
    """A flag that takes a (checked) value but stores a fixed one, as SGLang's
    retired valued flags do (e.g. `--monokernel-backend amd`)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, self.const)


def snapshot_path(version: str = DEFAULT_VERSION) -> Path:
    return SNAPSHOT_DIR / f"server-args-{version}.json"


@functools.cache
def _load_cached(version: str) -> str:
    path = snapshot_path(version)
    if not path.is_file():
        raise FileNotFoundError(
            f"no SGLang parser snapshot for version {version} at {path}; generate it with "
            f"hack/snapshot-sglang-args.py --version {version}"
        )
    return path.read_text(encoding="utf-8")


def load_snapshot(version: str = DEFAULT_VERSION) -> Snapshot:
    """The parsed snapshot for `version` (a fresh copy each call)."""
    data: Snapshot = json.loads(_load_cached(version))
    if data.get("sglang_version") != version:
        raise ValueError(
            f"snapshot {snapshot_path(version)} is for sglang {data.get('sglang_version')}"
        )
    return data


_SI_SUFFIXES = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
_IEC_SUFFIXES = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def human_readable_int(value: str) -> int:
    """Integer with optional SI (k, M, G, T; decimals allowed) or IEC (Ki..Ti) suffix."""
    text = value.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T)", text)
    if match is None:
        return int(text)
    number, suffix = match.groups()
    if suffix in _IEC_SUFFIXES:
        if "." in number:
            raise ValueError(f"decimals are not allowed with IEC suffix {suffix!r}")
        return int(number) * _IEC_SUFFIXES[suffix]
    return int(Decimal(number) * _SI_SUFFIXES[suffix])


def json_list_type(value: str) -> Any:
    """A JSON document (SGLang's json_list_type accepts any JSON value)."""
    return json.loads(value)


# SGLang's own value parsers that can be checked locally, by qualified name.
_KNOWN_CONVERTERS: dict[str, Callable[[str], Any]] = {
    "json.loads": json.loads,
    "sglang.srt.utils.common.json_list_type": json_list_type,
    "sglang.srt.utils.common.human_readable_int": human_readable_int,
}
_SIMPLE_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "str": str}


def _converter(entry: dict[str, Any]) -> Callable[[str], Any] | None:
    kind = entry.get("type")
    if kind is None:
        return None
    if kind in _SIMPLE_TYPES:
        return _SIMPLE_TYPES[kind]
    return _KNOWN_CONVERTERS.get(entry.get("type_detail") or "")


def _add_boolean_optional(parser: argparse.ArgumentParser, entry: dict[str, Any]) -> None:
    options: list[str] = entry["option_strings"]
    positives = [o for o in options if o.startswith("--") and f"--no-{o[2:]}" in options]
    action = parser.add_argument(
        *positives,
        dest=entry["dest"],
        action=argparse.BooleanOptionalAction,
        default=entry.get("default"),
    )
    if sorted(action.option_strings) != sorted(options):
        raise ValueError(f"cannot rebuild --x/--no-x flag {options}")


def _add_action(parser: argparse.ArgumentParser, entry: dict[str, Any]) -> None:
    options: list[str] = entry["option_strings"]
    dest: str = entry["dest"]
    action_name: str = entry["action"]
    choices: list[str] | None = entry.get("choices")
    kwargs: dict[str, Any] = {"dest": dest} if options else {}
    # Defaults without a JSON form (recorded by type name only) become None.
    kwargs["default"] = entry.get("default")
    if entry.get("required") and options:
        kwargs["required"] = True

    if action_name == "BooleanOptionalAction":
        _add_boolean_optional(parser, entry)
        return
    if entry.get("refused_when_used"):
        nargs = entry.get("nargs")
        parser.add_argument(*options, action=_RefusedAction, nargs=nargs, **kwargs)
        return
    const = entry.get("const")
    if not entry["takes_value"]:
        if action_name == "_CountAction":
            parser.add_argument(*options, action="count", **kwargs)
        else:
            if const is None:
                const = action_name != "_StoreFalseAction"
            parser.add_argument(*options, action="store_const", const=const, **kwargs)
        return

    kwargs["nargs"] = entry.get("nargs")
    if kwargs["nargs"] == "?":
        kwargs["const"] = const
    converter = _converter(entry)
    numeric = converter if converter in (int, float) else None
    if choices is not None and numeric is not None:
        # argparse converts first, then looks the value up in the choices.
        kwargs["type"] = numeric
        kwargs["choices"] = [numeric(choice) for choice in choices]
    elif choices is not None:
        # Choices are recorded as strings; the raw string must be one of them.
        kwargs["choices"] = choices
    elif converter is not None:
        kwargs["type"] = converter
    if action_name == "DeprecatedStoreConstAction":
        parser.add_argument(*options, action=_ValueIgnoredAction, const=const, **kwargs)
        return
    action = "append" if action_name in ("_AppendAction", "_ExtendAction") else "store"
    parser.add_argument(*options, action=action, **kwargs)


def build_parser(
    snapshot: Snapshot, *, allow_abbrev: bool | None = None
) -> argparse.ArgumentParser:
    """An argparse parser equivalent to SGLang's, built from `snapshot`.

    `allow_abbrev=None` keeps SGLang's own setting (True in 0.5.23: a unique
    prefix of a flag is accepted); pass False to require full spellings.
    """
    actions: list[dict[str, Any]] = snapshot["actions"]
    has_help = any(entry["action"] == "_HelpAction" for entry in actions)
    parser = _RaisingParser(
        prog=str(snapshot.get("prog", "sglang")),
        add_help=has_help,
        allow_abbrev=bool(snapshot.get("allow_abbrev", True))
        if allow_abbrev is None
        else allow_abbrev,
        prefix_chars=str(snapshot.get("prefix_chars", "-")),
        exit_on_error=False,
    )
    for entry in actions:
        if entry["action"] != "_HelpAction":
            _add_action(parser, entry)
    return parser


@functools.cache
def _cached_parser(version: str, allow_abbrev: bool | None) -> argparse.ArgumentParser:
    return build_parser(load_snapshot(version), allow_abbrev=allow_abbrev)


def strip_launcher(argv: Sequence[str]) -> list[str]:
    """The server arguments of `python3 -m sglang.launch_server ARGS...`."""
    args = list(argv)
    if (
        len(args) >= 3
        and _PYTHON_NAME.match(Path(args[0]).name)
        and args[1] == "-m"
        and args[2] == LAUNCH_MODULE
    ):
        return args[3:]
    shown = " ".join(args[:3])
    raise SglangArgsError(
        f"not an SGLang launch command (expected 'python3 -m {LAUNCH_MODULE} ...'): {shown!r}"
    )


def _flag_of(argument_name: str | None) -> str | None:
    if not argument_name:
        return None
    return argument_name.split("/", 1)[0]


def parse_sglang_args(
    args: Sequence[str],
    version: str = DEFAULT_VERSION,
    *,
    allow_abbrev: bool | None = None,
) -> argparse.Namespace:
    """Parse server arguments (no launcher prefix) as SGLang `version` would."""
    parser = _cached_parser(version, allow_abbrev)
    try:
        namespace, extras = parser.parse_known_args(list(args))
    except argparse.ArgumentError as exc:
        flag = _flag_of(exc.argument_name)
        raise SglangArgsError(f"sglang {version} would refuse {flag}: {exc.message}", flag) from exc
    if extras:
        flag = next((e for e in extras if e.startswith("-")), extras[0])
        raise SglangArgsError(
            f"sglang {version} would refuse unrecognized argument {flag!r} "
            f"(all unrecognized: {extras})",
            flag,
        )
    return namespace


def parse_sglang_command(
    argv: Sequence[str],
    version: str = DEFAULT_VERSION,
    *,
    allow_abbrev: bool | None = None,
) -> argparse.Namespace:
    """Parse a full `python3 -m sglang.launch_server ...` command as SGLang would.

    Raises SglangArgsError naming the flag for an unknown flag, a value not in
    the choices, a value of the wrong type, a missing value or a missing
    required flag.
    """
    return parse_sglang_args(strip_launcher(argv), version, allow_abbrev=allow_abbrev)


def deprecated_flags(version: str = DEFAULT_VERSION) -> frozenset[str]:
    """Every option string of a deprecated action (e.g. `--enable-dp-attention`)."""
    return frozenset(
        option
        for entry in load_snapshot(version)["actions"]
        if entry["deprecated"]
        for option in entry["option_strings"]
    )


def used_deprecated_flags(argv: Sequence[str], version: str = DEFAULT_VERSION) -> list[str]:
    """The deprecated flags that appear in `argv` (also as `--flag=value`)."""
    deprecated = deprecated_flags(version)
    return [arg.split("=", 1)[0] for arg in argv if arg.split("=", 1)[0] in deprecated]


def option_strings(version: str = DEFAULT_VERSION) -> frozenset[str]:
    """Every option string SGLang `version` accepts."""
    return frozenset(
        option for entry in load_snapshot(version)["actions"] for option in entry["option_strings"]
    )


def choices_of(flag: str, version: str = DEFAULT_VERSION) -> list[str] | None:
    """The recorded choices of `flag`, or None when it takes any value."""
    for entry in load_snapshot(version)["actions"]:
        if flag in entry["option_strings"]:
            choices: list[str] | None = entry["choices"]
            return choices
    raise KeyError(f"sglang {version} has no flag {flag}")
