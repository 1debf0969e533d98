"""DTs as services: the platform proxies /services/<instance>/ to the running phase's port."""

from __future__ import annotations

import json

import httpx
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from tests.lifecycle.conftest import bound_sessions, write_twin
from tests.lifecycle.test_routes import error_of, finish, new_instance, queue_phase, read_job

SERVE = """#!/bin/sh
exec python3 lifecycle/echo.py
"""
ECHO = """
import json, os
from http.server import BaseHTTPRequestHandler, HTTPServer

class Echo(BaseHTTPRequestHandler):
    def answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = json.dumps({
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": self.rfile.read(length).decode(),
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Set-Cookie", "dtaas_session=stolen; Path=/")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass

print("serving", flush=True)
HTTPServer(("127.0.0.1", int(os.environ["DTAAS_HTTP_PORT"])), Echo).serve_forever()
"""
MANIFEST = "manifest: 1\nname: echo\nserve: {phase: execute}\n"


def test_a_service_dt_is_reached_through_the_platform_and_only_by_its_owner(
    client: TestClient, session: Session, driver, settings, as_alice, as_bob
):
    client.app.state.sessionmaker = bound_sessions(session)  # type: ignore[attr-defined]
    twin = write_twin(
        settings,
        "alice/digital_twins/echo",
        {"execute": SERVE},
        {"dt.yaml": MANIFEST, "lifecycle/echo.py": ECHO},
    )
    instance_id = new_instance(client, as_alice, twin)
    url = f"/services/{instance_id}/reading?unit=K"
    before = client.get(url, headers=as_alice)
    job_id = queue_phase(client, as_alice, instance_id, "execute")
    driver.run_until(lambda: read_job(client, as_alice, job_id)["state"] == "running")

    def answered() -> httpx.Response | None:
        response = client.post(url, content=b"21.5", headers={**as_alice, "Cookie": "a=b"})
        return response if response.status_code == 200 else None

    response = driver.run_until(answered, message="the service answering")
    page = client.get(f"/instances/{instance_id}", headers=as_alice).text
    others = client.get(url, headers=as_bob)
    client.post(f"/api/v1/jobs/{job_id}/cancel", headers=as_alice)
    finish(driver, client, as_alice, job_id)
    after = client.get(url, headers=as_alice)

    echoed = json.loads(response.content)
    assert (echoed["method"], echoed["path"], echoed["body"]) == ("POST", "/reading?unit=K", "21.5")
    assert "authorization" not in echoed["headers"] and "cookie" not in echoed["headers"]
    assert echoed["headers"]["x-forwarded-prefix"] == f"/services/{instance_id}"
    assert "set-cookie" not in response.headers
    assert read_job(client, as_alice, job_id)["provenance"]["http_port"] > 0
    assert others.status_code == 404
    assert f'href="/services/{instance_id}/"' in page
    assert "Open the service" not in client.get(f"/instances/{instance_id}", headers=as_alice).text
    for refused in (before, after):
        assert refused.status_code == 503
        assert error_of(refused)["msg"] == (
            f"Instance {instance_id} is not serving: the phase that answers HTTP is not "
            "running; start it on the instance's page."
        )
