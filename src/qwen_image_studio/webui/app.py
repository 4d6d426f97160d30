"""The Flask app factory: workspace state, security checks, and one blueprint per area."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import ConfigError
from ..params.validate import ConfigProblems, Message
from . import security
from .config_mirror import CONFIGS_DIR, ConfigMirror
from .configs import import_demo_configs
from .db_check import repair_database
from .demo_setup import DemoBuilder, demo_dir
from .i18n import TABLE, request_language
from .jobs.commands import NotReady, stage_command
from .jobs.generation_worker import GenerationWorker
from .jobs.hub import Hub
from .jobs.snapshot import JobSnapshots
from .jobs.store import JobStore
from .jobs.supervisor import STALL_AFTER_S, Supervisor, job_paths
from .paths import resolve_in
from .store import DB_NAME, NameTaken, NotFound, Store, StoreError
from .tensorboard import DEFAULT_PORT, TensorBoard
from .views_util import problem_list, texts
from .write_check import WriteRoots

EXTENSION = "qwen_image_studio"
MAX_REQUEST_BYTES = 2 * 1024 * 1024
TENSORBOARD_LOGDIR = "tensorboard_logdir"  # settings key: the folder TensorBoard was last pointed at


@dataclass
class Studio:
    """What the views share: the workspace, its stores, the job supervisor, TensorBoard and notices."""

    workspace: Path
    store: Store
    demo: DemoBuilder
    jobs: JobStore
    hub: Hub
    supervisor: Supervisor
    tensorboard: TensorBoard
    token: str | None = None
    notices: list[Message] = field(default_factory=list)
    mirror: ConfigMirror | None = None
    allowed_dirs: tuple[Path, ...] = ()

    @property
    def roots(self) -> WriteRoots:
        """Where this UI may write: its workspace and the folders allowed with --allow_dir."""
        return WriteRoots(self.workspace, self.allowed_dirs)

    def config_file(self, name: str) -> str | None:
        """Where a saved configuration is mirrored, relative to the workspace (None when not mirrored)."""
        if self.mirror is None:
            return None
        path = self.mirror.path_for(name)
        return path.relative_to(self.workspace).as_posix()

    @property
    def scratch(self) -> Path:
        """A folder inside the workspace for short-lived files."""
        return self.workspace / ".tmp"

    def import_demo(self) -> None:
        """Save the demo's configurations (once) and keep any problems as notices."""
        self.notices.extend(import_demo_configs(self.store, demo_dir(self.workspace)))

    def tensorboard_logdir(self) -> Path:
        """The folder TensorBoard shows: the one last chosen, else WORKSPACE/logs."""
        saved = self.store.get_setting(TENSORBOARD_LOGDIR)
        return resolve_in(self.workspace, saved) if saved else self.workspace / "logs"

    def point_tensorboard(self, logdir: Path) -> bool:
        """Show another logging folder in TensorBoard (remembered); False when it shows it already."""
        self.store.set_setting(TENSORBOARD_LOGDIR, str(logdir))
        return self.tensorboard.set_logdir(logdir)

    def close(self) -> None:
        """Stop the background threads and TensorBoard; running stages go on (a restart re-attaches)."""
        self.supervisor.close()
        if self.supervisor.worker is not None:
            self.supervisor.worker.close()  # it exits after the request it runs
        self.hub.close()
        self.tensorboard.stop()


def studio_of(app: Flask) -> Studio:
    """The Studio of an app."""
    return app.extensions[EXTENSION]


def studio() -> Studio:
    """The Studio of the current app."""
    return studio_of(current_app)  # type: ignore[arg-type]


def _error(status: int, code: str, message: str, msg: Message | None = None, **extra: object) -> Response:
    """A JSON error: `error` in the request's language (`error_i18n` when structured), `code` for the page."""
    response = jsonify(**texts(message, msg, "error"), code=code, **extra)
    response.status_code = status
    return response


# HTTP errors that other languages word with the page's err.<name> entry (werkzeug's text is English).
_WORDED_HTTP = frozenset({"request_entity_too_large"})


def _register_errors(app: Flask) -> None:
    """Turn user errors into JSON answers the page can show next to what they concern."""

    @app.errorhandler(ConfigProblems)
    def _problems(exc: ConfigProblems) -> Response:
        code = "not_ready" if isinstance(exc, NotReady) else "invalid"
        return _error(400, code, str(exc), exc.i18n, problems=problem_list(exc.problems))

    @app.errorhandler(ConfigError)
    def _config_error(exc: ConfigError) -> Response:
        return _error(400, "bad_config", str(exc), getattr(exc, "i18n", None))

    @app.errorhandler(StoreError)
    def _store_error(exc: StoreError) -> Response:
        status = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, NameTaken) else 400
        return _error(status, exc.code, str(exc), exc.i18n)

    @app.errorhandler(sqlite3.DatabaseError)
    def _database_error(exc: sqlite3.DatabaseError) -> Response:
        busy = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
        key = "err.database_busy" if busy else "err.database"
        msg = Message(key, {"path": studio().store.path, "detail": exc})
        return _error(503, "database_busy" if busy else "database", msg.render(), msg)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response | HTTPException:
        if not request.path.startswith("/api/"):
            return exc
        name = (exc.name or "error").lower().replace(" ", "_")
        text = exc.description or name
        lang = request_language()
        if name in _WORDED_HTTP and lang != "en":  # werkzeug's English text is kept for English
            text = TABLE[lang][f"err.{name}"]
        return _error(exc.code or 500, name, text, getattr(exc, "i18n", None))


def create_app(
    workspace: Path,
    token: str | None = None,
    *,
    stop_timeout: float = 10.0,
    tensorboard_port: int = DEFAULT_PORT,
    tensorboard: bool = False,
    command: Callable[..., list[str]] = stage_command,
    stall_after: float | None = STALL_AFTER_S,
    allow_dirs: tuple[Path, ...] = (),
) -> Flask:
    """A web UI app over `workspace` (created if missing); with a token, every request must carry it.

    The job queue starts at once (re-attaching to jobs a previous run left running); TensorBoard is
    started by `start_services` (the server does it; tests that do not need it skip it). A running stage
    silent for `stall_after` seconds gets a ⏰ warning line in its job's log (None or 0: never). Jobs may
    write only inside the workspace and `allow_dirs`.
    """
    workspace = Path(workspace).expanduser().resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    app.json.sort_keys = False  # type: ignore[attr-defined]
    mirror = ConfigMirror(workspace / CONFIGS_DIR)
    repair = repair_database(workspace)  # a damaged database is kept aside and rebuilt; None when sound
    store = Store(workspace / DB_NAME, listener=mirror)
    mirror.fill_in(store.list_configs())
    jobs = JobStore(store, listener=JobSnapshots(workspace))
    hub = Hub(lambda job_id: job_paths(workspace, job_id))
    supervisor = Supervisor(
        workspace,
        jobs,
        hub,
        stop_timeout=stop_timeout,
        command=command,
        stall_after=stall_after,
        worker=GenerationWorker(workspace),
    )
    board = TensorBoard(
        workspace / "logs" / "tensorboard.log",
        port=tensorboard_port,
        enabled=tensorboard,
        tmp_dir=workspace / ".tmp" / "tensorboard",  # its .tensorboard-info files stay in the workspace
    )
    state = Studio(
        workspace,
        store,
        DemoBuilder(workspace, on_ready=lambda: state.import_demo()),
        jobs,
        hub,
        supervisor,
        board,
        token,
        mirror=mirror,
        allowed_dirs=tuple(Path(d).expanduser().resolve() for d in allow_dirs),
    )
    if repair is not None:
        state.notices.extend(repair.notices())
    state.import_demo()
    app.extensions[EXTENSION] = state
    security.install(app, token)
    _register_errors(app)
    hub.start()
    supervisor.start()

    from .api_app import bp as api_app
    from .api_config import bp as api_config
    from .api_dataset import bp as api_dataset
    from .api_gallery import bp as api_gallery
    from .api_import import bp as api_import
    from .api_jobs import bp as api_jobs
    from .api_lora import bp as api_lora
    from .api_schema import bp as api_schema
    from .api_tools import bp as api_tools
    from .pages import bp as pages
    from .tensorboard_proxy import bp as tensorboard_proxy
    from .ws import bp as ws
    from .ws import sock

    sock.init_app(app)
    for blueprint in (pages, api_app, api_schema, api_config, api_jobs, api_dataset, api_tools, ws):
        app.register_blueprint(blueprint)
    app.register_blueprint(api_gallery)
    app.register_blueprint(api_import)
    app.register_blueprint(api_lora)
    app.register_blueprint(tensorboard_proxy)
    return app


def start_services(app: Flask) -> None:
    """Start TensorBoard on the remembered logging folder (when enabled)."""
    state = studio_of(app)
    state.tensorboard.start(state.tensorboard_logdir())
