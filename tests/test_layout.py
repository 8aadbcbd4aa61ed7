"""The installed distribution exposes the four packages and registers the provider with Airflow."""

from __future__ import annotations

from importlib.metadata import entry_points


def test_packages_import_from_the_repo_layout() -> None:
    import connectif_provider
    import connectif_sync
    import emulator
    import sample_erp

    assert connectif_provider.__file__.endswith("plugins/connectif_provider/__init__.py")
    assert connectif_sync.__file__.endswith("include/connectif_sync/__init__.py")
    assert emulator.__file__.endswith("emulator/__init__.py")
    assert sample_erp.__file__.endswith("sample_erp/__init__.py")
    assert not hasattr(connectif_sync, "generate_sample_erp"), "the generator is not part of the sync library"


def test_provider_entry_point_declares_connectif_connection_type() -> None:
    eps = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("connectif_provider")]
    assert len(eps) == 1
    info = eps[0].load()()
    types = {c["connection-type"]: c["hook-class-name"] for c in info["connection-types"]}
    assert types == {"connectif": "connectif_provider.hooks.connectif.ConnectifHook"}
