"""Validating a DT folder and its ``dt.yaml``: every problem at once, with file, line, column.

Parsing keeps the YAML node tree, so every error pydantic finds in the data is reported
at the position of the key or value it is about. Messages say what is wrong and what
to do; warnings are kept apart from errors.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from dtaas.twins.manifest import (
    MANIFEST_FILE,
    PHASES,
    Manifest,
    Parameter,
    PhaseOverride,
    Resources,
    TelemetryField,
)

Severity = Literal["error", "warning"]
MAX_MANIFEST_BYTES = 256 * 1024


class _ManifestLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false, so `on:`, `yes`, `no` stay text."""


_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_ManifestLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)

_CLOSERS = {"[": "]", "{": "}", '"': '"', "'": "'"}
_YAML_HINTS = {
    "mapping values are not allowed here": (
        "a `:` is not allowed here; check the indentation of this line, or quote a value "
        "that contains `: `"
    ),
    "expected <block end>, but found '<block mapping start>'": (
        "this line is indented differently from the keys above it; indent the keys of one "
        "mapping equally"
    ),
}


_BREAK = re.compile("\r\n|[\n\r\x85\u2028\u2029]")  # YAML's line breaks


def _line_column(text: str, index: int) -> tuple[int, int]:
    breaks = list(_BREAK.finditer(text, 0, index))
    return len(breaks) + 1, index - (breaks[-1].end() if breaks else 0) + 1


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str) -> tuple[str, int | None, int | None]:
    """A YAML syntax error in words, with the line and column to report it at."""
    problem = exc.problem or "the file is not valid YAML"
    mark = exc.problem_mark or exc.context_mark
    if mark is None:
        return problem, None, None
    if text[mark.index :].strip():
        if problem.startswith("but ") and exc.context:
            problem = f"{exc.context} {problem}"
        return _YAML_HINTS.get(problem, problem), mark.line + 1, mark.column + 1
    # The end of the file says nothing: point at what was left open, or at the last
    # character written.
    opened = exc.context_mark
    last = len(text.rstrip()) - 1
    index = opened.index if opened is not None and opened.index <= last else max(last, 0)
    line, column = _line_column(text, index)
    opener = text[index : index + 1]
    if opener in _CLOSERS:
        problem = f"this `{opener}` is never closed; add the matching `{_CLOSERS[opener]}`"
    return problem, line, column


# Known keys per place in the manifest, for "did you mean" suggestions.
_MODELS: dict[str, type[BaseModel]] = {
    "": Manifest,
    "parameters.*": Parameter,
    "resources": Resources,
    "phases.*": PhaseOverride,
    "telemetry.*": TelemetryField,
}


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: where (file, 1-based line and column) and what to do."""

    severity: Severity
    file: str
    line: int | None
    column: int | None
    message: str

    def format(self) -> str:
        """``file:line:col: severity: message``, as compilers print it."""
        where = self.file
        if self.line is not None:
            where += f":{self.line}:{self.column or 1}"
        return f"{where}: {self.severity}: {self.message}"


@dataclass(frozen=True, slots=True)
class Report:
    """The outcome of validating a DT."""

    manifest: Manifest | None
    problems: list[Problem]

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def is_valid(self) -> bool:
        return not self.errors


class _Located:
    """Finds the YAML node for a path of keys and indexes."""

    def __init__(self, root: yaml.Node | None) -> None:
        self.root = root

    def node(self, loc: tuple[str | int, ...], *, key: bool = False) -> yaml.Node | None:
        current = self.root
        for index, part in enumerate(loc):
            last = index == len(loc) - 1
            if isinstance(current, yaml.MappingNode):
                found = None
                for key_node, value_node in current.value:
                    if key_node.value == str(part):
                        found = key_node if (last and key) else value_node
                        break
                if found is None:
                    return current
                current = found
            elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
                if part >= len(current.value):
                    return current
                current = current.value[part]
            else:
                return current
        return current


def _position(node: yaml.Node | None) -> tuple[int | None, int | None]:
    if node is None:
        return None, None
    return node.start_mark.line + 1, node.start_mark.column + 1


def _place(loc: tuple[str | int, ...]) -> str:
    """``parameters.speed`` style for messages, and the model key pattern."""
    return ".".join(str(p) for p in loc)


def _model_for(loc: tuple[str | int, ...]) -> type[BaseModel] | None:
    if not loc:
        return Manifest
    if len(loc) == 1 and loc[0] == "resources":
        return Resources
    if len(loc) == 2 and loc[0] in ("parameters", "phases", "telemetry"):
        return _MODELS[f"{loc[0]}.*"]
    return None


def _suggest(loc: tuple[str | int, ...], unknown: str) -> str:
    model = _model_for(loc)
    if model is None:
        return ""
    close = difflib.get_close_matches(unknown, list(model.model_fields), n=1, cutoff=0.6)
    return f" — did you mean `{close[0]}`?" if close else ""


def _message(error: Any, located: _Located) -> tuple[str, yaml.Node | None]:
    loc: tuple[str | int, ...] = tuple(error["loc"])
    kind = error["type"]
    where = _place(loc)
    if kind == "extra_forbidden":
        unknown = str(loc[-1])
        parent = loc[:-1]
        known = _model_for(parent)
        hint = _suggest(parent, unknown)
        if not hint and known is not None:
            hint = "; allowed here: " + ", ".join(f"`{k}`" for k in known.model_fields)
        return f"unknown key `{unknown}`{hint}", located.node(loc, key=True)
    if kind == "missing":
        inside = f" in `{_place(loc[:-1])}`" if loc[:-1] else ""
        return f"missing key `{loc[-1]}`{inside}", located.node(loc[:-1])
    if loc and loc[-1] == "[key]":
        name, collection = loc[-2], loc[0]
        what = {"parameters": "parameter", "phases": "phase"}.get(str(collection), "key")
        rule = "lowercase letters, digits and _, starting with a letter or _"
        if what == "phase":
            rule = "lowercase letters, digits, - and _, starting with a letter"
        return f"{what} name `{name}` is not allowed: use {rule}", located.node(loc[:-1], key=True)
    ctx = error.get("ctx") or {}
    if kind == "parameter":
        field = str(ctx.get("field", ""))
        target = (*loc, field) if field else loc
        return f"`{_place(target)}`: {error['msg']}", located.node(target)
    if "index" in ctx:
        loc = (*loc, int(ctx["index"]))
    node = located.node(loc)
    text = str(error["msg"]).removeprefix("Value error, ")
    if kind == "literal_error" and loc == ("manifest",):
        text = "must be 1, the only version of dt.yaml so far"
    elif kind in ("literal_error", "enum"):
        expected = str(ctx.get("expected", "")).replace("'", "")
        given = error.get("input")
        shown = f"`{given}`"
        if isinstance(given, list | dict):
            shown = "a list" if isinstance(given, list) else "a mapping"
        text = f"{shown} is not allowed; use one of {expected}"
    elif kind == "model_type":
        model = _model_for(loc)
        required = [
            f"`{n}:`" for n, f in (model.model_fields if model else {}).items() if f.is_required()
        ]
        text = "expected a mapping" + (f" with {', '.join(required)}" if required else "")
    elif kind == "string_pattern_mismatch" and loc[:1] == ("telemetry",) and loc[-1:] == ("field",):
        return (
            f"telemetry field `{error.get('input')}` is not allowed: use letters, digits, _ "
            "and ., starting with a letter or _",
            node,
        )
    return f"`{where}`: {text}" if where else text, node


def _duplicate_keys(node: yaml.Node | None, found: list[tuple[str, yaml.Node]]) -> None:
    # Each node once: aliases share nodes, and may even contain themselves.
    visited: set[int] = set()
    pending = [node]
    while pending:
        current = pending.pop()
        if current is None or id(current) in visited:
            continue
        visited.add(id(current))
        if isinstance(current, yaml.MappingNode):
            seen: set[str] = set()
            for key_node, value_node in current.value:
                if key_node.value in seen:
                    found.append((str(key_node.value), key_node))
                seen.add(key_node.value)
                pending.append(value_node)
        elif isinstance(current, yaml.SequenceNode):
            pending.extend(current.value)


def parse_manifest(text: str, *, file: str = MANIFEST_FILE) -> Report:
    """Parse and check manifest text; every problem is reported, each with its position."""
    problems: list[Problem] = []

    def add(message: str, node: yaml.Node | None, severity: Severity = "error") -> None:
        line, column = _position(node)
        problems.append(Problem(severity, file, line, column, message))

    try:
        root = yaml.compose(text, Loader=_ManifestLoader)
        data = yaml.load(text, Loader=_ManifestLoader)  # noqa: S506 (a SafeLoader)
    except yaml.MarkedYAMLError as exc:
        reason, line, column = _syntax_problem(exc, text)
        problems.append(Problem("error", file, line, column, f"YAML syntax: {reason}"))
        return Report(None, problems)
    except RecursionError:
        problems.append(Problem("error", file, None, None, "the manifest nests too deeply"))
        return Report(None, problems)
    except yaml.YAMLError as exc:
        problems.append(Problem("error", file, None, None, f"YAML: {exc}"))
        return Report(None, problems)
    if data is None:
        add("the manifest is empty; start with `manifest: 1` and `name:`", root)
        return Report(None, problems)
    if not isinstance(data, dict):
        add("the manifest must be a mapping of keys such as `manifest:` and `name:`", root)
        return Report(None, problems)
    duplicates: list[tuple[str, yaml.Node]] = []
    _duplicate_keys(root, duplicates)
    for key, node in duplicates:
        add(f"key `{key}` appears twice; the later one would win — remove one", node)
    located = _Located(root)
    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        seen: set[tuple[int | None, int | None, str]] = set()
        for error in exc.errors():
            # Union branches repeat a location; keep the first message per location.
            loc = tuple(p for p in error["loc"] if not _is_union_branch(p))
            ctx = error.get("ctx") or {}
            parts = ctx.get("problems") if error["type"] == "parameter" else None
            singles = [{**error, "loc": loc, "ctx": {"field": f}, "msg": m} for f, m in parts or []]
            for one in singles or [{**error, "loc": loc}]:
                message, found = _message(one, located)
                line, column = _position(found)
                if (line, column, _place(loc)) in seen and error["type"] != "extra_forbidden":
                    continue
                seen.add((line, column, _place(loc)))
                add(message, found)
    problems.sort(key=lambda p: (p.line or 0, p.column or 0))
    return Report(manifest, problems)


_UNION_BRANCHES = {"str", "int", "float", "bool", "none", "list[union[str,int,float]]"}


def _is_union_branch(part: str | int) -> bool:
    return isinstance(part, str) and (
        part in _UNION_BRANCHES or part.startswith(("literal[", "function-after["))
    )


def _lifecycle_problems(folder: Path, manifest: Manifest | None) -> list[Problem]:
    problems: list[Problem] = []
    lifecycle = folder / "lifecycle"
    overrides = set(manifest.phases) if manifest else set()
    if not lifecycle.is_dir():
        if not overrides:
            problems.append(
                Problem(
                    "error",
                    "lifecycle/",
                    None,
                    None,
                    "there is no lifecycle/ folder and dt.yaml overrides no phase: nothing "
                    "can run; add lifecycle/execute or a `phases:` entry",
                )
            )
        return problems
    if not phase_scripts(folder) and not overrides:
        problems.append(
            Problem(
                "error",
                "lifecycle/",
                None,
                None,
                "lifecycle/ has no phase script (a file without a dot, e.g. lifecycle/execute) "
                "and dt.yaml overrides no phase: nothing can run; add lifecycle/execute or a "
                "`phases:` entry",
            )
        )
    for script in sorted(phase_scripts(folder)):
        path = lifecycle / script
        relative = f"lifecycle/{script}"
        info = path.stat()
        if not info.st_mode & stat.S_IXUSR:
            problems.append(
                Problem(
                    "error",
                    relative,
                    None,
                    None,
                    f"{relative} is not executable: chmod +x {relative}",
                )
            )
        with path.open("rb") as handle:
            head = handle.read(2)
        if head != b"#!":
            problems.append(
                Problem(
                    "warning",
                    relative,
                    1,
                    1,
                    f"{relative} has no #! line; add e.g. #!/bin/bash so it runs with the "
                    "shell you expect",
                )
            )
    return problems


def phase_scripts(folder: Path) -> list[str]:
    """The lifecycle scripts of a DT: files in ``lifecycle/`` without a dot, as the reference."""
    lifecycle = folder / "lifecycle"
    if not lifecycle.is_dir() or lifecycle.is_symlink():
        return []
    names = [
        entry.name
        for entry in os.scandir(lifecycle)
        if "." not in entry.name and entry.is_file(follow_symlinks=False)
    ]
    # The reference examples run `install` before `create` and `prepare` after it.
    order = {
        phase: index for index, phase in enumerate(("install", "create", "prepare", *PHASES[1:]))
    }
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


@functools.lru_cache(maxsize=1024)
def _parsed(text: str) -> Report:
    # Listing hundreds of instances reads the same few manifests again and again.
    return parse_manifest(text)


def load_manifest(folder: Path) -> Manifest | None:
    """The folder's manifest if it parses without errors, else None; unlike
    ``validate_folder`` it looks at nothing else of the folder."""
    path = folder / MANIFEST_FILE
    if not path.is_file() or path.is_symlink() or path.stat().st_size > MAX_MANIFEST_BYTES:
        return None
    return _parsed(path.read_text(encoding="utf-8", errors="replace")).manifest


def validate_folder(
    folder: Path,
    *,
    asset_exists: Callable[[str], bool | None] | None = None,
) -> Report:
    """Validate a DT folder: its manifest (if any), lifecycle scripts and description.

    ``asset_exists`` answers whether a library path exists for the DT's owner (None when
    it cannot tell, e.g. offline); without it, assets are not checked.
    """
    problems: list[Problem] = []
    manifest: Manifest | None = None
    manifest_path = folder / MANIFEST_FILE
    located: _Located | None = None
    if manifest_path.is_file() and not manifest_path.is_symlink():
        if manifest_path.stat().st_size > MAX_MANIFEST_BYTES:
            problems.append(
                Problem("error", MANIFEST_FILE, None, None, "dt.yaml is larger than 256 KiB")
            )
        else:
            text = manifest_path.read_text(encoding="utf-8", errors="replace")
            report = _parsed(text)
            problems.extend(report.problems)
            manifest = report.manifest
            if manifest is not None:
                located = _Located(yaml.compose(text, Loader=_ManifestLoader))
    problems.extend(_lifecycle_problems(folder, manifest))
    if manifest is not None and located is not None:
        problems.extend(_manifest_against_folder(folder, manifest, located, asset_exists))
    described = any((folder / name).is_file() for name in ("description.md", "README.md"))
    if not described and (manifest is None or not manifest.description):
        problems.append(
            Problem(
                "warning",
                "description.md",
                None,
                None,
                "there is no description.md or README.md; add one so users know what this DT does",
            )
        )
    return Report(manifest, problems)


def _manifest_against_folder(
    folder: Path,
    manifest: Manifest,
    located: _Located,
    asset_exists: Callable[[str], bool | None] | None,
) -> list[Problem]:
    problems: list[Problem] = []

    def add(
        message: str, loc: tuple[str | int, ...], severity: Severity = "error", key: bool = False
    ) -> None:
        line, column = _position(located.node(loc, key=key))
        problems.append(Problem(severity, MANIFEST_FILE, line, column, message))

    scripts = set(phase_scripts(folder))
    for phase in manifest.phases:
        if phase in scripts:
            add(
                f"phase `{phase}` is overridden here and also has lifecycle/{phase}; the "
                "override wins — remove one of them",
                ("phases", phase),
                "warning",
                key=True,
            )
    if asset_exists is not None:
        for index, asset in enumerate(manifest.assets):
            exists = asset_exists(asset)
            if exists is False:
                add(f"asset `{asset}` does not exist", ("assets", index))
            elif exists is None:
                add(f"asset `{asset}` cannot be checked here", ("assets", index), "warning")
        for name, parameter in manifest.parameters.items():
            default = parameter.default
            if (
                isinstance(default, str)
                and parameter.type == "asset"
                and asset_exists(default) is False
            ):
                add(
                    f"the default asset `{parameter.default}` of parameter `{name}` does not exist",
                    ("parameters", name, "default"),
                )
    return problems
