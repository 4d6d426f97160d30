"""Safe by default: an access token off loopback, JSON-only same-origin writes, loopback Host names."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode, urlsplit

from flask import Flask, Response, current_app, jsonify, redirect, request

from .i18n import TABLE

TOKEN_COOKIE = "studio_token"
TOKEN_HEADER = "X-Studio-Token"
UPLOAD_HEADER = "X-Studio-Upload"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PAGE_SCHEME = {"ws": "http", "wss": "https"}

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def is_loopback(host: str) -> bool:
    """Whether a bind address or Host name only reaches this machine."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def upload_endpoint(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a view that takes a multipart file upload (it must carry the upload header instead of JSON)."""
    view.studio_upload = True  # type: ignore[attr-defined]
    return view


def proxy_endpoint(view: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a view that forwards to a proxied loopback app (TensorBoard): its writes need this origin (and
    the token) like every other, but not JSON, since that app's page posts forms."""
    view.studio_proxy = True  # type: ignore[attr-defined]
    return view


def _refuse(status: int, code: str, message: str) -> Response:
    """A JSON refusal for the API, a short text in both languages for pages."""
    if request.path.startswith("/api/"):
        response = jsonify(error=message, code=code)
    else:
        key = f"err.{code}"
        text = "\n".join(TABLE[lang].get(key, message) for lang in ("en", "zh-CN")) + "\n"
        response = Response(text, mimetype="text/plain")
    response.status_code = status
    return response


def _host_name(netloc: str) -> str:
    return urlsplit("//" + netloc).hostname or ""


def same_origin(source: str) -> bool:
    """Whether an Origin or Referer names this server: the same scheme and host:port as the request."""
    if not source or source == "null":
        return False
    parts = urlsplit(source)
    scheme = _PAGE_SCHEME.get(request.scheme.lower(), request.scheme.lower())  # a WebSocket's page
    return parts.scheme.lower() == scheme and parts.netloc.lower() == request.host.lower()


def _token_ok(token: str) -> bool:
    given = request.headers.get(TOKEN_HEADER) or request.cookies.get(TOKEN_COOKIE) or ""
    auth = request.headers.get("Authorization", "")
    if not given and auth.startswith("Bearer "):
        given = auth[len("Bearer ") :]
    return hmac.compare_digest(given.encode(), token.encode())


def _check_token(token: str) -> Response | None:
    """Let a request through with the token (header or cookie); `?token=` sets the cookie and redirects."""
    query_token = request.args.get("token")
    if query_token is not None and request.method in SAFE_METHODS:
        if not hmac.compare_digest(query_token.encode(), token.encode()):
            return _refuse(401, "bad_token", "wrong access token")
        rest = [(k, v) for k, v in request.args.items(multi=True) if k != "token"]
        response = redirect(request.path + ("?" + urlencode(rest) if rest else ""))
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", secure=request.is_secure)
        return response
    if not _token_ok(token):
        return _refuse(
            401,
            "token_required",
            "this server needs its access token: open the address printed when it started (with ?token=...)",
        )
    return None


def _check_write() -> Response | None:
    """A state-changing request must come from this origin and be JSON (or a marked upload)."""
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    if not same_origin(source):
        return _refuse(
            403, "cross_origin", "refused: the request does not come from this page (Origin/Referer)"
        )
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "studio_proxy", False):
        return None
    if getattr(view, "studio_upload", False):
        if request.mimetype != "multipart/form-data" or request.headers.get(UPLOAD_HEADER) != "1":
            return _refuse(
                415, "upload_header", f"uploads must be multipart/form-data with {UPLOAD_HEADER}: 1"
            )
    elif request.mimetype != "application/json":
        return _refuse(
            415, "json_required", "state-changing requests must be JSON (Content-Type application/json)"
        )
    return None


def _check_websocket() -> Response | None:
    """A WebSocket upgrade must come from a page of this origin (browsers always send Origin)."""
    origin = request.headers.get("Origin") or ""
    if not same_origin(origin):
        return _refuse(403, "cross_origin", "refused: the WebSocket does not come from this page (Origin)")
    return None


def install(app: Flask, token: str | None) -> None:
    """Check every request (token, Host, writes) and add security headers to every response."""

    @app.before_request
    def _guard() -> Response | None:
        if token is None and not is_loopback(_host_name(request.host)):
            return _refuse(403, "bad_host", "refused: this server answers loopback host names only")
        if token is not None:
            refused = _check_token(token)
            if refused is not None:
                return refused
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return _check_websocket()
        if request.method not in SAFE_METHODS:
            return _check_write()
        return None

    @app.after_request
    def _headers(response: Response) -> Response:
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("X-Frame-Options", "DENY")
        if request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response
