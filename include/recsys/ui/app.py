"""The FastAPI app of the Recommendations page: one HTML page and two JSON endpoints, all behind one dependency.

The app knows nothing about Airflow: ``plugins/recsys_ui.py`` passes in the dependency that requires an
Airflow user (so every route, present and future, is authenticated: it is set on the app, not per route),
the login URL to send a browser to, and where the data is (the ``warehouse_default`` connection). The
interactive docs (``/docs``, ``/openapi.json``) are switched off because app-level dependencies do not
cover them.

Routes (under the plugin's prefix, ``/recsys``):

* ``GET /``: the page; ``?user_id=N`` adds the lookup of that user.
* ``GET /api/runs``: every published day's counts and metrics (JSON).
* ``GET /api/users/{user_id}``: a user's recent events and latest recommendations (JSON).

Handlers are plain ``def`` so FastAPI runs the blocking DuckDB/PostgreSQL reads in its thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from recsys.ui import data, render
from recsys.warehouse.schema import DEFAULT_SCHEMA


@dataclass(frozen=True)
class PageSources:
    """Where the page reads from: the warehouse URI, the clean events folder and the catalog file."""

    warehouse_uri: str
    clean_events_dir: Path
    catalog_path: Path
    schema: str = DEFAULT_SCHEMA

    @property
    def description(self) -> str:
        return data.describe_uri(self.warehouse_uri)


def sources_from_settings(warehouse_uri: str | None = None) -> PageSources:
    """Sources from ``recsys.config`` (RECSYS_DATA_DIR); the embedded DuckDB file unless a URI is given."""
    from recsys.config import load_settings
    from recsys.warehouse.uri import warehouse_uri as default_uri

    settings = load_settings()
    return PageSources(
        warehouse_uri=warehouse_uri or default_uri(settings.warehouse_path),
        clean_events_dir=settings.clean_events_dir,
        catalog_path=settings.catalog_path,
    )


def create_app(
    sources: Callable[[], PageSources],
    require_user: Callable[..., Any],
    login_url: Callable[[str], str] | None = None,
) -> FastAPI:
    """Build the app.

    Args:
        sources: called per request (a changed connection applies without a restart); a ValueError from
            it (e.g. a warehouse_default of the wrong type) is shown on the page as the reason.
        require_user: a FastAPI dependency that raises HTTPException 401/403 unless the request carries a
            valid user; applied to every route.
        login_url: given the URL asked for, where to send a browser that is not logged in (an HTML
            request answered 401 is redirected there); None answers 401 to browsers too.
    """
    app = FastAPI(
        title="recsys recommendations page",
        dependencies=[Depends(require_user)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(HTTPException)
    async def _login_redirect(request: Request, exc: HTTPException):
        wants_html = "text/html" in request.headers.get("accept", "")
        if exc.status_code == 401 and wants_html and login_url is not None:
            return RedirectResponse(login_url(str(request.url)), status_code=303)
        return await http_exception_handler(request, exc)

    def resolve_sources() -> PageSources:
        try:
            return sources()
        except ValueError as exc:
            raise data.WarehouseUnavailable(f"the warehouse is not configured correctly: {exc}") from exc

    @app.get("/", response_class=HTMLResponse)
    def recommendations_page(user_id: str | None = None) -> HTMLResponse:
        status = 200
        runs = warehouse_error = user_view = user_error = None
        description = "?"
        try:
            found = resolve_sources()
            description = found.description
            runs = data.read_runs(found.warehouse_uri, found.schema)
        except data.WarehouseUnavailable as exc:
            warehouse_error = str(exc)
        if user_id is not None and warehouse_error is None:
            try:
                user_view = data.read_user(
                    found.warehouse_uri, found.clean_events_dir, found.catalog_path, data.parse_user_id(user_id), found.schema
                )
            except data.InvalidUserId as exc:
                user_error, status = str(exc), 422
            except data.WarehouseUnavailable as exc:
                user_error = str(exc)
        html = render.page(
            runs=runs,
            source=description,
            warehouse_error=warehouse_error,
            user_id_text=user_id or "",
            user_view=user_view,
            user_error=user_error,
        )
        return HTMLResponse(html, status_code=status)

    @app.get("/api/runs")
    def runs_json() -> JSONResponse:
        try:
            found = resolve_sources()
            runs = data.read_runs(found.warehouse_uri, found.schema)
        except data.WarehouseUnavailable as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503)
        return JSONResponse({"warehouse": found.description, "runs": [run.as_dict() for run in runs]})

    @app.get("/api/users/{user_id}")
    def user_json(user_id: str) -> JSONResponse:
        try:
            parsed = data.parse_user_id(user_id)
        except data.InvalidUserId as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        try:
            found = resolve_sources()
            view = data.read_user(found.warehouse_uri, found.clean_events_dir, found.catalog_path, parsed, found.schema)
        except data.WarehouseUnavailable as exc:
            return JSONResponse({"detail": str(exc)}, status_code=503)
        return JSONResponse(view.as_dict())

    return app
