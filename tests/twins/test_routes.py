"""The twins API over HTTP: listing, templates, creation, detail, validation, plan,
configurations and the dt.yaml JSON Schema, on SQLite and PostgreSQL."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.library import service as library
from dtaas.security.models import User
from tests.factories import bearer
from tests.twins.support import (
    HELLO_SCRIPTS,
    text,
    twin_folder,
    write_asset,
    write_twin,
)

API = "/api/v1"
TEMPLATES = ["compose-common", "mqtt-publisher", "python-simulation"]


def error_of(response: Any) -> dict[str, Any]:
    """The only item of an error body."""
    body = response.json()
    assert list(body) == ["detail"]
    assert len(body["detail"]) == 1
    item: dict[str, Any] = body["detail"][0]
    assert set(item) == {"type", "msg", "loc"}
    return item


@pytest.fixture
def as_alice(session: Session, settings: Settings, alice: User) -> dict[str, str]:
    return bearer(session, settings, alice)


@pytest.fixture
def as_bob(session: Session, settings: Settings, bob: User) -> dict[str, str]:
    return bearer(session, settings, bob)


@pytest.fixture
def as_viewer(session: Session, settings: Settings, viewer: User) -> dict[str, str]:
    return bearer(session, settings, viewer)


# --- listing and templates -----------------------------------------------------------------


def test_reference_format_dt_is_listed_with_phases_and_no_manifest(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    write_twin(twin_folder(settings, "alice", "hello"), scripts=HELLO_SCRIPTS)
    write_twin(twin_folder(settings, "common", "hello-world"), scripts=HELLO_SCRIPTS)
    response = client.get(f"{API}/twins", headers=as_alice)
    assert response.status_code == 200
    summary = {
        "description": "Prints hello world into a file.",
        "phases": ["create", "execute", "terminate", "clean"],
        "has_manifest": False,
        "valid": True,
        "errors": 0,
        "warnings": 0,
    }
    assert response.json() == [
        {"path": "alice/digital_twins/hello", "name": "hello", "area": "alice", **summary},
        {
            "path": "common/digital_twins/hello-world",
            "name": "hello-world",
            "area": "common",
            **summary,
        },
    ]


def test_listing_counts_errors_and_warnings(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    folder = write_twin(
        twin_folder(settings, "alice", "broken"),
        scripts={**HELLO_SCRIPTS, "create": "echo no shebang\n"},
        manifest="manifest: 1\nname: Broken tank\nservces: [mqtt]\n",
    )
    (folder / "lifecycle" / "clean").chmod(0o644)
    [twin] = client.get(f"{API}/twins", headers=as_alice).json()
    assert (twin["name"], twin["has_manifest"], twin["valid"]) == ("broken", True, False)
    assert (twin["errors"], twin["warnings"]) == (2, 1)


def test_listing_needs_authentication(client: TestClient) -> None:
    response = client.get(f"{API}/twins")
    assert response.status_code == 401
    assert error_of(response)["type"] == "not_authenticated"


def test_templates_are_listed(client: TestClient, as_alice: dict[str, str]) -> None:
    response = client.get(f"{API}/twins/templates", headers=as_alice)
    assert response.status_code == 200
    templates = response.json()
    assert [(t["name"], t["title"]) for t in templates] == [
        ("compose-common", "Compose common"),
        ("mqtt-publisher", "Mqtt publisher"),
        ("python-simulation", "Python simulation"),
    ]
    assert all(t["description"] for t in templates)


# --- creation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "phases", "parameters", "services"),
    [
        ("compose-common", ["execute", "clean"], ["window", "measurements"], []),
        ("mqtt-publisher", ["execute", "terminate"], ["interval_s", "count", "sensor"], ["mqtt"]),
        (
            "python-simulation",
            ["create", "execute", "analyze", "clean"],
            ["duration_s", "step_s", "heater_power_w", "setpoint_c"],
            [],
        ),
    ],
)
def test_create_from_template_is_valid_with_phases_and_parameters(
    client: TestClient,
    settings: Settings,
    as_alice: dict[str, str],
    template: str,
    phases: list[str],
    parameters: list[str],
    services: list[str],
) -> None:
    library.seed_examples(settings=settings)  # compose-common uses common/ assets
    response = client.post(
        f"{API}/twins", json={"name": "tank", "template": template}, headers=as_alice
    )
    assert response.status_code == 201
    twin = response.json()
    assert twin["path"] == "alice/digital_twins/tank"
    assert twin["name"] == "tank"
    assert twin["has_manifest"] is True
    assert twin["problems"] == []
    assert twin["valid"] is True
    assert twin["phases"] == phases
    assert [p["name"] for p in twin["parameters"]] == parameters
    assert twin["services"] == services
    assert twin["writable"] is True
    assert (twin_folder(settings, "alice", "tank") / "dt.yaml").read_text().count("__NAME__") == 0


def test_create_from_template_leaves_no_staging_folder(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    client.post(
        f"{API}/twins", json={"name": "tank", "template": "python-simulation"}, headers=as_alice
    )
    kind_folder = settings.resolved_files_dir / "alice" / "digital_twins"
    assert sorted(p.name for p in kind_folder.iterdir()) == ["tank"]


@pytest.mark.parametrize(
    "body",
    [{"template": "python-simulation"}, {"source": "common/digital_twins/hello-world"}],
    ids=["template", "copy"],
)
def test_create_with_a_taken_name_is_conflict(
    client: TestClient, settings: Settings, as_alice: dict[str, str], body: dict[str, str]
) -> None:
    """Bug (copy): library's Conflict leaks through: "alice/digital_twins/tank already
    exists." with loc ["destination"], a field the request does not have."""
    write_twin(twin_folder(settings, "common", "hello-world"), scripts=HELLO_SCRIPTS)
    write_twin(twin_folder(settings, "alice", "tank"), scripts=HELLO_SCRIPTS)
    response = client.post(f"{API}/twins", json={"name": "tank", **body}, headers=as_alice)
    assert response.status_code == 409
    assert error_of(response) == {
        "type": "conflict",
        "msg": "alice/digital_twins/tank already exists; choose another name.",
        "loc": ["name"],
    }


@pytest.mark.parametrize(
    "body",
    [
        {"name": "tank"},
        {"name": "tank", "template": "python-simulation", "source": "common/digital_twins/x"},
    ],
    ids=["neither", "both"],
)
def test_create_needs_exactly_one_of_template_and_source(
    client: TestClient, as_alice: dict[str, str], body: dict[str, str]
) -> None:
    response = client.post(f"{API}/twins", json=body, headers=as_alice)
    assert response.status_code == 422
    assert error_of(response) == {
        "type": "invalid_input",
        "msg": "Give either a template or a source DT to copy.",
        "loc": ["template"],
    }


def test_unknown_template_is_not_found_naming_the_choices(
    client: TestClient, as_alice: dict[str, str]
) -> None:
    response = client.post(
        f"{API}/twins", json={"name": "tank", "template": "nope"}, headers=as_alice
    )
    assert response.status_code == 404
    assert error_of(response) == {
        "type": "not_found",
        "msg": "There is no template 'nope'; choose one of compose-common, mqtt-publisher, "
        "python-simulation.",
        "loc": ["template"],
    }


def test_bad_twin_name_is_refused_by_the_schema(
    client: TestClient, as_alice: dict[str, str]
) -> None:
    response = client.post(
        f"{API}/twins", json={"name": "../evil", "template": "python-simulation"}, headers=as_alice
    )
    assert response.status_code == 422
    assert error_of(response)["loc"] == ["body", "name"]


def test_copy_a_common_dt_into_your_library(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    write_twin(twin_folder(settings, "common", "hello-world"), scripts=HELLO_SCRIPTS)
    response = client.post(
        f"{API}/twins",
        json={"name": "my-hello", "source": "common/digital_twins/hello-world"},
        headers=as_alice,
    )
    assert response.status_code == 201
    twin = response.json()
    assert (twin["path"], twin["name"], twin["area"]) == (
        "alice/digital_twins/my-hello",
        "my-hello",
        "alice",
    )
    assert twin["phases"] == ["create", "execute", "terminate", "clean"]
    assert twin["files"] == [
        "description.md",
        "lifecycle/clean",
        "lifecycle/create",
        "lifecycle/execute",
        "lifecycle/terminate",
    ]
    assert (twin["valid"], twin["problems"], twin["writable"]) == (True, [], True)
    assert os.access(twin_folder(settings, "alice", "my-hello") / "lifecycle" / "execute", os.X_OK)


def test_copy_of_a_path_that_is_not_a_dt_is_not_found(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    write_asset(settings, "common/models/tank/tank.fmu")
    response = client.post(
        f"{API}/twins", json={"name": "tank", "source": "common/models/tank"}, headers=as_alice
    )
    assert response.status_code == 404
    assert error_of(response)["msg"] == (
        "'common/models/tank' is not a digital twin: a DT is a folder "
        "<library>/digital_twins/<name>."
    )


def test_copy_of_another_users_dt_is_forbidden(
    client: TestClient, settings: Settings, as_alice: dict[str, str], bob: User
) -> None:
    write_twin(twin_folder(settings, "bob", "secret"), scripts=HELLO_SCRIPTS)
    response = client.post(
        f"{API}/twins",
        json={"name": "mine", "source": "bob/digital_twins/secret"},
        headers=as_alice,
    )
    assert response.status_code == 403
    assert error_of(response)["type"] == "permission_denied"
    assert not twin_folder(settings, "alice", "mine").exists()


def test_viewer_may_not_create(client: TestClient, as_viewer: dict[str, str]) -> None:
    response = client.post(
        f"{API}/twins", json={"name": "tank", "template": "python-simulation"}, headers=as_viewer
    )
    assert response.status_code == 403
    assert error_of(response)["type"] == "permission_denied"


# --- detail and validation ----------------------------------------------------------------

TANK_MANIFEST = text(
    """
    manifest: 1
    name: Heated tank
    description: A heated tank.
    parameters:
      speed:
        type: int
        min: 1
        max: 10
        help: Pump speed.
      mode:
        type: enum
        choices: [fast, slow]
        default: fast
      label:
        type: string
        pattern: '[a-z]+'
        default: main
    services: [mqtt]
    resources:
      cpu: 1
      memory: 256Mi
    outputs: [results/*.csv]
    telemetry:
      - field: temperature_c
        label: Temperature
        unit: °C
    """
)


def test_detail_shows_declarations_files_and_readme(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    write_twin(
        twin_folder(settings, "alice", "tank"),
        scripts={"execute": "#!/bin/bash\n"},
        manifest=TANK_MANIFEST,
        description="A tank that heats water.\n",
    )
    response = client.get(
        f"{API}/twins/detail", params={"path": "alice/digital_twins/tank"}, headers=as_alice
    )
    assert response.status_code == 200
    twin = response.json()
    assert (twin["name"], twin["description"], twin["readme"]) == (
        "Heated tank",
        "A tank that heats water.",
        "A tank that heats water.\n",
    )
    assert twin["files"] == ["description.md", "dt.yaml", "lifecycle/execute"]
    assert [(p["name"], p["type"], p["default"], p["required"]) for p in twin["parameters"]] == [
        ("speed", "int", None, True),
        ("mode", "enum", "fast", False),
        ("label", "string", "main", False),
    ]
    assert twin["parameters"][0] == {
        "name": "speed",
        "type": "int",
        "default": None,
        "help": "Pump speed.",
        "min": 1.0,
        "max": 10.0,
        "pattern": None,
        "choices": None,
        "kind": None,
        "required": True,
    }
    assert twin["services"] == ["mqtt"]
    assert twin["resources"] == {"cpu": 1.0, "memory": "256Mi"}
    assert (twin["executor"], twin["outputs"]) == (None, ["results/*.csv"])
    assert twin["telemetry"] == [{"field": "temperature_c", "label": "Temperature", "unit": "°C"}]
    assert (twin["valid"], twin["problems"]) == (True, [])


def test_detail_of_another_users_dt_is_forbidden(
    client: TestClient, settings: Settings, as_alice: dict[str, str], bob: User
) -> None:
    write_twin(twin_folder(settings, "bob", "secret"), scripts=HELLO_SCRIPTS)
    response = client.get(
        f"{API}/twins/detail", params={"path": "bob/digital_twins/secret"}, headers=as_alice
    )
    assert response.status_code == 403
    assert error_of(response) == {
        "type": "permission_denied",
        "msg": "'bob' is not your library: you can reach alice/... and common/...",
        "loc": ["path"],
    }


@pytest.mark.parametrize(
    "path", ["alice/models/tank", "alice/digital_twins", "alice/digital_twins/tank/lifecycle"]
)
def test_detail_of_a_path_that_is_not_a_dt_is_not_found(
    client: TestClient, settings: Settings, as_alice: dict[str, str], path: str
) -> None:
    write_twin(twin_folder(settings, "alice", "tank"), scripts=HELLO_SCRIPTS)
    write_asset(settings, "alice/models/tank/tank.fmu")
    response = client.get(f"{API}/twins/detail", params={"path": path}, headers=as_alice)
    assert response.status_code == 404
    assert error_of(response) == {
        "type": "not_found",
        "msg": f"{path!r} is not a digital twin: a DT is a folder <library>/digital_twins/<name>.",
        "loc": ["path"],
    }


def test_detail_of_a_missing_dt_is_not_found(client: TestClient, as_alice: dict[str, str]) -> None:
    response = client.get(
        f"{API}/twins/detail", params={"path": "alice/digital_twins/nope"}, headers=as_alice
    )
    assert response.status_code == 404
    assert error_of(response)["type"] == "not_found"


def test_validation_returns_errors_and_warnings_apart_with_positions(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    folder = write_twin(
        twin_folder(settings, "alice", "tank"),
        scripts={**HELLO_SCRIPTS, "execute": "python run.py\n"},
        manifest="manifest: 1\nname: tank\nresources:\n  cpu: 0\n",
    )
    (folder / "lifecycle" / "clean").chmod(0o644)
    response = client.get(
        f"{API}/twins/validation", params={"path": "alice/digital_twins/tank"}, headers=as_alice
    )
    assert response.status_code == 200
    assert response.json() == {
        "path": "alice/digital_twins/tank",
        "valid": False,
        "errors": [
            {
                "severity": "error",
                "file": "dt.yaml",
                "line": 4,
                "column": 8,
                "message": "`resources.cpu`: Input should be greater than 0",
            },
            {
                "severity": "error",
                "file": "lifecycle/clean",
                "line": None,
                "column": None,
                "message": "lifecycle/clean is not executable: chmod +x lifecycle/clean",
            },
        ],
        "warnings": [
            {
                "severity": "warning",
                "file": "lifecycle/execute",
                "line": 1,
                "column": 1,
                "message": "lifecycle/execute has no #! line; add e.g. #!/bin/bash so it runs "
                "with the shell you expect",
            }
        ],
    }


# --- plan ----------------------------------------------------------------------------------

PLAN_PATH = {"path": "alice/digital_twins/tank"}


def _plan_twin(settings: Settings, manifest_tail: str = "") -> None:
    write_twin(
        twin_folder(settings, "alice", "tank"),
        scripts=HELLO_SCRIPTS,
        manifest="manifest: 1\nname: tank\n" + manifest_tail,
    )


def _checks(response: Any) -> dict[str, tuple[bool, str]]:
    assert response.status_code == 200
    return {c["check"]: (c["ok"], c["message"]) for c in response.json()["checks"]}


def test_plan_of_a_valid_dt_with_its_assets_is_ready(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    _plan_twin(settings, "assets:\n  - models/tank.fmu\n  - common/tools/solver\n")
    write_asset(settings, "alice/models/tank.fmu")
    write_asset(settings, "common/tools/solver/run")
    response = client.get(f"{API}/twins/plan", params=PLAN_PATH, headers=as_alice)
    assert response.status_code == 200
    assert response.json() == {
        "path": "alice/digital_twins/tank",
        "ready": True,
        "executor": "local",
        "phases": ["create", "execute", "terminate", "clean"],
        "checks": [
            {"check": "valid", "ok": True, "message": "no errors"},
            {"check": "assets", "ok": True, "message": "all assets exist"},
            {"check": "resources", "ok": True, "message": "fits the local executor"},
        ],
    }


def test_plan_of_a_reference_dt_is_ready(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    write_twin(twin_folder(settings, "alice", "tank"), scripts=HELLO_SCRIPTS)
    response = client.get(f"{API}/twins/plan", params=PLAN_PATH, headers=as_alice)
    assert response.json()["ready"] is True
    assert _checks(response) == {"valid": (True, "no errors")}


def test_plan_with_a_missing_asset_is_not_ready_and_names_it(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    _plan_twin(settings, "assets:\n  - models/tank.fmu\n  - models/pump.fmu\n")
    write_asset(settings, "alice/models/tank.fmu")
    response = client.get(f"{API}/twins/plan", params=PLAN_PATH, headers=as_alice)
    assert response.json()["ready"] is False
    assert _checks(response) == {
        "valid": (
            False,
            "1 error(s); the first: dt.yaml:5:5: error: asset `models/pump.fmu` does not exist",
        ),
        "assets": (False, "missing: models/pump.fmu"),
        "resources": (True, "fits the local executor"),
    }


def test_plan_with_an_unconfigured_service_is_not_ready_with_the_setting_to_set(
    client: TestClient,
    settings: Settings,
    as_alice: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "mqtt_url", None)
    _plan_twin(settings, "services: [mqtt]\n")
    response = client.get(f"{API}/twins/plan", params=PLAN_PATH, headers=as_alice)
    assert response.json()["ready"] is False
    assert _checks(response)["service mqtt"] == (
        False,
        "no such service is configured (DTAAS_MQTT_URL)",
    )


def test_plan_with_the_machines_mosquitto_is_ready(
    client: TestClient,
    settings: Settings,
    as_alice: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "mqtt_url", "mqtt://127.0.0.1:1883")
    _plan_twin(settings, "services: [mqtt]\n")
    response = client.get(f"{API}/twins/plan", params=PLAN_PATH, headers=as_alice)
    assert _checks(response)["service mqtt"] == (True, "mqtt answers")
    assert response.json()["ready"] is True


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound, never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


def test_plan_with_a_service_on_a_closed_port_is_not_ready(
    client: TestClient,
    settings: Settings,
    as_alice: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    closed_port: int,
) -> None:
    monkeypatch.setattr(settings, "mqtt_url", f"mqtt://127.0.0.1:{closed_port}")
    _plan_twin(settings, "services: [mqtt]\n")
    response = client.get(f"{API}/twins/plan", params=PLAN_PATH, headers=as_alice)
    assert _checks(response)["service mqtt"] == (
        False,
        f"cannot connect to 127.0.0.1:{closed_port} (Connection refused)",
    )
    assert response.json()["ready"] is False


def test_plan_asking_for_more_cpus_than_the_machine_has_is_not_ready(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    cpus = os.cpu_count() or 1
    _plan_twin(settings, f"resources:\n  cpu: {cpus + 1}\n")
    response = client.get(f"{API}/twins/plan", params=PLAN_PATH, headers=as_alice)
    assert response.json()["ready"] is False
    assert _checks(response)["resources"] == (
        False,
        f"asks for {cpus + 1} CPUs; this machine has {cpus}",
    )


def test_plan_asking_for_more_memory_than_the_machine_has_is_not_ready(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    total_mib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024**2
    _plan_twin(settings, "resources:\n  memory: 1000Ti\n")
    response = client.get(f"{API}/twins/plan", params=PLAN_PATH, headers=as_alice)
    assert _checks(response)["resources"] == (
        False,
        f"asks for 1000Ti of memory; this machine has {total_mib} MiB",
    )


def test_plan_asking_for_a_gpu_is_not_ready_on_local_but_deferred_on_ray(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    _plan_twin(settings, "resources:\n  gpu: 1\n")
    local = client.get(f"{API}/twins/plan", params=PLAN_PATH, headers=as_alice)
    ray = client.get(f"{API}/twins/plan", params={**PLAN_PATH, "executor": "ray"}, headers=as_alice)
    assert local.json()["ready"] is False
    assert _checks(local)["resources"] == (
        False,
        "asks for 1 GPU(s); the local executor has none",
    )
    assert (ray.json()["ready"], ray.json()["executor"]) == (True, "ray")
    assert _checks(ray)["resources"] == (True, "checked by ray when the job is submitted")


def test_plan_with_an_unknown_executor_is_refused(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    _plan_twin(settings)
    response = client.get(
        f"{API}/twins/plan", params={**PLAN_PATH, "executor": "k8s"}, headers=as_alice
    )
    assert response.status_code == 422
    assert error_of(response)["loc"] == ["query", "executor"]


def test_viewer_may_not_plan(
    client: TestClient, settings: Settings, as_viewer: dict[str, str]
) -> None:
    write_twin(twin_folder(settings, "common", "tank"), scripts=HELLO_SCRIPTS)
    response = client.get(
        f"{API}/twins/plan", params={"path": "common/digital_twins/tank"}, headers=as_viewer
    )
    assert response.status_code == 403
    assert error_of(response)["type"] == "permission_denied"


# --- configurations -----------------------------------------------------------------------

CONFIGURATIONS = f"{API}/twins/configurations"
TANK = {"path": "alice/digital_twins/tank"}


@pytest.fixture
def tank(settings: Settings) -> str:
    write_twin(
        twin_folder(settings, "alice", "tank"),
        scripts={"execute": "#!/bin/bash\n"},
        manifest=TANK_MANIFEST,
    )
    return "alice/digital_twins/tank"


def _save(client: TestClient, headers: dict[str, str], name: str, values: dict[str, Any]) -> Any:
    return client.post(
        CONFIGURATIONS, params=TANK, json={"name": name, "values": values}, headers=headers
    )


def test_bad_values_give_one_detail_item_per_field(
    client: TestClient, tank: str, as_alice: dict[str, str]
) -> None:
    response = _save(
        client, as_alice, "bad", {"speed": 11, "mode": "medium", "label": "MAIN", "colour": "red"}
    )
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {"type": "invalid_input", "msg": "speed: must be at most 10", "loc": ["values", "speed"]},
        {
            "type": "invalid_input",
            "msg": "mode: expected one of 'fast', 'slow'",
            "loc": ["values", "mode"],
        },
        {
            "type": "invalid_input",
            "msg": "label: must match the pattern [a-z]+",
            "loc": ["values", "label"],
        },
        {
            "type": "invalid_input",
            "msg": "unknown parameter 'colour'; this DT declares: speed, mode, label",
            "loc": ["values", "colour"],
        },
    ]


def test_a_required_value_that_is_missing_is_reported(
    client: TestClient, tank: str, as_alice: dict[str, str]
) -> None:
    response = _save(client, as_alice, "empty", {"mode": True})
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "type": "invalid_input",
            "msg": "mode: expected one of 'fast', 'slow'",
            "loc": ["values", "mode"],
        },
        {"type": "invalid_input", "msg": "speed: a value is required", "loc": ["values", "speed"]},
    ]


def test_not_a_number_is_refused_as_a_value(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    """Bug: Python's JSON parser reads NaN and check_value accepts it; the row is then
    saved (or refused by PostgreSQL's json type) and the response cannot be rendered: 500."""
    write_twin(
        twin_folder(settings, "alice", "tank"),
        scripts={"execute": "#!/bin/bash\n"},
        manifest="manifest: 1\nname: tank\nparameters:\n  ratio:\n    type: float\n",
    )
    response = client.post(
        CONFIGURATIONS,
        params=TANK,
        content=b'{"name": "odd", "values": {"ratio": NaN}}',
        headers={**as_alice, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "type": "invalid_input",
            "msg": "ratio: expected a finite number",
            "loc": ["values", "ratio"],
        }
    ]


def test_configuration_lifecycle_save_list_update_delete(
    client: TestClient, tank: str, as_alice: dict[str, str]
) -> None:
    saved = _save(client, as_alice, "fast run", {"speed": 5})
    assert saved.status_code == 201
    configuration = saved.json()
    assert (configuration["twin_path"], configuration["name"], configuration["values"]) == (
        tank,
        "fast run",
        {"speed": 5},
    )
    configuration_id = configuration["id"]

    listed = client.get(CONFIGURATIONS, params=TANK, headers=as_alice)
    assert listed.status_code == 200
    assert [c["id"] for c in listed.json()] == [configuration_id]

    duplicate = _save(client, as_alice, "fast run", {"speed": 6})
    assert duplicate.status_code == 409
    assert error_of(duplicate) == {
        "type": "conflict",
        "msg": "You already have a configuration named 'fast run' for this DT.",
        "loc": ["name"],
    }

    updated = client.put(
        f"{API}/configurations/{configuration_id}",
        json={"name": "slow run", "values": {"speed": 2, "mode": "slow"}},
        headers=as_alice,
    )
    assert updated.status_code == 200
    assert (updated.json()["name"], updated.json()["values"]) == (
        "slow run",
        {"speed": 2, "mode": "slow"},
    )
    read = client.get(f"{API}/configurations/{configuration_id}", headers=as_alice)
    assert (read.status_code, read.json()["name"]) == (200, "slow run")

    deleted = client.delete(f"{API}/configurations/{configuration_id}", headers=as_alice)
    assert deleted.status_code == 204
    gone = client.get(f"{API}/configurations/{configuration_id}", headers=as_alice)
    assert gone.status_code == 404
    assert client.get(CONFIGURATIONS, params=TANK, headers=as_alice).json() == []


def test_update_with_bad_values_or_a_taken_name_is_refused(
    client: TestClient, tank: str, as_alice: dict[str, str]
) -> None:
    first = _save(client, as_alice, "first", {"speed": 1}).json()
    _save(client, as_alice, "second", {"speed": 2})
    url = f"{API}/configurations/{first['id']}"
    bad = client.put(url, json={"name": "first", "values": {"speed": 0}}, headers=as_alice)
    taken = client.put(url, json={"name": "second", "values": {"speed": 3}}, headers=as_alice)
    assert bad.status_code == 422
    assert error_of(bad) == {
        "type": "invalid_input",
        "msg": "speed: must be at least 1",
        "loc": ["values", "speed"],
    }
    assert taken.status_code == 409
    assert error_of(taken)["type"] == "conflict"
    after = client.get(url, headers=as_alice).json()
    assert (after["name"], after["values"]) == ("first", {"speed": 1})


def test_another_users_configuration_is_not_found(
    client: TestClient, tank: str, as_alice: dict[str, str], as_bob: dict[str, str]
) -> None:
    configuration_id = _save(client, as_alice, "mine", {"speed": 5}).json()["id"]
    url = f"{API}/configurations/{configuration_id}"
    expected = {
        "type": "not_found",
        "msg": f"There is no configuration {configuration_id}.",
        "loc": ["configuration_id"],
    }
    for response in (
        client.get(url, headers=as_bob),
        client.put(url, json={"name": "theirs", "values": {}}, headers=as_bob),
        client.delete(url, headers=as_bob),
    ):
        assert response.status_code == 404
        assert error_of(response) == expected
    assert client.get(url, headers=as_alice).json()["name"] == "mine"


def test_viewer_may_not_save_a_configuration(
    client: TestClient, settings: Settings, as_viewer: dict[str, str]
) -> None:
    write_twin(
        twin_folder(settings, "common", "tank"),
        scripts={"execute": "#!/bin/bash\n"},
        manifest=TANK_MANIFEST,
    )
    common_tank = {"path": "common/digital_twins/tank"}
    response = client.post(
        CONFIGURATIONS,
        params=common_tank,
        json={"name": "mine", "values": {"speed": 5}},
        headers=as_viewer,
    )
    assert response.status_code == 403
    assert error_of(response) == {
        "type": "permission_denied",
        "msg": "Your role 'viewer' does not allow 'write'; ask an administrator for a role that "
        "does.",
        "loc": [],
    }
    listed = client.get(CONFIGURATIONS, params=common_tank, headers=as_viewer)
    assert (listed.status_code, listed.json()) == (200, [])


# --- the dt.yaml JSON Schema -------------------------------------------------------------------


def _problems(
    schema: dict[str, Any], value: Any, root: dict[str, Any], where: str = ""
) -> list[str]:
    """Why ``value`` does not match ``schema``: the JSON Schema keywords the schema uses."""
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        return _problems(root["$defs"][name], value, root, where)
    if "anyOf" in schema:
        branches = [_problems(branch, value, root, where) for branch in schema["anyOf"]]
        return [] if any(not b for b in branches) else [f"{where}: no branch of anyOf matches"]
    problems: list[str] = []
    types: dict[str, type | tuple[type, ...]] = {
        "object": dict,
        "array": list,
        "string": str,
        "integer": int,
        "number": (int, float),
        "boolean": bool,
        "null": type(None),
    }
    expected = schema.get("type")
    if expected is not None and (
        not isinstance(value, types[expected])
        or (isinstance(value, bool) and expected in ("integer", "number"))
    ):
        return [f"{where}: not of type {expected}"]
    if "const" in schema and value != schema["const"]:
        problems.append(f"{where}: not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: not one of {schema['enum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", 10**9):
            problems.append(f"{where}: bad length")
        if "pattern" in schema and not re.search(schema["pattern"], value):
            problems.append(f"{where}: does not match {schema['pattern']}")
    if isinstance(value, list):
        for index, item in enumerate(value):
            problems += _problems(schema.get("items", {}), item, root, f"{where}.{index}")
    if isinstance(value, dict):
        problems += [
            f"{where}: missing {key}" for key in schema.get("required", []) if key not in value
        ]
        for key, item in value.items():
            if key in schema.get("properties", {}):
                problems += _problems(schema["properties"][key], item, root, f"{where}.{key}")
                continue
            patterns = [p for p in schema.get("patternProperties", {}) if re.search(p, key)]
            for pattern in patterns:
                problems += _problems(
                    schema["patternProperties"][pattern], item, root, f"{where}.{key}"
                )
            if not patterns and schema.get("additionalProperties") is False:
                problems.append(f"{where}: {key} is not allowed")
    return problems


GOOD_MANIFEST = {
    "manifest": 1,
    "name": "Heated tank",
    "parameters": {
        "speed": {"type": "int", "min": 1, "max": 10, "default": 3},
        "mode": {"type": "enum", "choices": ["fast", "slow"]},
    },
    "assets": ["common/models/tank.fmu"],
    "services": ["mqtt"],
    "resources": {"cpu": 1, "memory": "512Mi", "wall_time": "30m"},
    "executor": "local",
    "phases": {"execute": {"command": "python run.py"}},
    "outputs": ["results/*.csv"],
    "telemetry": [{"field": "temperature_c", "label": "T", "unit": "°C"}],
}


@pytest.fixture
def dt_schema(client: TestClient, as_alice: dict[str, str]) -> dict[str, Any]:
    response = client.get(f"{API}/schemas/dt.json", headers=as_alice)
    assert response.status_code == 200
    schema: dict[str, Any] = response.json()
    return schema


def test_schema_is_a_draft_2020_12_json_schema_of_the_manifest(dt_schema: dict[str, Any]) -> None:
    assert dt_schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert dt_schema["$id"] == "/api/v1/schemas/dt.json"
    assert dt_schema["type"] == "object"
    assert dt_schema["required"] == ["manifest", "name"]
    assert dt_schema["additionalProperties"] is False
    assert {"parameters", "resources"} <= set(dt_schema["properties"])
    assert dt_schema["properties"]["resources"] == {"$ref": "#/$defs/Resources"}
    resources = dt_schema["$defs"]["Resources"]
    assert set(resources["properties"]) == {"cpu", "memory", "gpu", "wall_time"}
    assert resources["additionalProperties"] is False
    parameter = dt_schema["$defs"]["Parameter"]
    assert parameter["required"] == ["type"]
    assert dt_schema["$defs"]["ParameterType"]["enum"] == [
        "string",
        "int",
        "float",
        "bool",
        "enum",
        "asset",
    ]


def test_schema_accepts_a_good_manifest_and_refuses_typos(dt_schema: dict[str, Any]) -> None:
    assert _problems(dt_schema, GOOD_MANIFEST, dt_schema) == []
    assert _problems(dt_schema, {**GOOD_MANIFEST, "servces": ["mqtt"]}, dt_schema) == [
        ": servces is not allowed"
    ]
    bad_resources = {**GOOD_MANIFEST, "resources": {"cpus": 2}}
    assert _problems(dt_schema, bad_resources, dt_schema) == [".resources: cpus is not allowed"]
    assert _problems(dt_schema, {"name": "x"}, dt_schema) == [": missing manifest"]


def test_schema_refuses_parameter_and_phase_names_the_validator_refuses(
    dt_schema: dict[str, Any],
) -> None:
    """Bug: `parameters` and `phases` have patternProperties but no
    `additionalProperties: false`, so editors accept `Speed:` that dt.yaml validation refuses."""
    bad = {
        **GOOD_MANIFEST,
        "parameters": {"Speed": {"type": "int"}},
        "phases": {"Execute": {"command": "x"}},
    }
    assert _problems(dt_schema, bad, dt_schema) == [
        ".parameters: Speed is not allowed",
        ".phases: Execute is not allowed",
    ]


def test_schema_needs_authentication(client: TestClient) -> None:
    assert client.get(f"{API}/schemas/dt.json").status_code == 401
