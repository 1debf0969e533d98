"""The `dtaas` command line against a real server on a loopback port."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from dtaas.cli import app
from dtaas.client import Client, Credentials
from dtaas.errors import NotAuthenticated
from dtaas.security.models import Role
from tests.factories import PASSWORD
from tests.live import LiveServer, closed_port_url, kept_logging, run_live_server


def run(runner: CliRunner, *args: str, input: str | None = None) -> Result:
    """Invoke the CLI; tracebacks must never reach the user, whatever the outcome."""
    # Like a process of its own: logging set up by one command must not outlive it.
    with kept_logging():
        result = runner.invoke(app, list(args), input=input)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def assert_token_rejected(live: LiveServer, token: str, message: str) -> None:
    with Client(live.url, token=token) as client, pytest.raises(NotAuthenticated) as caught:
        client.whoami()
    assert caught.value.message == message


def token_id_named(live: LiveServer, token: str, name: str) -> int:
    with Client(live.url, token=token) as client:
        return next(t.id for t in client.list_tokens() if t.name == name)


# --- login ------------------------------------------------------------------------------


def test_login_stores_a_working_token_readable_by_the_owner_only(
    runner: CliRunner, live: LiveServer, credentials_file: Path
) -> None:
    result = run(
        runner, "login", "--server", live.url, "--username", "alice", "--password", PASSWORD
    )

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"Signed in to {live.url} as alice; token stored in {credentials_file}.\n"
    )
    assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(credentials_file.parent.stat().st_mode) == 0o700
    stored = Credentials.load()
    assert (stored.server, stored.username) == (live.url, "alice")
    with Client(live.url, token=stored.token) as client:
        assert client.whoami().user.username == "alice"
    assert stored.token_id == token_id_named(live, stored.token, "cli")


def test_login_prompts_for_missing_values_without_echoing_the_password(
    runner: CliRunner, live: LiveServer, credentials_file: Path
) -> None:
    result = run(runner, "login", input=f"{live.url}\nalice\n{PASSWORD}\n")

    assert result.exit_code == 0, result.output
    assert "Server URL [http://127.0.0.1:8000]:" in result.stdout
    assert "Username:" in result.stdout
    assert "Password:" in result.stdout
    assert PASSWORD not in result.output
    assert Credentials.load().username == "alice"


def test_login_takes_the_server_from_dtaas_server(
    runner: CliRunner, live: LiveServer, credentials_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DTAAS_SERVER", live.url)

    result = run(runner, "login", "--username", "alice", input=f"{PASSWORD}\n")

    assert result.exit_code == 0, result.output
    assert "Server URL" not in result.stdout
    assert Credentials.load().server == live.url


def test_login_with_a_wrong_password_fails_cleanly_and_writes_nothing(
    runner: CliRunner, live: LiveServer, credentials_file: Path
) -> None:
    result = run(
        runner, "login", "--server", live.url, "--username", "alice", "--password", "wrong-pass"
    )

    assert result.exit_code == 1
    assert result.stderr == "error: Wrong username or password.\n"
    assert result.stdout == ""
    assert not credentials_file.exists()


def test_login_that_cannot_write_the_file_says_so_and_revokes_the_token(
    runner: CliRunner, live: LiveServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "credentials"  # its folder is a file: no one can write there
    monkeypatch.setenv("DTAAS_CREDENTIALS", str(target))

    result = run(
        runner, "login", "--server", live.url, "--username", "alice", "--password", PASSWORD
    )

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: Cannot write the credentials file {target} (")
    assert result.stderr.endswith("; set DTAAS_CREDENTIALS to a file you may write.\n")
    with Client(live.url, token=live.token_for("alice")) as client:
        cli_tokens = [token for token in client.list_tokens() if token.name == "cli"]
    assert len(cli_tokens) == 1
    assert cli_tokens[0].revoked_at is not None


def test_login_to_a_url_without_scheme_says_how_to_write_it(
    runner: CliRunner, credentials_file: Path
) -> None:
    result = run(
        runner, "login", "--server", "127.0.0.1:8000", "--username", "a", "--password", "b"
    )

    assert result.exit_code == 1
    assert result.stderr == (
        "error: The server URL '127.0.0.1:8000' must start with http:// or https://, "
        "e.g. http://127.0.0.1:8000.\n"
    )


# --- whoami and the credentials file ------------------------------------------------------


def test_whoami_shows_user_role_and_organisation(runner: CliRunner, live: LiveServer) -> None:
    live.store_credentials("alice")

    result = run(runner, "whoami")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"alice (user) in Demo organisation at {live.url}\n"


def test_whoami_without_credentials_says_to_log_in(
    runner: CliRunner, credentials_file: Path
) -> None:
    result = run(runner, "whoami")

    assert result.exit_code == 1
    assert result.stderr == "error: You are not signed in; run `dtaas login` first.\n"


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"server": "http://127.0.0.1:1"}',
        b'{"server": 1, "username": "alice", "token": "dtaas_x"}',
        b'{"server": "http://127.0.0.1:1", "username": "a", "token": "t", "token_id": "7"}',
    ],
    ids=["not-json", "not-utf8", "list", "missing-token", "number-url", "text-id"],
)
def test_damaged_credentials_file_says_to_log_in_again(
    runner: CliRunner, credentials_file: Path, content: bytes
) -> None:
    credentials_file.parent.mkdir(mode=0o700)
    credentials_file.write_bytes(content)

    result = run(runner, "whoami")

    assert result.exit_code == 1
    assert result.stderr == (
        f"error: The credentials file {credentials_file} is damaged; run `dtaas login` again.\n"
    )


def test_unreachable_server_is_reported_without_traceback(
    runner: CliRunner, credentials_file: Path
) -> None:
    with closed_port_url() as url:
        Credentials(server=url, username="alice", token="dtaas_unused").save()
        result = run(runner, "whoami")

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: Cannot reach the dtaas server at {url}: ")
    assert result.stderr.endswith("Is it running?\n")


def test_login_to_an_unreachable_server_writes_nothing(
    runner: CliRunner, credentials_file: Path
) -> None:
    with closed_port_url() as url:
        result = run(runner, "login", "--server", url, "--username", "a", "--password", "b")

    assert result.exit_code == 1
    assert result.stderr.startswith(f"error: Cannot reach the dtaas server at {url}: ")
    assert not credentials_file.exists()


def test_ctrl_c_during_a_command_exits_130_quietly(
    runner: CliRunner, live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    live.store_credentials("alice")

    def interrupted(self: Client) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Client, "whoami", interrupted)

    result = run(runner, "whoami")

    assert result.exit_code == 130
    assert result.output == ""


# --- tokens -----------------------------------------------------------------------------


def test_token_create_prints_only_the_token_on_stdout_and_it_works(
    runner: CliRunner, live: LiveServer
) -> None:
    live.store_credentials("alice")

    result = run(runner, "token", "create", "ci")

    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token.startswith("dtaas_")
    assert result.stdout == f"{token}\n"
    assert "'ci' expires" in result.stderr
    assert "shown only once" in result.stderr
    assert token not in result.stderr
    with Client(live.url, token=token) as client:
        assert client.whoami().user.username == "alice"


def test_token_ls_lists_tokens_but_never_their_secret(runner: CliRunner, live: LiveServer) -> None:
    live.store_credentials("alice")
    token = run(runner, "token", "create", "ci").stdout.strip()

    result = run(runner, "token", "ls")

    assert result.exit_code == 0, result.output
    assert " ci " in result.stdout
    assert token[:12] in result.stdout  # the prefix identifies it
    assert token not in result.output


def test_token_revoke_makes_the_token_fail_with_401(runner: CliRunner, live: LiveServer) -> None:
    stored = live.store_credentials("alice")
    token = run(runner, "token", "create", "ci").stdout.strip()
    token_id = token_id_named(live, stored.token, "ci")

    result = run(runner, "token", "revoke", str(token_id))

    assert result.exit_code == 0, result.output
    assert result.stdout == f"Token {token_id} (ci) revoked.\n"
    assert_token_rejected(live, token, "The API token was revoked; create a new one.")


def test_token_revoke_of_an_unknown_id_is_not_found(runner: CliRunner, live: LiveServer) -> None:
    live.store_credentials("alice")

    result = run(runner, "token", "revoke", "999999")

    assert result.exit_code == 1
    assert result.stderr == "error: There is no token with id 999999.\n"


def _curl(url: str, token: str, body: Path) -> str:
    completed = subprocess.run(
        [
            "curl",
            "--silent",
            "--noproxy",
            "*",
            "--max-time",
            "20",
            "-o",
            str(body),
            "-w",
            "%{http_code}",
            "-H",
            f"Authorization: Bearer {token}",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return completed.stdout


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl binary")
def test_token_created_used_with_curl_then_revoked_is_401(
    runner: CliRunner, live: LiveServer, tmp_path: Path
) -> None:
    stored = live.store_credentials("alice")
    token = run(runner, "token", "create", "curl").stdout.strip()
    me_url = f"{live.url}/api/v1/me"
    body = tmp_path / "body.json"

    assert _curl(me_url, token, body) == "200"
    assert json.loads(body.read_text())["user"]["username"] == "alice"

    revoked = run(runner, "token", "revoke", str(token_id_named(live, stored.token, "curl")))
    assert revoked.exit_code == 0, revoked.output

    assert _curl(me_url, token, body) == "401"
    assert body.read_text().startswith('{"detail":[{"type":"not_authenticated",')
    assert json.loads(body.read_text()) == {
        "detail": [
            {
                "type": "not_authenticated",
                "msg": "The API token was revoked; create a new one.",
                "loc": [],
            }
        ]
    }


# --- users ------------------------------------------------------------------------------


def test_admin_adds_lists_disables_and_enables_a_user(runner: CliRunner, live: LiveServer) -> None:
    live.store_credentials("root")

    added = run(runner, "user", "add", "bob", "--role", "viewer", "--password", PASSWORD)
    assert added.exit_code == 0, added.output
    assert added.stdout == "User bob created with role viewer.\n"

    listed = run(runner, "user", "ls")
    assert listed.exit_code == 0, listed.output
    bob_row = next(line for line in listed.stdout.splitlines() if " bob " in line)
    assert "viewer" in bob_row
    assert "active" in bob_row

    bob_token = live.token_for("bob")
    with Client(live.url, token=bob_token) as bob:
        assert bob.whoami().user.role is Role.VIEWER

    disabled = run(runner, "user", "disable", "bob")
    assert disabled.exit_code == 0, disabled.output
    assert disabled.stdout == "User bob disabled; their sessions and tokens stopped working.\n"
    assert_token_rejected(live, bob_token, "The API token was revoked; create a new one.")
    with pytest.raises(NotAuthenticated) as refused:
        Client.sign_in(live.url, username="bob", password=PASSWORD)
    assert refused.value.message == "This account is disabled; ask an administrator to enable it."

    enabled = run(runner, "user", "enable", "bob")
    assert enabled.exit_code == 0, enabled.output
    assert enabled.stdout == "User bob enabled.\n"
    with Client.sign_in(live.url, username="bob", password=PASSWORD) as bob:
        assert bob.whoami().user.is_active


def test_user_add_prompts_for_the_password_twice(runner: CliRunner, live: LiveServer) -> None:
    live.store_credentials("root")

    result = run(runner, "user", "add", "carol", input=f"{PASSWORD}\n{PASSWORD}\n")

    assert result.exit_code == 0, result.output
    assert "Repeat for confirmation:" in result.stdout
    assert PASSWORD not in result.output
    with Client.sign_in(live.url, username="carol", password=PASSWORD) as carol:
        assert carol.whoami().user.role is Role.USER


def test_user_ls_by_a_non_admin_is_denied(runner: CliRunner, live: LiveServer) -> None:
    live.store_credentials("alice")

    result = run(runner, "user", "ls")

    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr == (
        "error: Your role 'user' does not allow 'manage_users'; "
        "ask an administrator for a role that does.\n"
    )


def test_server_messages_with_brackets_are_printed_verbatim(
    runner: CliRunner, live: LiveServer
) -> None:
    live.store_credentials("root")

    result = run(runner, "user", "add", "Bad[x]", "--password", PASSWORD)

    assert result.exit_code == 1
    assert result.stderr == (
        "error: username: String should match pattern '^[a-z][a-z0-9_-]{1,31}$'\n"
    )
    # A closing tag that opens nothing once crashed rich's markup parser.
    created = run(runner, "token", "create", "[/oops]")
    assert created.exit_code == 0, created.output
    assert created.stderr.startswith("Token '[/oops]' expires ")


# --- logout -----------------------------------------------------------------------------


def test_logout_revokes_the_token_and_deletes_the_file(
    runner: CliRunner, live: LiveServer, credentials_file: Path
) -> None:
    run(runner, "login", "--server", live.url, "--username", "alice", "--password", PASSWORD)
    token = Credentials.load().token

    result = run(runner, "logout")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"Signed out of {live.url}; the token was revoked.\n"
    assert not credentials_file.exists()
    assert_token_rejected(live, token, "The API token was revoked; create a new one.")


def test_logout_finds_the_token_of_a_file_without_token_id(
    runner: CliRunner, live: LiveServer, credentials_file: Path
) -> None:
    token = live.token_for("alice")
    keep = live.token_for("alice")
    Credentials(server=live.url, username="alice", token=token).save()

    result = run(runner, "logout")

    assert result.exit_code == 0, result.output
    assert not credentials_file.exists()
    assert_token_rejected(live, token, "The API token was revoked; create a new one.")
    with Client(live.url, token=keep) as client:  # only the stored token was revoked
        assert client.whoami().user.username == "alice"


def test_logout_with_a_dead_token_still_forgets_it(
    runner: CliRunner, live: LiveServer, credentials_file: Path
) -> None:
    stored = live.store_credentials("alice")
    with Client(live.url, token=stored.token) as client:
        assert stored.token_id is not None
        client.revoke_token(token_id=stored.token_id)

    result = run(runner, "logout")

    assert result.exit_code == 0, result.output
    assert result.stdout == f"Signed out of {live.url}; the token had already stopped working.\n"
    assert not credentials_file.exists()


# --- database ---------------------------------------------------------------------------


@pytest.fixture
def site_dir(tmp_path: Path, credentials_file: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A new, empty data directory named by DTAAS_DATA_DIR, and no dtaas.toml around."""
    monkeypatch.chdir(tmp_path)
    site = tmp_path / "new-site"
    monkeypatch.setenv("DTAAS_DATA_DIR", str(site))
    return site


def test_db_upgrade_then_create_admin_gives_a_working_admin(
    runner: CliRunner, site_dir: Path
) -> None:
    upgraded = run(runner, "db", "upgrade")
    assert upgraded.exit_code == 0, upgraded.output
    assert upgraded.stdout == "The database is up to date.\n"

    created = run(runner, "db", "create-admin", "boss", "--password", PASSWORD)
    assert created.exit_code == 0, created.output
    assert created.stdout == "Administrator boss created; sign in with `dtaas login`.\n"

    with (
        run_live_server(site_dir) as live,
        Client.sign_in(live.url, username="boss", password=PASSWORD) as boss,
    ):
        me = boss.whoami()
    assert (me.user.username, me.user.role) == ("boss", Role.ADMIN)


def test_db_create_admin_prompts_for_the_password_twice(runner: CliRunner, site_dir: Path) -> None:
    result = run(runner, "db", "create-admin", "boss", input=f"{PASSWORD}\n{PASSWORD}\n")

    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output


def test_db_create_admin_with_a_short_password_fails_with_the_rule(
    runner: CliRunner, site_dir: Path
) -> None:
    result = run(runner, "db", "create-admin", "boss", "--password", "short")

    assert result.exit_code == 1
    assert result.stderr == "error: The password is too short: use at least 10 characters.\n"


def test_db_create_admin_twice_is_a_conflict(runner: CliRunner, site_dir: Path) -> None:
    run(runner, "db", "create-admin", "boss", "--password", PASSWORD)

    result = run(runner, "db", "create-admin", "boss", "--password", PASSWORD)

    assert result.exit_code == 1
    assert result.stderr == "error: A user named 'boss' already exists.\n"
