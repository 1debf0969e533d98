"""Broken dt.yaml manifests: the exact message, line and column of every error.

Each row is (id, text, [(line, column, message), ...]) and lists *all* problems the
validator must report, no more. Where a current message was unclear or pointed at the
wrong place, the row holds what it should say (see the comment above that row).
"""

from __future__ import annotations

import math

import pytest

from dtaas.twins.manifest import Parameter, check_value, parse_duration, parse_memory
from dtaas.twins.validate import Problem, parse_manifest
from tests.twins.support import text

HEAD = "manifest: 1\nname: tank\n"
TOP_KEYS = (
    "`manifest`, `name`, `description`, `version`, `parameters`, `assets`, `services`, "
    "`resources`, `executor`, `phases`, `outputs`, `telemetry`, `serve`"
)
PARAMETER_KEYS = "`type`, `default`, `help`, `min`, `max`, `pattern`, `choices`, `kind`, `required`"
PARAMETER_NAME_RULE = "use lowercase letters, digits and _, starting with a letter or _"
PHASE_NAME_RULE = "use lowercase letters, digits, - and _, starting with a letter"
LIBRARY_PATH = "expected a library path such as common/models/tank.fmu or models/tank.fmu"
OUTPUT_GLOB = "an output must be a glob inside the DT folder, e.g. results/*.csv"

Expected = list[tuple[int | None, int | None, str]]

CASES: list[tuple[str, str, Expected]] = [
    # --- YAML syntax ------------------------------------------------------------------
    # Bug: reported at 4:1, past the end of a 3-line file, as "expected ',' or ']', but
    # got '<stream end>'"; the cause is the `[` that is never closed.
    (
        "yaml-unclosed-bracket",
        HEAD + "services: [mqtt, amqp\n",
        [(3, 11, "YAML syntax: this `[` is never closed; add the matching `]`")],
    ),
    # Bug: as above, reported at 4:1.
    (
        "yaml-unclosed-brace",
        HEAD + "resources: {cpu: 1\n",
        [(3, 12, "YAML syntax: this `{` is never closed; add the matching `}`")],
    ),
    # Bug: reported at 3:1 of a 2-line file as "found unexpected end of stream".
    (
        "yaml-unclosed-quote",
        'manifest: 1\nname: "tank\n',
        [(2, 7, 'YAML syntax: this `"` is never closed; add the matching `"`')],
    ),
    # Bug: "mapping values are not allowed here" alone does not say what to do.
    (
        "yaml-indented-too-far",
        HEAD + "resources:\n  cpu: 1\n   memory: 1Gi\n",
        [
            (
                5,
                10,
                "YAML syntax: a `:` is not allowed here; check the indentation of this line, "
                "or quote a value that contains `: `",
            )
        ],
    ),
    # Bug: "expected <block end>, but found '<block mapping start>'" is parser jargon.
    (
        "yaml-indented-too-little",
        HEAD + "resources:\n    cpu: 1\n  memory: 1Gi\n",
        [
            (
                5,
                3,
                "YAML syntax: this line is indented differently from the keys above it; "
                "indent the keys of one mapping equally",
            )
        ],
    ),
    (
        "yaml-tab-indentation",
        HEAD + "resources:\n\tcpu: 1\n",
        [(4, 1, "YAML syntax: found character '\\t' that cannot start any token")],
    ),
    # Bug: "YAML syntax: but found another document" drops the first half of the sentence
    # (PyYAML's `context`, "expected a single document in the stream").
    (
        "yaml-second-document",
        "---\n" + HEAD + "---\nversion: x\n",
        [
            (
                4,
                1,
                "YAML syntax: expected a single document in the stream but found another document",
            )
        ],
    ),
    # --- the shape of the file ----------------------------------------------------------
    (
        "empty-file",
        "",
        [(None, None, "the manifest is empty; start with `manifest: 1` and `name:`")],
    ),
    (
        "only-comments",
        "# a twin, one day\n",
        [(None, None, "the manifest is empty; start with `manifest: 1` and `name:`")],
    ),
    (
        "list-instead-of-mapping",
        "- manifest: 1\n- name: tank\n",
        [(1, 1, "the manifest must be a mapping of keys such as `manifest:` and `name:`")],
    ),
    (
        "scalar-instead-of-mapping",
        "tank\n",
        [(1, 1, "the manifest must be a mapping of keys such as `manifest:` and `name:`")],
    ),
    # --- manifest and name ----------------------------------------------------------------
    ("missing-manifest", "name: tank\n", [(1, 1, "missing key `manifest`")]),
    ("missing-name", "manifest: 1\ndescription: a tank\n", [(1, 1, "missing key `name`")]),
    (
        "manifest-version-2",
        "manifest: 2\nname: tank\n",
        [(1, 11, "`manifest`: must be 1, the only version of dt.yaml so far")],
    ),
    (
        "manifest-version-as-text",
        "manifest: '1'\nname: tank\n",
        [(1, 11, "`manifest`: must be 1, the only version of dt.yaml so far")],
    ),
    (
        "name-empty",
        "manifest: 1\nname: ''\n",
        [(2, 7, "`name`: String should have at least 1 character")],
    ),
    # --- unknown keys ---------------------------------------------------------------------
    (
        "top-level-paramters",
        HEAD + "paramters: {}\n",
        [(3, 1, "unknown key `paramters` — did you mean `parameters`?")],
    ),
    (
        "top-level-servces",
        HEAD + "servces: [mqtt]\n",
        [(3, 1, "unknown key `servces` — did you mean `services`?")],
    ),
    (
        "top-level-resorces",
        HEAD + "resorces:\n  cpu: 1\n",
        [(3, 1, "unknown key `resorces` — did you mean `resources`?")],
    ),
    (
        "top-level-telemtry",
        HEAD + "telemtry: []\n",
        [(3, 1, "unknown key `telemtry` — did you mean `telemetry`?")],
    ),
    (
        "top-level-outputz",
        HEAD + "outputz: [results/*]\n",
        [(3, 1, "unknown key `outputz` — did you mean `outputs`?")],
    ),
    (
        "top-level-key-nobody-resembles",
        HEAD + "zzz: 1\n",
        [(3, 1, f"unknown key `zzz`; allowed here: {TOP_KEYS}")],
    ),
    # Bug: YAML 1.1 reads `yes` as true; reported at 1:1 as "`1`: Keys should be strings".
    (
        "top-level-yes",
        HEAD + "yes: 1\n",
        [(3, 1, f"unknown key `yes`; allowed here: {TOP_KEYS}")],
    ),
    (
        "parameter-defualt",
        HEAD + "parameters:\n  speed:\n    type: int\n    defualt: 3\n",
        [(6, 5, "unknown key `defualt` — did you mean `default`?")],
    ),
    (
        "parameter-key-nobody-resembles",
        HEAD + "parameters:\n  speed:\n    type: int\n    colour: red\n",
        [(6, 5, f"unknown key `colour`; allowed here: {PARAMETER_KEYS}")],
    ),
    (
        "resources-cpus",
        HEAD + "resources:\n  cpus: 2\n",
        [(4, 3, "unknown key `cpus` — did you mean `cpu`?")],
    ),
    (
        "resources-key-nobody-resembles",
        HEAD + "resources:\n  disk: 2\n",
        [(4, 3, "unknown key `disk`; allowed here: `cpu`, `memory`, `gpu`, `wall_time`")],
    ),
    (
        "phase-comand",
        HEAD + "phases:\n  execute:\n    comand: ./run.sh\n",
        [
            (5, 5, "missing key `command` in `phases.execute`"),
            (5, 5, "unknown key `comand` — did you mean `command`?"),
        ],
    ),
    (
        "telemetry-lable",
        HEAD + "telemetry:\n  - field: temperature\n    lable: T\n",
        [(5, 5, "unknown key `lable` — did you mean `label`?")],
    ),
    (
        "telemetry-key-nobody-resembles",
        HEAD + "telemetry:\n  - field: temperature\n    color: red\n",
        [(5, 5, "unknown key `color`; allowed here: `field`, `label`, `unit`")],
    ),
    # --- duplicate keys -------------------------------------------------------------------
    (
        "duplicate-top-level-key",
        HEAD + "name: pump\n",
        [(3, 1, "key `name` appears twice; the later one would win — remove one")],
    ),
    (
        "duplicate-nested-key",
        HEAD + "resources:\n  cpu: 1\n  cpu: 2\n",
        [(5, 3, "key `cpu` appears twice; the later one would win — remove one")],
    ),
    # --- parameters -----------------------------------------------------------------------
    (
        "parameter-type-integer",
        HEAD + "parameters:\n  speed:\n    type: integer\n",
        [
            (
                5,
                11,
                "`parameters.speed.type`: `integer` is not allowed; use one of string, int, "
                "float, bool, enum or asset",
            )
        ],
    ),
    (
        "parameter-without-type",
        HEAD + "parameters:\n  speed:\n    default: 3\n",
        [(5, 5, "missing key `type` in `parameters.speed`")],
    ),
    # Bug: "Input should be a valid dictionary or instance of Parameter" names a Python class.
    (
        "parameter-without-body",
        HEAD + "parameters:\n  speed:\n",
        [(4, 9, "`parameters.speed`: expected a mapping with `type:`")],
    ),
    (
        "parameter-name-capitalised",
        HEAD + "parameters:\n  Speed:\n    type: int\n",
        [(4, 3, f"parameter name `Speed` is not allowed: {PARAMETER_NAME_RULE}")],
    ),
    (
        "parameter-name-with-hyphen",
        HEAD + "parameters:\n  speed-max:\n    type: int\n",
        [(4, 3, f"parameter name `speed-max` is not allowed: {PARAMETER_NAME_RULE}")],
    ),
    (
        "parameter-min-above-max",
        HEAD + "parameters:\n  speed:\n    type: int\n    min: 10\n    max: 1\n",
        [(7, 10, "`parameters.speed.max`: max (1) is smaller than min (10)")],
    ),
    (
        "parameter-min-on-string",
        HEAD + "parameters:\n  label:\n    type: string\n    min: 1\n",
        [(6, 10, "`parameters.label.min`: min applies to int and float parameters, not string")],
    ),
    # Bug: NaN is accepted as a bound, and no value is ever below or above NaN.
    (
        "parameter-min-nan",
        HEAD + "parameters:\n  ratio:\n    type: float\n    min: .nan\n",
        [(6, 10, "`parameters.ratio.min`: Input should be a finite number")],
    ),
    (
        "parameter-pattern-on-int",
        HEAD + "parameters:\n  speed:\n    type: int\n    pattern: '[0-9]+'\n",
        [(6, 14, "`parameters.speed.pattern`: pattern applies to string parameters, not int")],
    ),
    (
        "parameter-pattern-invalid",
        HEAD + "parameters:\n  label:\n    type: string\n    pattern: '[a-'\n",
        [
            (
                6,
                14,
                "`parameters.label.pattern`: pattern is not a valid regular expression: "
                "unterminated character set at position 0",
            )
        ],
    ),
    (
        "enum-without-choices",
        HEAD + "parameters:\n  mode:\n    type: enum\n",
        [
            (
                5,
                11,
                "`parameters.mode.type`: an enum parameter needs `choices:`, a non-empty list "
                "of values",
            )
        ],
    ),
    # Bug: reported at `type: enum` (5:11) although `choices: []` is what is wrong.
    (
        "enum-with-empty-choices",
        HEAD + "parameters:\n  mode:\n    type: enum\n    choices: []\n",
        [
            (
                6,
                14,
                "`parameters.mode.choices`: an enum parameter needs `choices:`, a non-empty "
                "list of values",
            )
        ],
    ),
    (
        "choices-on-string",
        HEAD + "parameters:\n  mode:\n    type: string\n    choices: [fast, slow]\n",
        [(6, 14, "`parameters.mode.choices`: choices apply to enum parameters, not string")],
    ),
    (
        "kind-on-string",
        HEAD + "parameters:\n  model:\n    type: string\n    kind: models\n",
        [(6, 11, "`parameters.model.kind`: kind applies to asset parameters, not string")],
    ),
    (
        "kind-unknown",
        HEAD + "parameters:\n  model:\n    type: asset\n    kind: model\n",
        [
            (
                6,
                11,
                "`parameters.model.kind`: `model` is not allowed; use one of functions, models, "
                "tools, data or digital_twins",
            )
        ],
    ),
    # Bug: only the first of several problems of one parameter is reported.
    (
        "parameter-with-two-problems",
        HEAD + "parameters:\n  label:\n    type: string\n    min: 1\n    kind: data\n",
        [
            (6, 10, "`parameters.label.min`: min applies to int and float parameters, not string"),
            (7, 11, "`parameters.label.kind`: kind applies to asset parameters, not string"),
        ],
    ),
    (
        "default-of-wrong-type",
        HEAD + "parameters:\n  speed:\n    type: int\n    default: fast\n",
        [
            (
                6,
                14,
                "`parameters.speed.default`: the default 'fast' is not valid: expected a whole "
                "number",
            )
        ],
    ),
    (
        "default-outside-min-max",
        HEAD + "parameters:\n  speed:\n    type: int\n    min: 1\n    max: 10\n    default: 11\n",
        [(8, 14, "`parameters.speed.default`: the default 11 is not valid: must be at most 10")],
    ),
    # Bug: a NaN default passes min and max.
    (
        "default-nan",
        HEAD
        + "parameters:\n  ratio:\n    type: float\n    min: 0\n    max: 1\n    default: .nan\n",
        [
            (
                8,
                14,
                "`parameters.ratio.default`: the default nan is not valid: expected a finite "
                "number",
            )
        ],
    ),
    (
        "default-not-matching-pattern",
        HEAD + "parameters:\n  label:\n    type: string\n    pattern: '[a-z]+'\n    default: ABC\n",
        [
            (
                7,
                14,
                "`parameters.label.default`: the default 'ABC' is not valid: must match the "
                "pattern [a-z]+",
            )
        ],
    ),
    (
        "enum-default-not-a-choice",
        HEAD
        + "parameters:\n  mode:\n    type: enum\n    choices: [fast, slow]\n    default: medium\n",
        [
            (
                7,
                14,
                "`parameters.mode.default`: the default 'medium' is not valid: expected one of "
                "'fast', 'slow'",
            )
        ],
    ),
    (
        "asset-default-of-wrong-kind",
        HEAD
        + "parameters:\n  model:\n    type: asset\n    kind: models\n"
        + "    default: common/data/tank.csv\n",
        [
            (
                7,
                14,
                "`parameters.model.default`: the default 'common/data/tank.csv' is not valid: "
                "expected an asset of kind models",
            )
        ],
    ),
    # --- services -------------------------------------------------------------------------
    (
        "service-unknown",
        HEAD + "services: [mqtt, kafka]\n",
        [
            (
                3,
                18,
                "`services.1`: `kafka` is not allowed; use one of mqtt, amqp, postgres or influxdb",
            )
        ],
    ),
    # Bug: reported at the start of the list (4:3), not at the repeated entry.
    (
        "service-listed-twice",
        HEAD + "services:\n  - mqtt\n  - amqp\n  - mqtt\n",
        [(6, 5, "`services`: service 'mqtt' is listed twice")],
    ),
    # --- resources ------------------------------------------------------------------------
    (
        "cpu-zero",
        HEAD + "resources:\n  cpu: 0\n",
        [(4, 8, "`resources.cpu`: Input should be greater than 0")],
    ),
    (
        "cpu-negative",
        HEAD + "resources:\n  cpu: -0.5\n",
        [(4, 8, "`resources.cpu`: Input should be greater than 0")],
    ),
    (
        "memory-unparseable",
        HEAD + "resources:\n  memory: lots\n",
        [(4, 11, "`resources.memory`: memory 'lots' is not a size; write e.g. 512Mi or 2Gi")],
    ),
    # Bug: `512iB` is accepted (read as 512 MiB).
    (
        "memory-unit-garbled",
        HEAD + "resources:\n  memory: 512iB\n",
        [(4, 11, "`resources.memory`: memory '512iB' is not a size; write e.g. 512Mi or 2Gi")],
    ),
    (
        "wall-time-unparseable",
        HEAD + "resources:\n  wall_time: forever\n",
        [
            (
                4,
                14,
                "`resources.wall_time`: duration 'forever' is not a time; write e.g. 90s, 30m "
                "or 2h",
            )
        ],
    ),
    (
        "gpu-negative",
        HEAD + "resources:\n  gpu: -1\n",
        [(4, 8, "`resources.gpu`: Input should be greater than or equal to 0")],
    ),
    # --- executor and phases --------------------------------------------------------------
    (
        "executor-unknown",
        HEAD + "executor: kubernetes\n",
        [(3, 11, "`executor`: `kubernetes` is not allowed; use one of local or ray")],
    ),
    (
        "phase-override-without-command",
        HEAD + "phases:\n  execute: {}\n",
        [(4, 12, "missing key `command` in `phases.execute`")],
    ),
    # Bug: "Input should be a valid dictionary or instance of PhaseOverride".
    (
        "phase-override-empty",
        HEAD + "phases:\n  execute:\n",
        [(4, 11, "`phases.execute`: expected a mapping with `command:`")],
    ),
    (
        "phase-command-empty",
        HEAD + "phases:\n  execute:\n    command: ''\n",
        [(5, 14, "`phases.execute.command`: String should have at least 1 character")],
    ),
    (
        "phase-name-capitalised",
        HEAD + "phases:\n  Execute:\n    command: ./run.sh\n",
        [(4, 3, f"phase name `Execute` is not allowed: {PHASE_NAME_RULE}")],
    ),
    (
        "phase-name-with-extension",
        HEAD + "phases:\n  execute.sh:\n    command: ./run.sh\n",
        [(4, 3, f"phase name `execute.sh` is not allowed: {PHASE_NAME_RULE}")],
    ),
    # --- assets and outputs ---------------------------------------------------------------
    (
        "asset-absolute",
        HEAD + "assets:\n  - /etc/passwd\n",
        [(4, 5, f"`assets.0`: {LIBRARY_PATH}")],
    ),
    (
        "asset-with-dotdot",
        HEAD + "assets:\n  - common/models/../../alice/secret\n",
        [(4, 5, f"`assets.0`: {LIBRARY_PATH}")],
    ),
    # Bug: `common` (an area) and `tank.fmu` (no kind) are accepted as asset paths.
    ("asset-area-only", HEAD + "assets:\n  - common\n", [(4, 5, f"`assets.0`: {LIBRARY_PATH}")]),
    (
        "asset-without-kind",
        HEAD + "assets:\n  - models/tank.fmu\n  - tank.fmu\n",
        [(5, 5, f"`assets.1`: {LIBRARY_PATH}")],
    ),
    (
        "output-escaping-with-dotdot",
        HEAD + "outputs:\n  - results/*.csv\n  - ../results/*.csv\n",
        [(5, 5, f"`outputs.1`: {OUTPUT_GLOB}")],
    ),
    (
        "output-absolute",
        HEAD + "outputs:\n  - /tmp/*.csv\n",
        [(4, 5, f"`outputs.0`: {OUTPUT_GLOB}")],
    ),
    # --- telemetry ------------------------------------------------------------------------
    # Bug: "String should match pattern '^[A-Za-z_][A-Za-z0-9_.]{0,127}$'" shows a regex.
    (
        "telemetry-field-bad-name",
        HEAD + "telemetry:\n  - field: 1temperature\n",
        [
            (
                4,
                12,
                "telemetry field `1temperature` is not allowed: use letters, digits, _ and ., "
                "starting with a letter or _",
            )
        ],
    ),
    (
        "telemetry-without-field",
        HEAD + "telemetry:\n  - label: Temperature\n",
        [(4, 5, "missing key `field` in `telemetry.0`")],
    ),
    # --- everything at once ---------------------------------------------------------------
    (
        "several-errors-in-one-file",
        text(
            """
            manifest: 2
            nme: tank
            services: [kafka]
            resources:
              cpu: 0
              memroy: 1Gi
            executor: k8s
            """
        ),
        [
            (1, 1, "missing key `name`"),
            (1, 11, "`manifest`: must be 1, the only version of dt.yaml so far"),
            (2, 1, "unknown key `nme` — did you mean `name`?"),
            (
                3,
                12,
                "`services.0`: `kafka` is not allowed; use one of mqtt, amqp, postgres or influxdb",
            ),
            (5, 8, "`resources.cpu`: Input should be greater than 0"),
            (6, 3, "unknown key `memroy` — did you mean `memory`?"),
            (7, 11, "`executor`: `k8s` is not allowed; use one of local or ray"),
        ],
    ),
]


def _found(problems: list[Problem]) -> list[tuple[int | None, int | None, str]]:
    return sorted(((p.line, p.column, p.message) for p in problems), key=_by_position)


def _by_position(item: tuple[int | None, int | None, str]) -> tuple[int, int, str]:
    line, column, message = item
    return (line or 0, column or 0, message)


def test_there_are_at_least_forty_broken_manifests() -> None:
    assert len(CASES) >= 40
    assert len({case_id for case_id, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize(
    ("manifest_text", "expected"),
    [
        pytest.param(manifest_text, expected, id=case_id)
        for case_id, manifest_text, expected in CASES
    ],
)
def test_broken_manifest_reports_exactly_these_errors(
    manifest_text: str, expected: Expected
) -> None:
    report = parse_manifest(manifest_text)
    assert _found(report.problems) == sorted(expected, key=_by_position)
    assert {p.severity for p in report.problems} == {"error"}
    assert {p.file for p in report.problems} == {"dt.yaml"}
    assert not report.is_valid


def test_problems_are_reported_in_file_order() -> None:
    """Compilers print errors top to bottom, and the plan quotes "the first" error."""
    report = parse_manifest(CASES[-1][1])
    positions = [(p.line, p.column) for p in report.problems]
    assert positions == [(1, 1), (1, 11), (2, 1), (3, 12), (5, 8), (6, 3), (7, 11)]


def test_a_good_manifest_has_no_problems() -> None:
    report = parse_manifest(
        text(
            """
            manifest: 1
            name: tank
            description: A heated tank.
            parameters:
              speed:
                type: int
                default: 3
                min: 1
                max: 10
              mode:
                type: enum
                choices: [fast, slow]
            assets: [common/models/tank.fmu, data/tank.csv]
            services: [mqtt]
            resources: {cpu: 1, memory: 512Mi, gpu: 0, wall_time: 30m}
            executor: local
            phases:
              execute:
                command: python run.py
            outputs: [results/*.csv]
            telemetry:
              - field: temperature_c
                label: Temperature
                unit: °C
            """
        )
    )
    assert report.problems == []
    assert report.manifest is not None
    assert report.manifest.parameters["speed"].default == 3


def test_parameter_named_on_is_text_not_a_boolean() -> None:
    """YAML 1.1 reads `on`, `yes`, `no` as booleans; in dt.yaml they are names and words.

    Bug: today the parameter is reported as "parameter name `1` is not allowed".
    """
    report = parse_manifest(HEAD + "parameters:\n  on:\n    type: bool\n")
    assert report.problems == []
    assert report.manifest is not None
    assert list(report.manifest.parameters) == ["on"]


def test_enum_choices_yes_and_no_stay_words() -> None:
    """Bug: `choices: [yes, no]` becomes [1, 0]."""
    report = parse_manifest(
        HEAD + "parameters:\n  answer:\n    type: enum\n    choices: [yes, no]\n"
    )
    assert report.manifest is not None
    assert report.manifest.parameters["answer"].choices == ["yes", "no"]


def test_problem_format_is_file_line_column_severity_message() -> None:
    report = parse_manifest(HEAD + "zzz: 1\n")
    assert [p.format() for p in report.problems] == [
        f"dt.yaml:3:1: error: unknown key `zzz`; allowed here: {TOP_KEYS}"
    ]


def test_problem_format_without_position_names_only_the_file() -> None:
    problem = parse_manifest("", file="digital_twins/tank/dt.yaml").problems[0]
    assert problem.format() == (
        "digital_twins/tank/dt.yaml: error: the manifest is empty; start with `manifest: 1` "
        "and `name:`"
    )


def test_problem_format_of_a_warning() -> None:
    problem = Problem("warning", "lifecycle/execute", 1, 1, "no #! line")
    assert problem.format() == "lifecycle/execute:1:1: warning: no #! line"


# --- robustness: aliases and nesting cannot take the validator down -----------------------


def test_recursive_alias_is_reported_not_raised() -> None:
    """Bug: `_duplicate_keys` follows the alias forever and raises RecursionError."""
    report = parse_manifest(HEAD + "zzz: &loop [*loop]\n")
    assert _found(report.problems) == [(3, 1, f"unknown key `zzz`; allowed here: {TOP_KEYS}")]


def _laughs(depth: int) -> str:
    """A few hundred bytes that expand to 9**depth list items (the billion laughs)."""
    lines = ["zzz:", "  l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, depth + 1)]
    return HEAD + "\n".join(lines) + "\n"


@pytest.mark.timeout(3)
def test_billion_laughs_is_validated_quickly() -> None:
    """Bug: the duplicate-key walk visits every alias again: 9**7 nodes, ~20 s of CPU."""
    manifest_text = _laughs(7)
    assert len(manifest_text) < 1000
    report = parse_manifest(manifest_text)
    assert _found(report.problems) == [(3, 1, f"unknown key `zzz`; allowed here: {TOP_KEYS}")]


def test_message_about_a_huge_aliased_value_stays_short() -> None:
    """Bug: the literal-error message prints the whole input; 9**4 items, ~33,000 chars."""
    report = parse_manifest(_laughs(3) + "executor: *l3\n")
    assert len(report.problems) == 2
    assert max(len(p.message) for p in report.problems) < 300


def test_deeply_nested_yaml_is_an_error_not_a_crash() -> None:
    """Bug: PyYAML composes recursively; RecursionError escapes parse_manifest."""
    report = parse_manifest(HEAD + "zzz: " + "[" * 3000 + "]" * 3000 + "\n")
    assert report.manifest is None
    assert [p.severity for p in report.problems] == ["error"]


# --- values, sizes and durations ---------------------------------------------------------


def test_check_value_refuses_nan_for_a_bounded_float() -> None:
    """Bug: NaN compares false with everything, so it passes min and max."""
    ratio = Parameter.model_validate({"type": "float", "min": 0, "max": 1})
    assert check_value(ratio, math.nan) == "expected a finite number"


def test_check_value_refuses_infinity() -> None:
    """Bug: accepted today; JSON cannot carry it, so the saved configuration breaks later."""
    gain = Parameter.model_validate({"type": "float"})
    assert check_value(gain, math.inf) == "expected a finite number"
    assert check_value(gain, -math.inf) == "expected a finite number"


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (512, 512 * 1024**2),
        ("512", 512 * 1024**2),
        ("512Mi", 512 * 1024**2),
        ("1.5Gi", 3 * 1024**3 // 2),
        ("2G", 2 * 1000**3),
        ("2GB", 2 * 1000**3),
        ("1GiB", 1024**3),
        ("64 Ki", 64 * 1024),
        # Bug: a plain `B` is read as MiB, a million times the bytes written.
        ("512B", 512),
    ],
)
def test_parse_memory(value: int | str, size: int) -> None:
    assert parse_memory(value) == size


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(90, 90), ("90", 90), ("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1.5h", 5400)],
)
def test_parse_duration(value: int | str, seconds: int) -> None:
    assert parse_duration(value) == seconds
