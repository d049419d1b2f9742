"""Airflow plugin: the "Recommendations" page (``/recsys``) and its entry in the Airflow UI's navigation.

Only the glue lives here; the page is ``recsys.ui.app``. What this file adds is Airflow's:

* authentication: plugin FastAPI apps are NOT protected by Airflow on their own, so every route requires
  the same user the REST API requires (``airflow.api_fastapi.core_api.security.get_user``: the JWT from
  ``Authorization: Bearer`` or the ``_token`` cookie the UI sets at login) and that the auth manager
  lets that user see the website (``is_authorized_view(WEBSITE)``), else 401/403; a browser that is not
  logged in is redirected to the auth manager's login page;
* the warehouse: the ``warehouse_default`` connection, as in the DAG's publish task (absent: the
  embedded DuckDB file under ``RECSYS_DATA_DIR``).

Airflow imports every plugin file in every component (scheduler, dag-processor, task processes), so the
api-server-only modules are imported inside the functions that run in the api-server.
"""

from __future__ import annotations

from fastapi import HTTPException, Request, status

from airflow.plugins_manager import AirflowPlugin
from recsys.ui.app import PageSources, create_app, sources_from_settings

URL_PREFIX = "/recsys"


async def require_airflow_user(request: Request):
    """The Airflow user of the request (what Airflow's own routes use), authorised to view the website."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    # get_user is a FastAPI dependency; called directly it needs the bearer credentials resolved first.
    user = await get_user(request=request, _oauth_token=None, bearer_credentials=await bearer_scheme(request))
    if not get_auth_manager().is_authorized_view(access_view=AccessView.WEBSITE, user=user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden: this user may not view the Airflow website")
    return user


def login_url(next_url: str) -> str:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager().get_url_login(next_url=next_url)


def page_sources() -> PageSources:
    from recsys.config import load_settings
    from recsys.orchestration import warehouse_uri_for

    return sources_from_settings(warehouse_uri_for(load_settings()))


class RecsysUIPlugin(AirflowPlugin):
    name = "recsys_ui"
    fastapi_apps = [
        {
            "app": create_app(page_sources, require_airflow_user, login_url),
            "url_prefix": URL_PREFIX,
            "name": "Recommendations",
        }
    ]
    # A nav entry showing the page in an iframe at /plugin/recommendations. The href is relative (no
    # leading slash) so it resolves against the UI's base URL, also behind a path-prefixing proxy.
    external_views = [
        {
            "name": "Recommendations",
            "href": URL_PREFIX.lstrip("/") + "/",
            "url_route": "recommendations",
            "destination": "nav",
            "nav_top_level": True,
        }
    ]
