"""The Flask app factory: workspace state, security checks, and one blueprint per area."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import ConfigError
from ..params.validate import ConfigProblems
from . import security
from .configs import import_demo_configs
from .demo_setup import DemoBuilder, demo_dir
from .store import DB_NAME, NameTaken, NotFound, Store, StoreError
from .views_util import problem_list

EXTENSION = "qwen_image_studio"
MAX_REQUEST_BYTES = 2 * 1024 * 1024


@dataclass
class Studio:
    """What the views share: the workspace, its store, the demo builder and startup notices."""

    workspace: Path
    store: Store
    demo: DemoBuilder
    token: str | None = None
    notices: list[str] = field(default_factory=list)

    @property
    def scratch(self) -> Path:
        """A folder inside the workspace for short-lived files."""
        return self.workspace / ".tmp"

    def import_demo(self) -> None:
        """Save the demo's configurations (once) and keep any problems as notices."""
        self.notices.extend(import_demo_configs(self.store, demo_dir(self.workspace)))


def studio_of(app: Flask) -> Studio:
    """The Studio of an app."""
    return app.extensions[EXTENSION]


def studio() -> Studio:
    """The Studio of the current app."""
    return studio_of(current_app)  # type: ignore[arg-type]


def _error(status: int, code: str, message: str, **extra: object) -> Response:
    response = jsonify(error=message, code=code, **extra)
    response.status_code = status
    return response


def _register_errors(app: Flask) -> None:
    """Turn user errors into JSON answers the page can show next to what they concern."""

    @app.errorhandler(ConfigProblems)
    def _problems(exc: ConfigProblems) -> Response:
        return _error(400, "invalid", str(exc), problems=problem_list(exc.problems))

    @app.errorhandler(ConfigError)
    def _config_error(exc: ConfigError) -> Response:
        return _error(400, "bad_config", str(exc))

    @app.errorhandler(StoreError)
    def _store_error(exc: StoreError) -> Response:
        status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, NameTaken) else 400
        return _error(status, exc.code, str(exc))

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response | HTTPException:
        if not request.path.startswith("/api/"):
            return exc
        name = (exc.name or "error").lower().replace(" ", "_")
        return _error(exc.code or 500, name, exc.description or name)


def create_app(workspace: Path, token: str | None = None) -> Flask:
    """A web UI app over `workspace` (created if missing); with a token, every request must carry it."""
    workspace = Path(workspace).expanduser().resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    store = Store(workspace / DB_NAME)
    state = Studio(workspace, store, DemoBuilder(workspace, on_ready=lambda: state.import_demo()), token)
    state.import_demo()
    app.extensions[EXTENSION] = state
    security.install(app, token)
    _register_errors(app)

    from .api_app import bp as api_app
    from .api_config import bp as api_config
    from .api_schema import bp as api_schema
    from .pages import bp as pages

    for blueprint in (pages, api_app, api_schema, api_config):
        app.register_blueprint(blueprint)
    return app
