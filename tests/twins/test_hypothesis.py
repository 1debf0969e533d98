"""Property tests of manifest parsing and parameter values: never crash, agree, round-trip."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dtaas.twins.manifest import KINDS, PHASES, SERVICES, Manifest, Parameter, check_value
from dtaas.twins.service import check_values
from dtaas.twins.validate import Report, parse_manifest

# Text a YAML file can hold: no surrogates, no control characters but newline and tab.
words = st.text(
    st.characters(exclude_categories=("Cs", "Cc"), include_characters="\n\t"), max_size=20
)
identifiers = st.from_regex(r"[a-z_][a-z0-9_]{0,12}", fullmatch=True)
bad_identifiers = st.sampled_from(["Speed", "1x", "speed-max", "", "a b", "é"])
finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)
numbers = st.one_of(st.integers(-1000, 1000), finite)
scalars = st.one_of(st.none(), st.booleans(), numbers, words)
patterns = ["[a-z]+", "[0-9]{2}", ".*", "sensor-[0-9]+", "[A-Za-z0-9_-]{1,64}"]
good_asset_paths = st.builds(
    lambda common, kind, name: f"{'common/' if common else ''}{kind}/{name}",
    st.booleans(),
    st.sampled_from(KINDS),
    identifiers,
)
asset_paths = st.one_of(
    good_asset_paths,
    st.sampled_from(["/etc/passwd", "common/../x", "", "models/../../y", "tank.fmu"]),
)


def _maybe(strategy: st.SearchStrategy[Any], *wrong: Any) -> st.SearchStrategy[Any]:
    """Mostly good values, sometimes one of ``wrong``."""
    return st.integers(0, 5).flatmap(lambda i: st.sampled_from(wrong) if i == 5 else strategy)


parameter_specs = st.fixed_dictionaries(
    {
        "type": _maybe(
            st.sampled_from(["string", "int", "float", "bool", "enum", "asset"]), "integer"
        )
    },
    optional={
        "default": scalars,
        "help": words,
        "min": numbers,
        "max": numbers,
        "pattern": _maybe(st.sampled_from(patterns), "[a-", "("),
        "choices": st.lists(st.one_of(words, st.integers(0, 9)), max_size=4),
        "kind": _maybe(st.sampled_from(KINDS), "model"),
        "required": _maybe(st.booleans(), "maybe"),
    },
)


@st.composite
def valid_parameters(draw: st.DrawFn) -> dict[str, Any]:
    """A parameter spec that is valid by construction, with or without a default."""
    kind = draw(st.sampled_from(["string", "int", "float", "bool", "enum", "asset"]))
    spec: dict[str, Any] = {"type": kind, "help": draw(words)}
    default: Any = None
    if kind == "int":
        low, high = sorted([draw(st.integers(-1000, 1000)), draw(st.integers(-1000, 1000))])
        spec |= {"min": low, "max": high}
        default = draw(st.integers(low, high))
    elif kind == "float":
        bottom, top = sorted([draw(finite), draw(finite)])
        spec |= {"min": bottom, "max": top}
        default = draw(st.floats(bottom, top))
    elif kind == "string":
        spec["pattern"] = draw(st.sampled_from(patterns))
        default = draw(
            st.from_regex(spec["pattern"], fullmatch=True).filter(lambda v: "\n" not in v)
        )
    elif kind == "bool":
        default = draw(st.booleans())
    elif kind == "enum":
        spec["choices"] = draw(
            st.lists(
                st.one_of(identifiers, st.integers(0, 99)), min_size=1, max_size=4, unique=True
            )
        )
        default = draw(st.sampled_from(spec["choices"]))
    else:
        spec["kind"] = draw(st.sampled_from(KINDS))
        default = f"common/{spec['kind']}/{draw(identifiers)}"
    if draw(st.booleans()):
        spec["default"] = default
    return spec


resources = st.fixed_dictionaries(
    {},
    optional={
        "cpu": _maybe(st.floats(0.1, 64), 0, -1, "two"),
        "memory": _maybe(st.sampled_from([256, "512Mi", "2Gi", "1.5G", "64Ki"]), "lots", 0),
        "gpu": _maybe(st.integers(0, 4), -1),
        "wall_time": _maybe(st.sampled_from([60, "90s", "30m", "2h", "1d"]), "forever", 0),
    },
)
phases = st.dictionaries(
    _maybe(st.sampled_from(PHASES), "Execute", "execute.sh"),
    _maybe(st.fixed_dictionaries({"command": words.filter(bool)}), {}, None),
    max_size=3,
)
telemetry = st.lists(
    st.fixed_dictionaries(
        {"field": _maybe(identifiers, "1temp", "")},
        optional={"label": words, "unit": words},
    ),
    max_size=3,
)
manifests = st.fixed_dictionaries(
    {"manifest": _maybe(st.just(1), 2, "1"), "name": _maybe(words.filter(bool), "", None)},
    optional={
        "description": words,
        "version": _maybe(words, 1.0),
        "parameters": st.dictionaries(
            st.one_of(identifiers, bad_identifiers),
            st.one_of(valid_parameters(), parameter_specs),
            max_size=3,
        ),
        "assets": st.lists(asset_paths, max_size=3),
        "services": st.lists(_maybe(st.sampled_from(SERVICES), "kafka"), max_size=3),
        "resources": resources,
        "executor": _maybe(st.sampled_from(["local", "ray"]), "kubernetes"),
        "phases": phases,
        "outputs": st.lists(
            _maybe(st.sampled_from(["results/*.csv", "out/**"]), "/results/x", "../x"), max_size=3
        ),
        "telemetry": telemetry,
    },
)


def _check_positions(report: Report, source: str) -> None:
    lines = max(1, len(source.splitlines()))
    for problem in report.problems:
        assert problem.message
        assert problem.file == "dt.yaml"
        assert (problem.line is None) == (problem.column is None)
        assert 1 <= (problem.line or 1) <= lines, problem
        assert (problem.column or 1) >= 1


def _round_trip(manifest: Manifest) -> Manifest:
    data = manifest.model_dump(mode="json", exclude_none=True)
    return Manifest.model_validate(yaml.safe_load(yaml.safe_dump(data)))


@settings(max_examples=200, deadline=None)
@given(data=manifests)
def test_generated_manifests_never_crash_and_accepted_ones_round_trip(data: dict[str, Any]) -> None:
    source = yaml.safe_dump(data, allow_unicode=True)
    report = parse_manifest(source)
    _check_positions(report, source)
    accepted = [report.manifest] if report.manifest is not None and report.is_valid else []
    assert [_round_trip(m) for m in accepted] == accepted
    # A report is valid exactly when it carries a manifest and no error.
    assert report.is_valid == (report.manifest is not None and not report.errors)


@settings(max_examples=150, deadline=None)
@given(
    name=words.filter(lambda n: bool(n.strip())),
    parameters=st.dictionaries(identifiers, valid_parameters(), max_size=4),
    assets=st.lists(good_asset_paths, max_size=3),
)
def test_valid_manifests_are_accepted_and_round_trip(
    name: str, parameters: dict[str, Any], assets: list[str]
) -> None:
    data = {"manifest": 1, "name": name, "parameters": parameters, "assets": assets}
    source = yaml.safe_dump(data, allow_unicode=True)
    report = parse_manifest(source)
    assert report.problems == []
    assert report.manifest is not None
    assert _round_trip(report.manifest) == report.manifest


@settings(max_examples=300, deadline=None)
@given(source=st.text())
def test_arbitrary_text_never_crashes(source: str) -> None:
    _check_positions(parse_manifest(source), source)


@settings(max_examples=300, deadline=None)
@given(source=st.text(st.sampled_from(list("[]{}:-,'\"#&*!|> \n\tamn1")), max_size=40))
def test_yaml_punctuation_never_crashes(source: str) -> None:
    _check_positions(parse_manifest(source), source)


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


def _value_for(spec: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the right type, around the spec's bounds and choices."""
    kind = spec["type"]
    if kind == "int":
        return st.integers(int(spec["min"]) - 2, int(spec["max"]) + 2)
    if kind == "float":
        return st.floats(spec["min"] - 1, spec["max"] + 1)
    if kind == "string":
        return st.one_of(st.from_regex(spec["pattern"], fullmatch=True), st.text(max_size=10))
    if kind == "bool":
        return st.booleans()
    if kind == "enum":
        return st.one_of(st.sampled_from(spec["choices"]), json_values)
    return st.one_of(asset_paths, st.text(max_size=10))


@settings(max_examples=300, deadline=None)
@given(data=st.data(), spec=valid_parameters())
def test_check_value_never_raises_and_check_values_agrees(
    data: st.DataObject, spec: dict[str, Any]
) -> None:
    parameter = Parameter.model_validate(spec)
    value = data.draw(st.one_of(json_values, _value_for(spec)), label="value")
    problem = check_value(parameter, value)
    manifest = Manifest(manifest=1, name="t", parameters={"speed": parameter})
    expected = [] if problem is None else [(f"speed: {problem}", ["values", "speed"])]
    assert check_values(manifest, {"speed": value}) == expected
