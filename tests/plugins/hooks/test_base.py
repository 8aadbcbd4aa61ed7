"""The connection as Airflow sees it: the ``connectif`` type and its form registered, env-var JSON and URI
forms of a connection read into ``ConnectifSettings`` (``hooks/base.py``)."""

from __future__ import annotations

import warnings

import pytest


def test_connection_type_and_form_are_registered() -> None:
    from airflow.providers_manager import ProvidersManager

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        manager = ProvidersManager()
        hook_info = manager.hooks["connectif"]
    assert hook_info is not None
    assert hook_info.hook_class_name == "connectif_provider.hooks.connectif.ConnectifHook"
    assert hook_info.connection_id_attribute_name == "connectif_conn_id"
    behaviour = manager.field_behaviours["connectif"]
    assert behaviour["relabeling"]["password"] == "API key"
    assert behaviour["placeholders"]["host"] == "https://api.connectif.cloud"
    widgets = manager.connection_form_widgets
    assert "extra__connectif__rate_limit_per_minute" in widgets
    assert "extra__connectif__rate_limit_backend" in widgets


def test_env_var_connection_with_prefixed_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    from connectif_provider.hooks.connectif import ConnectifHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_CONNECTIF_DEFAULT",
        '{"conn_type": "connectif", "host": "https://api.connectif.cloud", "password": "id:secret",'
        ' "extra": {"extra__connectif__rate_limit_per_minute": 42}}',
    )
    settings = ConnectifHook().get_settings()
    assert settings.base_url == "https://api.connectif.cloud"
    assert settings.rate_limit_per_minute == 42


def test_uri_form_of_the_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    from connectif_provider.hooks.connectif import ConnectifHook

    monkeypatch.setenv(
        "AIRFLOW_CONN_CX_URI", "connectif://:keyid%3Asecret@api.connectif.cloud/?rate_limit_per_minute=80"
    )
    monkeypatch.setenv("AIRFLOW_CONN_CX_EMU", "connectif://:k%3As@127.0.0.1:8765/?scheme=http")
    cloud, emu = ConnectifHook("cx_uri").get_settings(), ConnectifHook("cx_emu").get_settings()
    assert (cloud.base_url, cloud.api_key) == ("https://api.connectif.cloud", "keyid:secret")
    assert cloud.rate_limit_per_minute == 80
    assert (emu.base_url, emu.api_key) == ("http://127.0.0.1:8765", "k:s")
