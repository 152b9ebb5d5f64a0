#!/usr/bin/env python3
"""Snapshot the command-line parser of a real sglang release into a JSON file.

Usage (from the repository root, on demand; not part of `make test`)::

    .venv/bin/python hack/snapshot-sglang-args.py [--version 0.5.23]

What it does, step by step (each step names itself when it fails):

1. creates a throwaway virtualenv in a temporary directory, with the same
   Python as the one running this script (sglang publishes per-CPython wheels);
2. `pip download --no-deps --only-binary=:all: sglang==VERSION` into it, through
   pip as configured on the machine;
3. installs that wheel with `--no-deps`;
4. installs the only small dependencies the argument code needs for real:
   `msgspec` (ServerArgs and the `Arg` metadata of every flag are msgspec
   structs, so it cannot be stubbed), `packaging` and `typing_extensions`
   (pure Python, imported at module level and used to compare versions);
5. runs this same file inside that virtualenv with `--probe`: it imports
   `sglang.srt.server_args` and obtains the parser exactly as
   `sglang/launch_server.py` does: `load_plugins()`, then
   `prepare_server_args(argv)`, which creates
   `argparse.ArgumentParser(prog="sglang serve")` and calls
   `ServerArgs.add_cli_args(parser)`. The probe stops `prepare_server_args` at
   its `parse_args` call and takes the parser it was called on, so the parser
   is sglang's own object, not a reconstruction;
6. walks `parser._actions` and writes `tests/testdata/sglang/server-args-VERSION.json`.

Stubbed modules (probe only). Importing `sglang.launch_server` and
`sglang.srt.server_args` drags in, at module level, the runtime stack of the
server: `torch`, `triton`, `numpy`, `transformers`, `huggingface_hub`, `PIL`,
`starlette`, `pydantic`/`pydantic_core`, `zmq`, `aiohttp`, `IPython`, `tqdm`,
`requests`, `orjson`, `psutil`, `pybase64` (see `STUBBED_TOP_LEVEL`). Each is
replaced by a permissive stand-in module in `sys.modules` whose attributes are
inert objects. The stand-in `torch` reports
no accelerator (no `torch.npu`/`torch.mps`, `torch.version.cuda/hip = None`,
`is_available()` false), so sglang resolves its base platform. This does not
change the parser's flags because:

* every flag comes from `add_cli_args_from_dataclass(parser, ServerArgs)`, whose
  names, nargs, types and choices are read from the `Arg(...)` annotations of
  the ServerArgs field groups (`sglang/srt/arg_groups/fields/`), and from a few
  explicit `add_argument` calls in `ServerArgs.add_cli_args`; their choice
  lists are static lists in `sglang/srt/arg_groups/choices.py`, or name lists in
  `sglang/srt/parser/reasoning_parser_names.py` and
  `sglang/srt/function_call/parser_names.py`, none of which depends on a
  stubbed module or on the platform; the `add_*_choices` hooks that extend
  those lists are called only by out-of-tree plugins, and a fresh virtualenv
  has none;
* the probe records every attribute touched on a stand-in while the parser is
  being built and fails if there is any, so no flag can have been derived from
  a stub (what module import touched is reported but cannot reach a flag, per
  the point above);
* environment variables that steer sglang (`SGLANG_*`, `SGL_*`, e.g.
  `SGLANG_KV_CANARY_ENABLE_TOKEN_ORACLE`, which adds a `--sampling-backend`
  choice) are removed from the probe's environment, so the snapshot shows the
  defaults.

The snapshot is sorted and pretty-printed so that regenerating it for a new
version gives a readable diff.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.abc
import importlib.machinery
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

DEFAULT_VERSION = "0.5.23"
REPO_ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT_DIR = REPO_ROOT / "tests" / "testdata" / "sglang"
SNAPSHOT_FORMAT = 1

# Installed for real in the throwaway virtualenv (see the module docstring).
REAL_DEPENDENCIES = ("msgspec", "packaging", "typing_extensions")

# Replaced by stand-ins in the probe (see the module docstring).
STUBBED_TOP_LEVEL = (
    "IPython",
    "PIL",
    "aiohttp",
    "huggingface_hub",
    "numpy",
    "orjson",
    "psutil",
    "pybase64",
    "pydantic",
    "pydantic_core",
    "requests",
    "starlette",
    "torch",
    "tqdm",
    "transformers",
    "triton",
    "zmq",
)

# Attributes a stand-in must not have: accelerator namespaces whose mere
# presence sglang takes as "this hardware exists", and protocol attributes that
# Python, inspect or typing probe with getattr()/hasattr().
_ABSENT_ATTRIBUTES = {
    "torch": frozenset({"npu", "mps"}),
}
_NONE_ATTRIBUTES = {
    "torch.version": frozenset({"cuda", "hip", "musa", "git_version"}),
}
_PROTOCOL_ATTRIBUTES = frozenset(
    {
        "__wrapped__",
        "__signature__",
        "__origin__",
        "__args__",
        "__parameters__",
        "__func__",
        "__self__",
        "__fspath__",
        "__index__",
        "__length_hint__",
        "__set_name__",
        "__get__",
        "__set__",
        "__delete__",
        "__class_getitem__",
        "__dataclass_fields__",
        "__struct_fields__",
        "__origin_class__",
        "__supertype__",
        "__file__",
        "__loader__",
    }
)


class SnapshotError(Exception):
    """A step of the snapshot failed; the message names the step."""


# --------------------------------------------------------------------------
# Probe side: runs inside the throwaway virtualenv.
# --------------------------------------------------------------------------


class _StubRegistry:
    """Version pins for stand-ins, and the log of what was touched on them."""

    def __init__(self) -> None:
        self.versions: dict[str, str] = {}
        self.phase = "import"
        self.touched: dict[str, set[str]] = {}

    def note(self, path: str) -> None:
        self.touched.setdefault(self.phase, set()).add(path)


_REGISTRY = _StubRegistry()


def _stub_attribute(owner: str, name: str) -> Any:
    """The value of attribute `name` on the stand-in called `owner`."""
    if name in _PROTOCOL_ATTRIBUTES or name in _ABSENT_ATTRIBUTES.get(owner, ()):
        raise AttributeError(name)
    path = f"{owner}.{name}"
    _REGISTRY.note(path)
    if name in _NONE_ATTRIBUTES.get(owner, ()):
        return None
    if name == "__version__":
        return _REGISTRY.versions.get(owner.split(".", maxsplit=1)[0], "0.0.0")
    full = sys.modules.get(path)
    if full is not None:
        return full
    return _Stub(path)


class _Stub:
    """An inert object: every attribute, call, item or operation gives another one.

    Called with a single callable and nothing else it returns that callable, so
    it works as a decorator (`@torch.compile`, `@triton.jit`). Used as a base
    class it contributes an empty class. It is falsy, empty and zero.
    """

    def __init__(self, path: str) -> None:
        object.__setattr__(self, "_stub_path", path)

    def __getattr__(self, name: str) -> Any:
        return _stub_attribute(object.__getattribute__(self, "_stub_path"), name)

    def __setattr__(self, name: str, value: object) -> None:
        object.__setattr__(self, name, value)

    def __call__(self, *args: object, **kwargs: object) -> Any:
        if len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]
        return _Stub(object.__getattribute__(self, "_stub_path") + "()")

    def __mro_entries__(self, bases: tuple[object, ...]) -> tuple[type, ...]:
        name = object.__getattribute__(self, "_stub_path").rsplit(".", 1)[-1]
        return (type(name, (_StubBase,), {}),)

    def __getitem__(self, key: object) -> Any:
        return _Stub(object.__getattribute__(self, "_stub_path") + "[]")

    def __iter__(self) -> Iterator[Any]:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __bool__(self) -> bool:
        return False

    def __int__(self) -> int:
        return 0

    def __float__(self) -> float:
        return 0.0

    def __contains__(self, item: object) -> bool:
        return False

    def __lt__(self, other: object) -> bool:
        return False

    __le__ = __gt__ = __ge__ = __lt__

    def _operation(self, *other: object) -> Any:
        return _Stub(object.__getattribute__(self, "_stub_path") + "(op)")

    __neg__ = __pos__ = __invert__ = __abs__ = _operation
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = _operation
    __truediv__ = __rtruediv__ = __floordiv__ = __rfloordiv__ = _operation
    __mod__ = __rmod__ = __pow__ = __rpow__ = _operation
    __or__ = __ror__ = __and__ = __rand__ = __xor__ = __rxor__ = _operation
    __lshift__ = __rlshift__ = __rshift__ = __rrshift__ = _operation

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


class _StubBase:
    """Base class that a class deriving from a stand-in gets instead."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __init_subclass__(cls, **kwargs: object) -> None:
        pass


class _StubModule(types.ModuleType):
    """A stand-in module; its attributes come from `_stub_attribute`."""

    def __getattr__(self, name: str) -> Any:
        return _stub_attribute(self.__name__, name)


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class _StubFinder(importlib.abc.MetaPathFinder):
    """Answers imports of the stubbed top-level packages (and their submodules)."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".", maxsplit=1)[0] not in STUBBED_TOP_LEVEL:
            return None
        return importlib.machinery.ModuleSpec(fullname, _StubLoader(), is_package=True)


def _pinned_versions(requirements: list[str]) -> dict[str, str]:
    """`name==version` pins from sglang's metadata, keyed by import name."""
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = re.match(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*==\s*([^\s;,]+)", requirement)
        if match:
            pins[match.group(1).lower().replace("-", "_")] = match.group(2)
    return pins


class _ParserCapturedError(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__("parser captured")
        self.parser = parser


def _capture_launch_server_parser(
    prepare_server_args: Callable[[list[str]], object],
) -> argparse.ArgumentParser:
    """Run sglang's own `prepare_server_args` up to `parse_args`, keep the parser."""
    original = argparse.ArgumentParser.parse_args

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> NoReturn:
        raise _ParserCapturedError(self)

    argparse.ArgumentParser.parse_args = capture  # type: ignore[method-assign]
    try:
        prepare_server_args(["--model-path", "snapshot-probe"])
    except _ParserCapturedError as captured:
        return captured.parser
    finally:
        argparse.ArgumentParser.parse_args = original  # type: ignore[method-assign]
    raise SnapshotError("probe: prepare_server_args returned without calling parse_args")


def _type_name(kind: object) -> str | None:
    if kind is None:
        return None
    for builtin in (int, float, str):
        if kind is builtin:
            return builtin.__name__
    return "other"


def _type_detail(kind: object) -> str | None:
    if kind is None or kind in (int, float, str):
        return None
    module = getattr(kind, "__module__", "") or ""
    name = getattr(kind, "__qualname__", None) or type(kind).__qualname__
    return f"{module}.{name}" if module else str(name)


def _choices(action: argparse.Action) -> list[str] | None:
    if action.choices is None:
        return None
    return sorted(str(choice) for choice in action.choices)


def _json_safe(value: object) -> bool:
    if value is None or isinstance(value, bool | int | str):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list | tuple):
        return all(_json_safe(item) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_safe(v) for k, v in value.items())
    return False


def _default(action: argparse.Action) -> dict[str, Any]:
    """The default as JSON, or the name of its type when it has no JSON form."""
    default = action.default
    if isinstance(default, _Stub):
        raise SnapshotError(f"probe: the default of {action.option_strings} comes from a stub")
    if _json_safe(default):
        return {"default": default, "default_type": None}
    return {"default": None, "default_type": type(default).__name__}


def describe_action(action: argparse.Action) -> dict[str, Any]:
    """One parser action as plain JSON data."""
    action_class = type(action)
    nargs = action.nargs
    # sglang's DeprecatedStoreConstAction keeps what it stores in const_value.
    const = getattr(action, "const_value", action.const)
    return {
        "option_strings": list(action.option_strings),
        "dest": action.dest,
        "nargs": nargs if nargs is None or isinstance(nargs, int | str) else str(nargs),
        "takes_value": nargs != 0,
        "action": action_class.__name__,
        "action_module": action_class.__module__,
        "deprecated": action_class.__name__.startswith("Deprecated"),
        # sglang's DeprecatedAction with an error_message stops the launch.
        "refused_when_used": getattr(action, "error_message", None) is not None,
        "choices": _choices(action),
        "type": _type_name(action.type),
        "type_detail": _type_detail(action.type),
        "required": bool(action.required),
        "const": const if _json_safe(const) else None,
        **_default(action),
    }


def _action_sort_key(entry: dict[str, Any]) -> tuple[str, str]:
    options: list[str] = entry["option_strings"]
    return (options[0] if options else "", entry["dest"])


def probe(version: str, out_path: Path) -> None:
    """Import the installed sglang (with stand-ins) and write its parser as JSON."""
    installed = metadata.version("sglang")
    if installed != version:
        raise SnapshotError(f"probe: installed sglang is {installed}, expected {version}")
    _REGISTRY.versions = _pinned_versions(metadata.requires("sglang") or [])
    sys.meta_path.insert(0, _StubFinder())

    try:
        launch_server = importlib.import_module("sglang.launch_server")
        load_plugins = launch_server.load_plugins
        prepare_server_args = launch_server.prepare_server_args
    except Exception as exc:
        raise SnapshotError(
            f"probe: importing sglang.launch_server failed: {exc!r}; a module it needs "
            "may have to be added to REAL_DEPENDENCIES or STUBBED_TOP_LEVEL"
        ) from exc

    _REGISTRY.phase = "parser"
    load_plugins()
    parser = _capture_launch_server_parser(prepare_server_args)
    _REGISTRY.phase = "done"

    touched_while_building = sorted(_REGISTRY.touched.get("parser", set()))
    if touched_while_building:
        raise SnapshotError(
            "probe: building the parser touched stubbed modules, so the snapshot could "
            f"depend on a stub: {touched_while_building}"
        )

    actions = sorted((describe_action(a) for a in parser._actions), key=_action_sort_key)
    snapshot = {
        "format": SNAPSHOT_FORMAT,
        "sglang_version": version,
        "generated_by": "hack/snapshot-sglang-args.py",
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
        "prog": parser.prog,
        "allow_abbrev": parser.allow_abbrev,
        "prefix_chars": parser.prefix_chars,
        "fromfile_prefix_chars": parser.fromfile_prefix_chars,
        "stubbed_modules": sorted(STUBBED_TOP_LEVEL),
        "actions": actions,
    }
    out_path.write_text(json.dumps(snapshot), encoding="utf-8")
    imported = len(_REGISTRY.touched.get("import", set()))
    print(f"probe: {len(actions)} actions; stand-ins touched {imported} attributes at import")


# --------------------------------------------------------------------------
# Driver side: runs with the project's Python.
# --------------------------------------------------------------------------


def _fail(step: str, detail: str) -> NoReturn:
    raise SnapshotError(f"step '{step}' failed: {detail}")


def _run(step: str, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    print(f"[{step}] {' '.join(argv)}", flush=True)
    try:
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        _fail(step, f"could not run {argv[0]}: {exc}")
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
        _fail(step, f"exit status {result.returncode}\n{tail}")
    for line in result.stdout.strip().splitlines():
        if line.startswith("probe:"):
            print(f"[{step}] {line}")


def _probe_environment() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("SGLANG_", "SGL_", "PYTHON"))
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def snapshot(version: str, python: str, output: Path) -> dict[str, Any]:
    """Run all steps and write the snapshot file; returns the snapshot."""
    with tempfile.TemporaryDirectory(prefix="sglang-args-") as tmp:
        work = Path(tmp)
        venv = work / "venv"
        vpython = str(venv / "bin" / "python")
        _run("create virtualenv", [python, "-m", "venv", str(venv)], work)
        downloads = work / "downloads"
        _run(
            "download sglang wheel",
            [
                vpython,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                str(downloads),
                f"sglang=={version}",
            ],
            work,
        )
        wheels = sorted(downloads.glob("sglang-*.whl"))
        if len(wheels) != 1:
            _fail("download sglang wheel", f"expected one sglang wheel, found {wheels}")
        print(f"[download sglang wheel] got {wheels[0].name}")
        _run(
            "install sglang --no-deps",
            [vpython, "-m", "pip", "install", "--no-deps", "--no-index", str(wheels[0])],
            work,
        )
        _run(
            "install small dependencies",
            [vpython, "-m", "pip", "install", "--only-binary=:all:", *REAL_DEPENDENCIES],
            work,
        )
        raw = work / "snapshot.json"
        _run(
            "probe parser",
            [
                vpython,
                "-I",
                str(Path(__file__).resolve()),
                "--probe",
                str(raw),
                "--version",
                version,
            ],
            work,
            env=_probe_environment(),
        )
        try:
            data: dict[str, Any] = json.loads(raw.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            _fail("read probe output", str(exc))
    if data.get("sglang_version") != version or not data.get("actions"):
        _fail("check snapshot", f"unexpected probe output header: {list(data)}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        _fail("write snapshot", str(exc))
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0] if __doc__ else None)
    parser.add_argument("--version", default=DEFAULT_VERSION, help="sglang version to snapshot")
    parser.add_argument(
        "--python",
        default=sys.executable,
        help="interpreter for the throwaway virtualenv (default: this one)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="snapshot file (default: tests/testdata/sglang/server-args-VERSION.json)",
    )
    parser.add_argument("--probe", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        if args.probe is not None:
            probe(args.version, args.probe)
            return 0
        output = args.output or SNAPSHOT_DIR / f"server-args-{args.version}.json"
        data = snapshot(args.version, args.python, output)
    except SnapshotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    shown = output.relative_to(REPO_ROOT) if output.is_relative_to(REPO_ROOT) else output
    deprecated = sum(1 for action in data["actions"] if action["deprecated"])
    print(
        f"wrote {shown}: sglang {data['sglang_version']}, {len(data['actions'])} actions "
        f"({deprecated} deprecated)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
