"""The client's twins methods against a real server: models back, errors as classes."""

from __future__ import annotations

import pytest

from dtaas.client import Client
from dtaas.errors import Conflict, InvalidInput, NotFound
from dtaas.twins.schemas import (
    ConfigurationRead,
    PlanRead,
    TemplateRead,
    TwinDetail,
    TwinSummary,
    ValidationRead,
)
from tests.live import LiveServer

SCRIPTS = {
    "create": "#!/bin/bash\nmkdir -p output\n",
    "execute": "#!/bin/bash\necho hello\n",
}
DESCRIBED = {"description.md": "# Hello\n\nSays hello.\n"}
PARAMETERS = """\
manifest: 1
name: tank
description: A tank.
parameters:
  speed: {type: float, min: 0, max: 10, default: 2.5, help: Pump speed.}
  steps: {type: int, min: 1}
"""
BROKEN = """\
manifest: 1
name: broken
parameters:
  speed: {type: velocity}
"""


@pytest.fixture
def alice(live: LiveServer) -> Client:
    live.add_twin("alice/digital_twins/hello", scripts=SCRIPTS, files=DESCRIBED)
    live.add_twin("alice/digital_twins/tank", scripts=SCRIPTS, manifest=PARAMETERS)
    live.add_twin("alice/digital_twins/broken", scripts=SCRIPTS, manifest=BROKEN)
    return live.client_for("alice")


def test_list_twins_returns_summaries_with_their_validity(alice: Client) -> None:
    with alice:
        twins = alice.list_twins()

    assert all(isinstance(twin, TwinSummary) for twin in twins)
    assert [(t.path, t.valid, t.errors, t.warnings) for t in twins] == [
        ("alice/digital_twins/broken", False, 1, 1),
        ("alice/digital_twins/hello", True, 0, 0),
        ("alice/digital_twins/tank", True, 0, 0),
    ]
    assert twins[1].phases == ["create", "execute"]


def test_get_twin_returns_parameters_and_problems(alice: Client) -> None:
    with alice:
        tank = alice.get_twin(path="alice/digital_twins/tank")
        broken = alice.get_twin(path="alice/digital_twins/broken")

    assert isinstance(tank, TwinDetail)
    assert (tank.name, tank.description, tank.has_manifest) == ("tank", "A tank.", True)
    assert [(p.name, p.type, p.default, p.required) for p in tank.parameters] == [
        ("speed", "float", 2.5, False),
        ("steps", "int", None, True),
    ]
    assert [(p.severity, p.file, p.line, p.column) for p in broken.problems] == [
        ("error", "dt.yaml", 4, 17),
        ("warning", "description.md", None, None),
    ]


def test_get_twin_of_a_folder_that_is_no_twin_is_not_found(alice: Client) -> None:
    with alice, pytest.raises(NotFound) as caught:
        alice.get_twin(path="alice/data")

    assert caught.value.message == (
        "'alice/data' is not a digital twin: a DT is a folder <library>/digital_twins/<name>."
    )


def test_validate_twin_keeps_errors_apart_from_warnings(alice: Client) -> None:
    with alice:
        result = alice.validate_twin(path="alice/digital_twins/broken")

    assert isinstance(result, ValidationRead)
    assert result.valid is False
    assert [e.message for e in result.errors] == [
        "`parameters.speed.type`: `velocity` is not allowed; use one of string, int, float, "
        "bool, enum or asset"
    ]
    assert [w.file for w in result.warnings] == ["description.md"]


def test_plan_twin_checks_the_dt_before_it_runs(alice: Client) -> None:
    with alice:
        plan = alice.plan_twin(path="alice/digital_twins/tank")
        on_ray = alice.plan_twin(path="alice/digital_twins/tank", executor="ray")

    assert isinstance(plan, PlanRead)
    assert (plan.ready, plan.executor, plan.phases) == (True, "local", ["create", "execute"])
    assert [check.check for check in plan.checks] == ["valid", "assets", "resources"]
    assert on_ray.executor == "ray"


def test_plan_twin_with_an_unknown_executor_is_invalid_input(alice: Client) -> None:
    with alice, pytest.raises(InvalidInput) as caught:
        alice.plan_twin(path="alice/digital_twins/tank", executor="slurm")

    assert caught.value.message.startswith("executor: String should match pattern")


def test_templates_list_and_create_twin_from_one(alice: Client) -> None:
    with alice:
        templates = alice.list_templates()
        created = alice.create_twin(name="sim", template="python-simulation")

    assert all(isinstance(template, TemplateRead) for template in templates)
    assert "python-simulation" in {template.name for template in templates}
    assert isinstance(created, TwinDetail)
    assert (created.path, created.name, created.valid) == ("alice/digital_twins/sim", "sim", True)


def test_create_twin_copies_another_and_refuses_a_taken_name(alice: Client) -> None:
    with alice:
        copied = alice.create_twin(name="hello-2", source="alice/digital_twins/hello")
        with pytest.raises(Conflict) as caught:
            alice.create_twin(name="hello-2", source="alice/digital_twins/hello")

    assert copied.phases == ["create", "execute"]
    assert caught.value.message == (
        "alice/digital_twins/hello-2 already exists; choose another name."
    )


def test_create_twin_needs_exactly_one_of_template_and_source(alice: Client) -> None:
    with alice, pytest.raises(InvalidInput) as caught:
        alice.create_twin(name="nothing")

    assert caught.value.message == "Give either a template or a source DT to copy."


def test_configurations_are_saved_and_listed(alice: Client) -> None:
    with alice:
        saved = alice.save_configuration(
            path="alice/digital_twins/tank", name="slow", values={"speed": 0.5, "steps": 10}
        )
        listed = alice.list_configurations(path="alice/digital_twins/tank")

    assert isinstance(saved, ConfigurationRead)
    assert (saved.twin_path, saved.name, saved.values) == (
        "alice/digital_twins/tank",
        "slow",
        {"speed": 0.5, "steps": 10},
    )
    assert [c.id for c in listed] == [saved.id]


def test_save_configuration_with_bad_values_carries_one_problem_per_field(
    alice: Client,
) -> None:
    with alice, pytest.raises(InvalidInput) as caught:
        alice.save_configuration(
            path="alice/digital_twins/tank", name="bad", values={"speed": 99, "rpm": 3}
        )

    error = caught.value
    assert error.problems == [
        ("speed: must be at most 10", ["values", "speed"]),
        ("unknown parameter 'rpm'; this DT declares: speed, steps", ["values", "rpm"]),
        ("steps: a value is required", ["values", "steps"]),
    ]
    assert error.message == "; ".join(text for text, _ in error.problems)
    assert error.loc == ["values", "speed"]
