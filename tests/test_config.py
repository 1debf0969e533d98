"""Settings: environment over TOML file over defaults, and clear refusals."""

from __future__ import annotations

import stat

import pytest
from pydantic import ValidationError

from dtaas.config import Settings


def test_defaults_are_a_laptop_install(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DTAAS_CONFIG_FILE", raising=False)
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / '.dtaas-data' / 'dtaas.db'}"
    assert settings.resolved_files_dir == tmp_path / ".dtaas-data" / "files"


def test_environment_overrides_the_toml_file(monkeypatch, tmp_path):
    config = tmp_path / "site.toml"
    config.write_text('port = 9100\norganisation = "Aarhus DT Lab"\n')
    monkeypatch.setenv("DTAAS_CONFIG_FILE", str(config))
    monkeypatch.setenv("DTAAS_PORT", "9200")
    settings = Settings()
    assert settings.port == 9200
    assert settings.organisation == "Aarhus DT Lab"


def test_dtaas_toml_in_the_working_directory_is_read(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DTAAS_CONFIG_FILE", raising=False)
    (tmp_path / "dtaas.toml").write_text("demo = false\n")
    assert Settings().demo is False


def test_unknown_setting_in_the_file_is_refused(monkeypatch, tmp_path):
    config = tmp_path / "site.toml"
    config.write_text("prot = 9100\n")
    monkeypatch.setenv("DTAAS_CONFIG_FILE", str(config))
    with pytest.raises(ValidationError, match="prot"):
        Settings()


def test_postgres_url_is_given_the_psycopg_driver():
    settings = Settings(database_url="postgresql://u@127.0.0.1/db")
    assert settings.resolved_database_url == "postgresql+psycopg://u@127.0.0.1/db"


def test_unsupported_database_is_refused_with_a_sentence():
    with pytest.raises(ValidationError, match="database_url must be sqlite"):
        Settings(database_url="mysql://u@127.0.0.1/db")


def test_host_must_be_an_address():
    with pytest.raises(ValidationError, match="not an IP address"):
        Settings(host="example.org")


def test_signing_key_is_generated_once_with_mode_0600(tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    first = settings.signing_key()
    assert len(first) >= 48
    assert settings.signing_key() == first
    mode = stat.S_IMODE((tmp_path / "data" / "secret_key").stat().st_mode)
    assert mode == 0o600
