"""Helpers of the twins tests: DT folders on disk, in the reference layout or with a dt.yaml."""

from __future__ import annotations

import textwrap
from pathlib import Path

from dtaas.config import Settings

# The reference sample `hello_world`: lifecycle/{clean,create,execute,terminate}, description.md.
HELLO_SCRIPTS = {
    "create": "#!/bin/bash\necho 'nothing to install'\n",
    "execute": "#!/bin/bash\necho 'hello world' > hello.txt\n",
    "terminate": "#!/bin/bash\nlifecycle/clean\n",
    "clean": "#!/bin/bash\nrm -f hello.txt\n",
}
HELLO_DESCRIPTION = "# Hello world\n\nPrints hello world into a file.\n"


def text(block: str) -> str:
    """A YAML or script text written indented in a test, without its indentation."""
    return textwrap.dedent(block).lstrip("\n")


def write_twin(
    folder: Path,
    *,
    scripts: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
    manifest: str | None = None,
    description: str | None = HELLO_DESCRIPTION,
) -> Path:
    """Write a DT folder: executable ``lifecycle/`` scripts, other files, dt.yaml, description."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (scripts or {}).items():
        script = folder / "lifecycle" / name
        script.parent.mkdir(exist_ok=True)
        script.write_text(content)
        script.chmod(0o755)
    for name, content in (files or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(0o644)
    if manifest is not None:
        (folder / "dt.yaml").write_text(manifest)
    if description is not None:
        (folder / "description.md").write_text(description)
    return folder


def twin_folder(settings: Settings, area: str, name: str) -> Path:
    """The real folder of ``<area>/digital_twins/<name>``."""
    return settings.resolved_files_dir / area / "digital_twins" / name


def write_asset(settings: Settings, path: str, content: str = "x\n") -> Path:
    """Create the library file ``path`` (``<area>/<kind>/...``) on disk."""
    real = settings.resolved_files_dir / path
    real.parent.mkdir(parents=True, exist_ok=True)
    real.write_text(content)
    return real
