"""The plugins folder imports cleanly in Airflow and registers the Recommendations page and its nav entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_recsys_ui_plugin_loads_with_its_app_and_nav_entry(tmp_path):
    # A separate process: Airflow reads the plugins folder from its config once, at import.
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "airflow"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
    probe = (
        "import json; from airflow import plugins_manager as pm; "
        "print(json.dumps({'errors': pm.get_import_errors(), 'plugins': pm.get_plugin_info()}, default=str))"
    )
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=180, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["errors"] == {}, f"plugin import errors: {report['errors']}"
    plugins = {plugin["name"]: plugin for plugin in report["plugins"]}
    assert "recsys_ui" in plugins, f"recsys_ui not loaded from {REPO_ROOT / 'plugins'}; loaded: {sorted(plugins)}"
    ui = plugins["recsys_ui"]

    from airflow.api_fastapi.app import RESERVED_URL_PREFIXES

    [app] = ui["fastapi_apps"]
    assert app["url_prefix"] == "/recsys"
    assert not any(app["url_prefix"].startswith(prefix) for prefix in RESERVED_URL_PREFIXES)
    [view] = ui["external_views"]
    assert view["name"] == "Recommendations" and view["url_route"] == "recommendations"
    assert view["href"] == "recsys/"  # relative: resolved against the UI's base URL
