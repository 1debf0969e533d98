"""An instance's results through the API: only files the `outputs:` globs match inside the
working copy, never a way out of it; previews of CSV, Markdown and text; the zip."""

from __future__ import annotations

import io
import os
import uuid
import zipfile
from pathlib import Path
from typing import Any, Protocol

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from dtaas.config import Settings
from dtaas.security.models import User
from dtaas.services.results import glob_pattern
from tests.factories import bearer, make_user
from tests.live import write_twin_folder
from tests.services.telemetry.conftest import MANIFEST

API = "/api/v1"
CSV = "step,t,x,v\n" + "".join(f"{n},{n / 100},{(-1) ** n * n},{n * 2}\n" for n in range(1, 251))
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
MARKDOWN = """# Report

<script>alert('x')</script>

| a | b |
|---|---|
| 1 | 2 |

[bad](javascript:alert(1)) ![plot](plots/p.png)
"""


@pytest.fixture
def as_alice(session: Session, settings: Settings, alice: User) -> dict[str, str]:
    return bearer(session, settings, alice)


@pytest.fixture
def instance_id(client: TestClient, settings: Settings, as_alice: dict[str, str]) -> int:
    name = f"sensor-{uuid.uuid4().hex[:8]}"
    write_twin_folder(
        settings.resolved_files_dir / "alice" / "digital_twins" / name,
        scripts={"execute": "#!/bin/sh\necho hi\n"},
        manifest=MANIFEST,
        files={"notes.txt": "first line\n"},
    )
    response = client.post(
        f"{API}/instances", json={"twin_path": f"alice/digital_twins/{name}"}, headers=as_alice
    )
    assert response.status_code == 201, response.text
    created: int = response.json()["id"]
    return created


@pytest.fixture
def copy(settings: Settings, instance_id: int, tmp_path: Path) -> Path:
    """The working copy with results a DT could have written, and traps."""
    root = settings.data_dir.resolve() / "instances" / str(instance_id) / "dt"
    (root / "results" / "plots").mkdir(parents=True)
    (root / "results" / "trajectory.csv").write_text(CSV)
    (root / "results" / "report.md").write_text(MARKDOWN)
    (root / "results" / "plots" / "p.png").write_bytes(PNG)
    (root / "results" / "ignored.log").write_text("not an output\n")
    secret = tmp_path / "secret.csv"
    secret.write_text("password,hunter2\n")
    (root / "results" / "escape.csv").symlink_to(secret)  # a symlink out of the copy
    (root / "results" / "manifest.csv").symlink_to("../dt.yaml")  # inside, not a result
    (root / "results" / "alias.csv").symlink_to("trajectory.csv")  # inside and a result
    os.mkfifo(root / "results" / "pipe.csv")
    return root


class _Answer(Protocol):
    def json(self) -> Any: ...


def _error(response: _Answer) -> dict[str, object]:
    first: dict[str, object] = response.json()["detail"][0]
    return first


@pytest.mark.parametrize(
    ("glob", "matching", "not_matching"),
    [
        ("results/*.csv", ["results/a.csv"], ["results/sub/a.csv", "a.csv", "results/a.csvx"]),
        ("results/**/*.png", ["results/a.png", "results/x/y/a.png"], ["results.png", "a/b.png"]),
        ("**", ["a", "a/b/c"], []),
        ("out/run-?.[ct]sv", ["out/run-1.csv", "out/run-2.tsv"], ["out/run-10.csv"]),
        ("out/[!a]*.txt", ["out/b.txt"], ["out/a.txt"]),
        ("a+b (1).txt", ["a+b (1).txt"], ["aab (1).txt"]),
    ],
)
def test_output_globs_match_like_shell_globs_with_double_star(
    glob: str, matching: list[str], not_matching: list[str]
) -> None:
    pattern = glob_pattern(glob)
    assert [p for p in matching if pattern.match(p)] == matching
    assert [p for p in not_matching if pattern.match(p)] == []


def test_the_listing_holds_only_results_inside_the_working_copy(
    client: TestClient, as_alice: dict[str, str], instance_id: int, copy: Path
) -> None:
    response = client.get(f"{API}/instances/{instance_id}/results", headers=as_alice)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["outputs"] == ["results/*.csv", "results/*.md", "results/**/*.png", "notes.txt"]
    assert [(f["path"], f["kind"], f["size"]) for f in body["files"]] == [
        ("notes.txt", "text", 11),
        ("results/alias.csv", "csv", len(CSV)),
        ("results/plots/p.png", "image", len(PNG)),
        ("results/report.md", "markdown", len(MARKDOWN)),
        ("results/trajectory.csv", "csv", len(CSV)),
    ]
    assert body["truncated"] is False


def test_a_result_file_is_served_with_a_sandbox(
    client: TestClient, as_alice: dict[str, str], instance_id: int, copy: Path
) -> None:
    response = client.get(
        f"{API}/instances/{instance_id}/results/file",
        params={"path": "results/trajectory.csv", "download": "true"},
        headers=as_alice,
    )

    assert response.status_code == 200, response.text
    assert response.text == CSV
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"] == (
        "attachment; filename*=utf-8''trajectory.csv"
    )
    assert response.headers["content-security-policy"].startswith("sandbox;")


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("../dt.yaml", 400, "parent references are not allowed"),
        ("results/../dt.yaml", 400, "parent references are not allowed"),
        ("/etc/passwd", 400, "relative to the working copy, e.g. 'results/data.csv'"),
        ("results/%2e%2e/dt.yaml", 400, "percent-encoded"),
        ("results/escape.csv", 404, "is not one of the results"),
        ("results/manifest.csv", 404, "is not one of the results"),
        ("results/pipe.csv", 404, "is not one of the results"),
        ("dt.yaml", 404, "results are the files matching results/*.csv, results/*.md"),
        ("results/ignored.log", 404, "is not one of the results"),
        ("results/missing.csv", 404, "is not one of the results"),
        ("results", 404, "is not one of the results"),
    ],
)
def test_paths_outside_the_results_are_refused(
    client: TestClient,
    as_alice: dict[str, str],
    instance_id: int,
    copy: Path,
    path: str,
    status: int,
    message: str,
) -> None:
    for endpoint in ("results/file", "results/preview"):
        response = client.get(
            f"{API}/instances/{instance_id}/{endpoint}", params={"path": path}, headers=as_alice
        )
        assert response.status_code == status, (endpoint, response.text)
        error = _error(response)
        assert message in str(error["msg"]), error
        assert error["loc"] == ["query", "path"]
        assert "hunter2" not in response.text


def test_another_users_results_are_not_found(
    client: TestClient, session: Session, settings: Settings, instance_id: int, copy: Path
) -> None:
    as_bob = bearer(session, settings, make_user(session, settings, username="bob"))
    for url in ("results", "results/file?path=results/trajectory.csv", "results.zip"):
        response = client.get(f"{API}/instances/{instance_id}/{url}", headers=as_bob)
        assert response.status_code == 404, url
        assert _error(response)["msg"] == f"There is no instance {instance_id}."


def test_a_csv_preview_has_its_first_rows_and_a_plot_against_its_first_column(
    client: TestClient, as_alice: dict[str, str], instance_id: int, copy: Path
) -> None:
    response = client.get(
        f"{API}/instances/{instance_id}/results/preview",
        params={"path": "results/trajectory.csv"},
        headers=as_alice,
    )

    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["columns"] == ["step", "t", "x", "v"]
    assert preview["rows"][:2] == [["1", "0.01", "-1", "2"], ["2", "0.02", "2", "4"]]
    assert (len(preview["rows"]), preview["more_rows"]) == (100, True)
    plot = preview["plot"]
    assert (plot["x_label"], plot["rows_read"], plot["complete"]) == ("step", 250, True)
    assert plot["x"] == [float(n) for n in range(1, 251)]
    assert plot["series"]["x"][:3] == [-1.0, 2.0, -3.0]
    assert set(plot["series"]) == {"t", "x", "v"}


def test_a_long_csv_is_plotted_thinned_keeping_each_columns_extremes(
    client: TestClient, as_alice: dict[str, str], instance_id: int, copy: Path
) -> None:
    rows = [f"{n},{(n % 7) / 7}" for n in range(20_000)]
    rows[12_345] = "12345,99"
    (copy / "results" / "long.csv").write_text("n,y\n" + "\n".join(rows) + "\n")

    response = client.get(
        f"{API}/instances/{instance_id}/results/preview",
        params={"path": "results/long.csv"},
        headers=as_alice,
    )

    plot = response.json()["plot"]
    assert len(plot["x"]) <= 1000
    assert max(plot["series"]["y"]) == 99.0
    assert plot["x"][plot["series"]["y"].index(99.0)] == 12_345.0


def test_markdown_is_rendered_without_its_html_or_script_links(
    client: TestClient, as_alice: dict[str, str], instance_id: int, copy: Path
) -> None:
    response = client.get(
        f"{API}/instances/{instance_id}/results/preview",
        params={"path": "results/report.md"},
        headers=as_alice,
    )

    html = response.json()["html"]
    assert "<h1>Report</h1>" in html
    assert "<table>" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "javascript:" not in html.replace("[bad](javascript:alert(1))", "")
    assert 'href="javascript' not in html
    assert f'src="/api/v1/instances/{instance_id}/results/file?path=results/plots/p.png"' in html


def test_a_text_preview_and_an_image_kind(
    client: TestClient, as_alice: dict[str, str], instance_id: int, copy: Path
) -> None:
    text = client.get(
        f"{API}/instances/{instance_id}/results/preview",
        params={"path": "notes.txt"},
        headers=as_alice,
    ).json()
    image = client.get(
        f"{API}/instances/{instance_id}/results/preview",
        params={"path": "results/plots/p.png"},
        headers=as_alice,
    ).json()

    assert (text["kind"], text["text"], text["truncated"]) == ("text", "first line\n", False)
    assert (image["kind"], image["media_type"], image["text"]) == ("image", "image/png", None)


def test_the_zip_holds_exactly_the_results(
    client: TestClient, as_alice: dict[str, str], instance_id: int, copy: Path
) -> None:
    response = client.get(f"{API}/instances/{instance_id}/results.zip", headers=as_alice)

    assert response.status_code == 200
    assert response.headers["content-disposition"] == (
        f'attachment; filename="instance-{instance_id}-results.zip"'
    )
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert sorted(archive.namelist()) == [
            "notes.txt",
            "results/alias.csv",
            "results/plots/p.png",
            "results/report.md",
            "results/trajectory.csv",
        ]
        assert archive.read("results/trajectory.csv").decode() == CSV
        assert archive.read("results/plots/p.png") == PNG


def test_a_dt_without_outputs_has_no_results_and_says_how_to_declare_them(
    client: TestClient, settings: Settings, as_alice: dict[str, str]
) -> None:
    write_twin_folder(
        settings.resolved_files_dir / "alice" / "digital_twins" / "bare",
        scripts={"execute": "#!/bin/sh\n"},
    )
    created = client.post(
        f"{API}/instances", json={"twin_path": "alice/digital_twins/bare"}, headers=as_alice
    ).json()["id"]

    listing = client.get(f"{API}/instances/{created}/results", headers=as_alice).json()
    archive = client.get(f"{API}/instances/{created}/results.zip", headers=as_alice)
    one = client.get(
        f"{API}/instances/{created}/results/file", params={"path": "x.csv"}, headers=as_alice
    )

    assert (listing["outputs"], listing["files"]) == ([], [])
    assert archive.status_code == 404
    assert _error(archive)["msg"] == f"Instance {created} has no result files to download."
    assert "declares no `outputs:`" in str(_error(one)["msg"])


def test_the_explore_page_lists_the_declared_charts_and_the_results(
    client: TestClient, as_alice: dict[str, str], instance_id: int, copy: Path
) -> None:
    response = client.get(f"/instances/{instance_id}/explore", headers=as_alice)

    assert response.status_code == 200, response.text
    page = response.text
    assert '<figure class="chart" data-field="x">' in page
    assert '<figure class="chart" data-field="v">' in page
    assert 'data-path="results/trajectory.csv"' in page
    assert 'data-path="results/escape.csv"' not in page
    assert f"dtaas/alice/{instance_id}/#" in page


def test_the_preview_fragment_escapes_what_the_dt_wrote(
    client: TestClient, as_alice: dict[str, str], instance_id: int, copy: Path
) -> None:
    (copy / "results" / "evil.csv").write_text('a,"<img src=x onerror=alert(1)>"\n1,2\n')

    markdown = client.get(
        f"/instances/{instance_id}/explore/preview",
        params={"path": "results/report.md"},
        headers={**as_alice, "HX-Request": "true"},
    )
    table = client.get(
        f"/instances/{instance_id}/explore/preview",
        params={"path": "results/evil.csv"},
        headers={**as_alice, "HX-Request": "true"},
    )

    assert markdown.status_code == table.status_code == 200
    assert "<script>" not in markdown.text
    assert "<img src=x" not in table.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in table.text


def test_the_explore_page_of_another_users_instance_is_not_found(
    client: TestClient, session: Session, settings: Settings, instance_id: int
) -> None:
    as_bob = bearer(session, settings, make_user(session, settings, username="bob"))

    response = client.get(
        f"/instances/{instance_id}/explore", headers={**as_bob, "Accept": "text/html"}
    )

    assert response.status_code == 404
    assert f"There is no instance {instance_id}." in response.text
