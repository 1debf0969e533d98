"""`dtaas twin ...`: offline validation of folders on disk, and the twins API on a live server."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from dtaas.cli import app
from tests.live import LiveServer, kept_logging, write_twin_folder

HELLO = {
    "create": "#!/bin/bash\nmkdir -p output\n",
    "execute": "#!/bin/bash\necho 'hello world' > output/hello.txt\n",
    "terminate": "#!/bin/bash\nlifecycle/clean\n",
    "clean": "#!/bin/bash\nrm -rf output\n",
}
DESCRIBED = {"description.md": "# Hello\n\nWrites hello world into a file.\n"}
BROKEN = """\
manifest: 1
name: broken
parameters:
  speed: {type: velocity}
resources:
  cpus: 2
"""
WITH_ASSETS = """\
manifest: 1
name: tank
description: Simulates a tank.
assets:
  - models/tank.json
  - common/data/levels.csv
  - common/data/missing.csv
"""


def run(runner: CliRunner, *args: str) -> Result:
    """Invoke the CLI; tracebacks must never reach the user, whatever the outcome."""
    with kept_logging():
        result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, credentials_file: Path) -> Path:
    """An empty current folder, and a machine where nobody is signed in."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


@pytest.fixture
def signed_in(live: LiveServer) -> LiveServer:
    live.store_credentials("alice")
    return live


# --- validate, offline ------------------------------------------------------------------


def test_validate_offline_prints_each_error_at_its_position_and_exits_1(
    runner: CliRunner, workdir: Path
) -> None:
    write_twin_folder(workdir / "my-dt", scripts=HELLO, manifest=BROKEN, files=DESCRIBED)

    result = run(runner, "twin", "validate", "my-dt")

    assert result.exit_code == 1
    assert result.stdout == (
        "my-dt/dt.yaml:4:17: error: `parameters.speed.type`: `velocity` is not allowed; "
        "use one of string, int, float, bool, enum or asset\n"
        "my-dt/dt.yaml:6:3: error: unknown key `cpus` — did you mean `cpu`?\n"
        "my-dt: 2 errors, 0 warnings\n"
    )
    assert result.stderr == ""


def test_validate_offline_names_files_from_the_current_folder(
    runner: CliRunner, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = write_twin_folder(workdir / "twins" / "my-dt", scripts=HELLO, files=DESCRIBED)
    (folder / "lifecycle" / "execute").chmod(0o644)

    nested = run(runner, "twin", "validate", "twins/my-dt")
    monkeypatch.chdir(folder)
    inside = run(runner, "twin", "validate", ".")

    assert nested.exit_code == inside.exit_code == 1
    message = "error: lifecycle/execute is not executable: chmod +x lifecycle/execute\n"
    assert nested.stdout == (
        f"twins/my-dt/lifecycle/execute: {message}twins/my-dt: 1 error, 0 warnings\n"
    )
    assert inside.stdout == f"lifecycle/execute: {message}.: 1 error, 0 warnings\n"


def test_validate_offline_with_warnings_only_exits_0(runner: CliRunner, workdir: Path) -> None:
    write_twin_folder(workdir / "quiet", scripts={"execute": "echo no shebang\n"})

    result = run(runner, "twin", "validate", "quiet")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "quiet/description.md: warning: there is no description.md or README.md; add one so "
        "users know what this DT does\n"
        "quiet/lifecycle/execute:1:1: warning: lifecycle/execute has no #! line; add e.g. "
        "#!/bin/bash so it runs with the shell you expect\n"
        "quiet: 0 errors, 2 warnings\n"
    )


def test_validate_offline_passes_a_reference_format_dt(runner: CliRunner, workdir: Path) -> None:
    write_twin_folder(workdir / "hello-world", scripts=HELLO, files=DESCRIBED)

    result = run(runner, "twin", "validate", "hello-world")

    assert result.exit_code == 0, result.output
    assert result.stdout == "hello-world: no problems found\n"
    assert result.stderr == ""


def test_validate_offline_checks_assets_against_the_library_around_the_dt(
    runner: CliRunner, workdir: Path
) -> None:
    library = workdir / "files"
    write_twin_folder(
        library / "alice" / "digital_twins" / "tank", scripts=HELLO, manifest=WITH_ASSETS
    )
    (library / "alice" / "models").mkdir()
    (library / "alice" / "models" / "tank.json").write_text("{}")
    (library / "common" / "data").mkdir(parents=True)
    (library / "common" / "data" / "levels.csv").write_text("t,level\n")

    result = run(runner, "twin", "validate", "files/alice/digital_twins/tank")

    assert result.exit_code == 1
    assert result.stdout == (
        "files/alice/digital_twins/tank/dt.yaml:7:5: error: asset "
        "`common/data/missing.csv` does not exist\n"
        "files/alice/digital_twins/tank: 1 error, 0 warnings\n"
    )
    assert result.stderr == ""


def test_validate_offline_outside_a_library_skips_asset_checks_with_a_warning(
    runner: CliRunner, workdir: Path
) -> None:
    write_twin_folder(workdir / "tank", scripts=HELLO, manifest=WITH_ASSETS)

    result = run(runner, "twin", "validate", "tank")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "tank/dt.yaml:5:5: warning: asset `models/tank.json` cannot be checked here\n"
        "tank/dt.yaml:6:5: warning: asset `common/data/levels.csv` cannot be checked here\n"
        "tank/dt.yaml:7:5: warning: asset `common/data/missing.csv` cannot be checked here\n"
        "tank: 0 errors, 3 warnings\n"
    )
    assert result.stderr == (
        "note: tank is not in a library (<user>/digital_twins/<dt> beside common/), so its "
        "assets were not checked.\n"
    )


def test_validate_of_a_local_file_asks_for_the_folder(runner: CliRunner, workdir: Path) -> None:
    write_twin_folder(workdir / "my-dt", scripts=HELLO, manifest=BROKEN)

    result = run(runner, "twin", "validate", "my-dt/dt.yaml")

    assert result.exit_code == 1
    assert result.stderr == "error: my-dt/dt.yaml is a file; give the DT's folder.\n"


def test_validate_of_a_missing_folder_does_not_ask_the_server(
    runner: CliRunner, workdir: Path
) -> None:
    result = run(runner, "twin", "validate", "my-dtt")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: There is no folder my-dtt here, and it is not a library path "
        "<library>/digital_twins/<name> either.\n"
    )


# --- validate, ls, show, new, plan against the server ----------------------------------


def test_validate_a_library_path_asks_the_server(
    runner: CliRunner, signed_in: LiveServer, workdir: Path
) -> None:
    signed_in.add_twin("alice/digital_twins/broken", scripts=HELLO, manifest=BROKEN)

    result = run(runner, "twin", "validate", "alice/digital_twins/broken")

    assert result.exit_code == 1
    assert result.stdout == (
        "alice/digital_twins/broken/description.md: warning: there is no description.md or "
        "README.md; add one so users know what this DT does\n"
        "alice/digital_twins/broken/dt.yaml:4:17: error: `parameters.speed.type`: `velocity` "
        "is not allowed; use one of string, int, float, bool, enum or asset\n"
        "alice/digital_twins/broken/dt.yaml:6:3: error: unknown key `cpus` — did you mean "
        "`cpu`?\n"
        "alice/digital_twins/broken: 2 errors, 1 warning\n"
    )


def test_validate_a_library_path_without_credentials_says_to_log_in(
    runner: CliRunner, live: LiveServer, workdir: Path
) -> None:
    result = run(runner, "twin", "validate", "alice/digital_twins/hello")

    assert result.exit_code == 1
    assert result.stderr == "error: You are not signed in; run `dtaas login` first.\n"


def test_ls_lists_your_twins_with_phases_and_validity(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    signed_in.add_twin("alice/digital_twins/hello", scripts=HELLO, files=DESCRIBED)
    signed_in.add_twin("alice/digital_twins/broken", scripts=HELLO, manifest=BROKEN)

    result = run(runner, "twin", "ls")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [cell.strip() for cell in lines[1].strip("┃ ").split("┃")] == [
        "path",
        "name",
        "phases",
        "valid",
        "errors",
        "warnings",
    ]
    rows = [[cell.strip() for cell in line.strip("│ ").split("│")] for line in lines[3:-1]]
    phases = "create, execute, terminate, clean"
    assert rows == [
        ["alice/digital_twins/broken", "broken", phases, "no", "2", "1"],
        ["alice/digital_twins/hello", "hello", phases, "yes", "0", "0"],
    ]


def test_show_prints_description_phases_parameters_and_problems(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    manifest = (
        "manifest: 1\nname: tank\ndescription: A tank.\nparameters:\n"
        "  speed: {type: float, default: 2.5, help: Pump speed.}\n"
        "  label: {type: string}\n"
    )
    signed_in.add_twin("alice/digital_twins/tank", scripts={"execute": "echo\n"}, manifest=manifest)

    result = run(runner, "twin", "show", "alice/digital_twins/tank")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[:5] == [
        "alice/digital_twins/tank  (tank)",
        "A tank.",
        "phases: execute",
        "executor: local",
        "parameters:",
    ]
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in lines[8:10]]
    assert rows == [
        ["speed", "float", "2.5", "no", "Pump speed."],
        ["label", "string", "-", "yes", ""],
    ]
    assert lines[11:] == [
        "problems: 0 errors, 1 warning",
        "  lifecycle/execute:1:1: warning: lifecycle/execute has no #! line; add e.g. "
        "#!/bin/bash so it runs with the shell you expect",
    ]


def test_show_of_a_folder_that_is_no_twin_is_not_found(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    result = run(runner, "twin", "show", "alice/data")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: 'alice/data' is not a digital twin: a DT is a folder "
        "<library>/digital_twins/<name>.\n"
    )


def test_new_from_a_template_creates_a_valid_twin(runner: CliRunner, signed_in: LiveServer) -> None:
    listed = run(runner, "twin", "templates")
    result = run(runner, "twin", "new", "tank", "--template", "python-simulation")
    validated = run(runner, "twin", "validate", "alice/digital_twins/tank")

    assert listed.exit_code == 0, listed.output
    assert "python-simulation: " in listed.stdout
    assert result.exit_code == 0, result.output
    assert result.stdout == "Created alice/digital_twins/tank from template python-simulation.\n"
    assert validated.exit_code == 0, validated.output
    assert (
        (signed_in.files_dir / "alice/digital_twins/tank/dt.yaml")
        .read_text()
        .startswith("manifest: 1\nname: tank\n")
    )


def test_new_from_another_twin_copies_it(runner: CliRunner, signed_in: LiveServer) -> None:
    signed_in.add_twin("alice/digital_twins/hello", scripts=HELLO, files=DESCRIBED)

    result = run(runner, "twin", "new", "hello-2", "--from", "alice/digital_twins/hello")
    again = run(runner, "twin", "new", "hello-2", "--from", "alice/digital_twins/hello")

    assert result.exit_code == 0, result.output
    assert result.stdout == "Created alice/digital_twins/hello-2 from alice/digital_twins/hello.\n"
    copied = signed_in.files_dir / "alice/digital_twins/hello-2/lifecycle/execute"
    assert copied.read_text() == HELLO["execute"]
    assert again.exit_code == 1
    assert again.stderr == (
        "error: alice/digital_twins/hello-2 already exists; choose another name.\n"
    )


@pytest.mark.parametrize(
    "options", [[], ["--template", "python-simulation", "--from", "alice/digital_twins/x"]]
)
def test_new_needs_exactly_one_of_template_and_from(
    runner: CliRunner, signed_in: LiveServer, options: list[str]
) -> None:
    result = run(runner, "twin", "new", "tank", *options)

    assert result.exit_code == 1
    assert result.stderr == "error: Give either --template NAME or --from PATH.\n"


def test_new_with_an_unknown_template_lists_the_known_ones(
    runner: CliRunner, signed_in: LiveServer
) -> None:
    result = run(runner, "twin", "new", "tank", "--template", "rocket")

    assert result.exit_code == 1
    assert result.stderr == (
        "error: There is no template 'rocket'; choose one of compose-common, mqtt-publisher, "
        "python-simulation.\n"
    )


def test_plan_exits_1_when_a_check_fails(runner: CliRunner, signed_in: LiveServer) -> None:
    signed_in.add_twin("alice/digital_twins/hello", scripts=HELLO, files=DESCRIBED)
    signed_in.add_twin("alice/digital_twins/tank", scripts=HELLO, manifest=WITH_ASSETS)

    ready = run(runner, "twin", "plan", "alice/digital_twins/hello")
    missing = run(runner, "twin", "plan", "alice/digital_twins/tank")

    assert ready.exit_code == 0, ready.output
    assert ready.stdout == (
        "ok    valid: no errors\n"
        "alice/digital_twins/hello is ready to run on local: create, execute, terminate, "
        "clean.\n"
    )
    assert missing.exit_code == 1
    assert "FAIL  assets: missing: models/tank.json, common/data/levels.csv, " in missing.stdout
