"""validate_folder on DT folders: the reference layout, lifecycle scripts, assets, warnings."""

from __future__ import annotations

from pathlib import Path

from dtaas.twins.validate import Problem, phase_scripts, validate_folder
from tests.twins.support import HELLO_SCRIPTS, text, write_twin

NO_PHASE = (
    "there is no lifecycle/ folder and dt.yaml overrides no phase: nothing can run; add "
    "lifecycle/execute or a `phases:` entry"
)
NO_DESCRIPTION = "there is no description.md or README.md; add one so users know what this DT does"


def _no_shebang(script: str) -> str:
    return (
        f"lifecycle/{script} has no #! line; add e.g. #!/bin/bash so it runs with the shell you "
        "expect"
    )


def test_reference_format_dt_is_valid_without_a_manifest(tmp_path: Path) -> None:
    folder = write_twin(tmp_path / "hello_world", scripts=HELLO_SCRIPTS)
    report = validate_folder(folder)
    assert report.problems == []
    assert report.manifest is None
    assert report.is_valid


def test_phases_come_in_the_reference_order(tmp_path: Path) -> None:
    reference = ["create", "execute", "analyze", "evolve", "save", "terminate", "clean"]
    scripts = dict.fromkeys(sorted(reference), "#!/bin/bash\necho not supported\n")
    folder = write_twin(tmp_path / "mass-spring-damper", scripts=scripts)
    assert phase_scripts(folder) == reference
    assert validate_folder(folder).problems == []


def test_extra_phases_are_phases_in_the_order_of_the_reference_examples(tmp_path: Path) -> None:
    """`install` comes first (o5g, opc-ua-waterplant), `prepare` after `create` (flex-cell).

    Bug: both are sorted after `clean`, so a UI would offer install last.
    """
    o5g = write_twin(
        tmp_path / "o5g",
        scripts=dict.fromkeys(
            ("install", "create", "execute", "terminate", "clean"), "#!/bin/bash\n"
        ),
    )
    flex_cell = write_twin(
        tmp_path / "flex-cell",
        scripts=dict.fromkeys(
            ("create", "prepare", "execute", "analyze", "evolve", "save", "terminate", "clean"),
            "#!/bin/bash\n",
        ),
    )
    assert phase_scripts(o5g) == ["install", "create", "execute", "terminate", "clean"]
    assert phase_scripts(flex_cell) == [
        "create",
        "prepare",
        "execute",
        "analyze",
        "evolve",
        "save",
        "terminate",
        "clean",
    ]


def test_helper_files_with_a_dot_are_not_phases_and_not_checked(tmp_path: Path) -> None:
    folder = write_twin(
        tmp_path / "water_tank_FI",
        scripts=HELLO_SCRIPTS,
        files={
            "lifecycle/plot.py": "import pandas\n",
            "lifecycle/requirements.txt": "pandas\n",
            "lifecycle/run.cmd": "echo run\n",
            "lifecycle/model.mos": "loadModel(Modelica);\n",
        },
    )
    assert phase_scripts(folder) == ["create", "execute", "terminate", "clean"]
    assert validate_folder(folder).problems == []


def test_folders_inside_lifecycle_are_not_phases(tmp_path: Path) -> None:
    folder = write_twin(tmp_path / "incubator", scripts={"execute": "#!/bin/bash\n"})
    (folder / "lifecycle" / "helpers").mkdir()
    assert phase_scripts(folder) == ["execute"]


def test_non_executable_script_is_an_error(tmp_path: Path) -> None:
    folder = write_twin(tmp_path / "hello", scripts=HELLO_SCRIPTS)
    (folder / "lifecycle" / "execute").chmod(0o644)
    report = validate_folder(folder)
    assert report.errors == [
        Problem(
            "error",
            "lifecycle/execute",
            None,
            None,
            "lifecycle/execute is not executable: chmod +x lifecycle/execute",
        )
    ]
    assert report.warnings == []
    assert not report.is_valid


def test_script_without_shebang_is_a_warning_at_its_first_line(tmp_path: Path) -> None:
    folder = write_twin(tmp_path / "hello", scripts={**HELLO_SCRIPTS, "execute": "echo hi\n"})
    report = validate_folder(folder)
    assert report.errors == []
    assert report.warnings == [
        Problem("warning", "lifecycle/execute", 1, 1, _no_shebang("execute"))
    ]
    assert report.is_valid


def test_empty_script_has_no_shebang(tmp_path: Path) -> None:
    folder = write_twin(tmp_path / "hello", scripts={"execute": ""})
    assert validate_folder(folder).warnings == [
        Problem("warning", "lifecycle/execute", 1, 1, _no_shebang("execute"))
    ]


def test_every_script_is_checked_not_only_the_first(tmp_path: Path) -> None:
    folder = write_twin(tmp_path / "hello", scripts={"create": "echo a\n", "clean": "echo b\n"})
    (folder / "lifecycle" / "clean").chmod(0o600)
    report = validate_folder(folder)
    assert [p.format() for p in report.problems] == [
        "lifecycle/clean: error: lifecycle/clean is not executable: chmod +x lifecycle/clean",
        f"lifecycle/clean:1:1: warning: {_no_shebang('clean')}",
        f"lifecycle/create:1:1: warning: {_no_shebang('create')}",
    ]


def test_no_lifecycle_and_no_phase_override_is_an_error(tmp_path: Path) -> None:
    folder = write_twin(tmp_path / "nothing")
    report = validate_folder(folder)
    assert report.errors == [Problem("error", "lifecycle/", None, None, NO_PHASE)]


def test_phase_overrides_alone_are_enough(tmp_path: Path) -> None:
    folder = write_twin(
        tmp_path / "tank",
        manifest=text(
            """
            manifest: 1
            name: tank
            phases:
              execute:
                command: python run.py
            """
        ),
    )
    assert validate_folder(folder).problems == []


def test_lifecycle_with_only_helper_files_is_an_error(tmp_path: Path) -> None:
    """Nothing can run when lifecycle/ holds no script without a dot.

    Bug: only a missing lifecycle/ folder is caught; this DT is reported valid.
    """
    folder = write_twin(tmp_path / "plots", files={"lifecycle/plot.py": "print(1)\n"})
    report = validate_folder(folder)
    assert report.errors == [
        Problem(
            "error",
            "lifecycle/",
            None,
            None,
            "lifecycle/ has no phase script (a file without a dot, e.g. lifecycle/execute) and "
            "dt.yaml overrides no phase: nothing can run; add lifecycle/execute or a `phases:` "
            "entry",
        )
    ]


def test_missing_description_is_a_warning(tmp_path: Path) -> None:
    folder = write_twin(tmp_path / "hello", scripts=HELLO_SCRIPTS, description=None)
    report = validate_folder(folder)
    assert report.warnings == [Problem("warning", "description.md", None, None, NO_DESCRIPTION)]
    assert report.is_valid


def test_readme_or_manifest_description_is_a_description(tmp_path: Path) -> None:
    readme = write_twin(
        tmp_path / "a", scripts=HELLO_SCRIPTS, files={"README.md": "# A\n"}, description=None
    )
    described = write_twin(
        tmp_path / "b",
        scripts=HELLO_SCRIPTS,
        manifest="manifest: 1\nname: b\ndescription: A twin.\n",
        description=None,
    )
    assert validate_folder(readme).problems == []
    assert validate_folder(described).problems == []


MSD_MANIFEST = text(
    """
    manifest: 1
    name: mass-spring-damper
    parameters:
      solver:
        type: asset
        kind: tools
        default: common/tools/maestro.jar
    assets:
      - models/msd.fmu
      - common/tools/maestro.jar
    """
)


def test_missing_asset_is_an_error_at_its_line_and_column(tmp_path: Path) -> None:
    folder = write_twin(tmp_path / "msd", scripts=HELLO_SCRIPTS, manifest=MSD_MANIFEST)
    report = validate_folder(folder, asset_exists=lambda path: path == "models/msd.fmu")
    assert report.errors == [
        Problem("error", "dt.yaml", 10, 5, "asset `common/tools/maestro.jar` does not exist"),
        Problem(
            "error",
            "dt.yaml",
            7,
            14,
            "the default asset `common/tools/maestro.jar` of parameter `solver` does not exist",
        ),
    ]
    assert report.warnings == []


def test_asset_that_cannot_be_checked_is_a_warning(tmp_path: Path) -> None:
    folder = write_twin(tmp_path / "msd", scripts=HELLO_SCRIPTS, manifest=MSD_MANIFEST)
    report = validate_folder(folder, asset_exists=lambda _path: None)
    assert report.errors == []
    assert report.warnings == [
        Problem("warning", "dt.yaml", 9, 5, "asset `models/msd.fmu` cannot be checked here"),
        Problem(
            "warning", "dt.yaml", 10, 5, "asset `common/tools/maestro.jar` cannot be checked here"
        ),
    ]
    assert report.is_valid


def test_without_an_asset_checker_assets_are_not_checked(tmp_path: Path) -> None:
    folder = write_twin(tmp_path / "msd", scripts=HELLO_SCRIPTS, manifest=MSD_MANIFEST)
    assert validate_folder(folder).problems == []


def test_phase_both_overridden_and_scripted_is_a_warning_at_the_phase(tmp_path: Path) -> None:
    """Bug: reported at 5:5 (the `command:` line), not at the `execute:` key (4:3)."""
    folder = write_twin(
        tmp_path / "tank",
        scripts=HELLO_SCRIPTS,
        manifest="manifest: 1\nname: tank\nphases:\n  execute:\n    command: python run.py\n",
    )
    report = validate_folder(folder)
    assert report.errors == []
    assert report.warnings == [
        Problem(
            "warning",
            "dt.yaml",
            4,
            3,
            "phase `execute` is overridden here and also has lifecycle/execute; the override "
            "wins — remove one of them",
        )
    ]


def test_manifest_and_lifecycle_problems_are_reported_together(tmp_path: Path) -> None:
    folder = write_twin(
        tmp_path / "tank",
        scripts={**HELLO_SCRIPTS, "execute": "python run.py\n"},
        manifest="manifest: 1\nname: tank\nservces: [mqtt]\n",
    )
    report = validate_folder(folder)
    assert [p.format() for p in report.errors] == [
        "dt.yaml:3:1: error: unknown key `servces` — did you mean `services`?"
    ]
    assert [p.format() for p in report.warnings] == [
        f"lifecycle/execute:1:1: warning: {_no_shebang('execute')}"
    ]


def test_oversized_manifest_is_an_error(tmp_path: Path) -> None:
    folder = write_twin(
        tmp_path / "big",
        scripts=HELLO_SCRIPTS,
        manifest="manifest: 1\nname: big\ndescription: " + "x" * (256 * 1024) + "\n",
    )
    assert validate_folder(folder).errors == [
        Problem("error", "dt.yaml", None, None, "dt.yaml is larger than 256 KiB")
    ]
