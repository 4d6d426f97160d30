"""TensorBoard through the UI's own server: /tensorboard/... is forwarded to the managed TensorBoard.

A remote browser (the UI started with --host 0.0.0.0 and its access token) cannot reach TensorBoard,
which listens on 127.0.0.1 only; here it gets it on the UI's port, behind the same checks as every other
request (token, loopback Host names without one, same-origin writes: security.py runs before this).

Not an open proxy: the only upstream is 127.0.0.1 on the port of the TensorBoard process the UI started
(never a busy port's other program), the path is rebuilt from the part under the prefix and refused when
it would leave it, only a short list of request headers is passed on (not the UI's cookie or token), and
hop-by-hop headers are dropped both ways. Bodies stream through untouched (gzip stays gzip), but for
TensorBoard's page itself, whose inline styles load its fonts from /font-roboto/... (root-absolute), moved
under the prefix here.
"""

from __future__ import annotations

import http.client
import logging
import re
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

from flask import Blueprint, Response, abort, request
from werkzeug.datastructures import Headers

from .app import studio
from .security import proxy_endpoint
from .tensorboard import PROXY_PREFIX

log = logging.getLogger(__name__)

bp = Blueprint("tensorboard_proxy", __name__)

UPSTREAM_HOST = "127.0.0.1"
METHODS = ["GET", "HEAD", "POST"]  # TensorBoard's page reads with GET and POSTs batched data queries
TIMEOUT_S = 120.0  # a large first scalar/histogram load can take a while
CHUNK = 64 * 1024

# Request headers TensorBoard needs; everything else (Cookie, Authorization, X-Studio-Token, Origin...)
# stays here.
FORWARD_REQUEST = (
    "Accept",
    "Accept-Encoding",
    "Accept-Language",
    "Content-Type",
    "If-Modified-Since",
    "If-None-Match",
    "X-TensorBoard-Feature-Flags",
)
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Response headers the UI's server sets itself or that must not reach the UI's origin.
DROP_RESPONSE = HOP_BY_HOP | {"server", "date", "set-cookie", "x-frame-options"}

MAX_PAGE = 8 * 1024 * 1024  # TensorBoard's index.html is about 200 kB
_ROOT_URL = re.compile(rb"""url\((['"]?)/(?![/\\])""")  # url(/x) in CSS, not url(//host/x)

_PATH_SAFE = "/:@!$&'()*+,;=-._~"
_QUERY_OK = re.compile(rb"[!$-~]*")  # printable ASCII but space, '"' and '#'  (browsers escape them)


class Refused(ValueError):
    """A request that would leave the proxied TensorBoard."""


def upstream_target(sub: str, query: bytes = b"") -> str:
    """The request target on TensorBoard for `PROXY_PREFIX/<sub>?<query>` (sub: the decoded path after
    the prefix's slash). Raises Refused for anything that is not a plain path below the prefix: an
    absolute or scheme-relative URL, '.' or '..' segments, empty segments, backslashes or control
    characters, a query with spaces, quotes, '#' or non-ASCII bytes."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in sub) or "\\" in sub:
        raise Refused("control characters or backslashes in the path")
    parts = urlsplit(sub)
    if parts.scheme or parts.netloc or sub.startswith("/"):
        raise Refused("an absolute address is not a path under " + PROXY_PREFIX)
    segments = sub.split("/")
    if any(s in (".", "..") for s in segments) or "" in segments[:-1]:
        raise Refused("the path leaves " + PROXY_PREFIX)
    if not _QUERY_OK.fullmatch(query):
        raise Refused("the query has characters an address cannot hold")
    target = "/" + quote(sub, safe=_PATH_SAFE)
    return target + ("?" + query.decode("ascii") if query else "")


def _local_location(location: str, port: int) -> str:
    """A redirect of TensorBoard's, moved under the prefix (it only redirects within itself)."""
    parts = urlsplit(location)
    if parts.scheme or parts.netloc:
        if parts.hostname not in (UPSTREAM_HOST, "localhost") or parts.port != port:
            return PROXY_PREFIX + "/"  # somewhere else: never send the browser off through us
        location = parts._replace(scheme="", netloc="").geturl() or "/"
    return PROXY_PREFIX + location if location.startswith("/") else location


def _frame_self(csp: str) -> str:
    """TensorBoard's policy, framed by this origin only (its dynamic plugins frame its own pages)."""
    kept = [d for d in csp.split(";") if d.strip() and not d.strip().lower().startswith("frame-ancestors")]
    return ";".join([*kept, "frame-ancestors 'self'"])


def _response_headers(upstream: http.client.HTTPResponse, port: int) -> Headers:
    connection = upstream.headers.get_all("Connection") or []
    named = {token.strip().lower() for value in connection for token in value.split(",")}
    out = Headers()
    for name, value in upstream.getheaders():
        lower = name.lower()
        if lower in DROP_RESPONSE or lower in named:
            continue
        if lower == "location":
            value = _local_location(value, port)
        elif lower == "content-security-policy":
            value = _frame_self(value)
        out.add(name, value)
    out["X-Frame-Options"] = "SAMEORIGIN"
    return out


def _page_body(upstream: http.client.HTTPResponse) -> bytes | None:
    """TensorBoard's HTML page with its root-absolute CSS urls moved under the prefix; None for anything
    else (streamed as it is)."""
    ctype = (upstream.getheader("Content-Type") or "").split(";")[0].strip().lower()
    encoding = (upstream.getheader("Content-Encoding") or "identity").strip().lower()
    length = upstream.getheader("Content-Length")
    if ctype != "text/html" or encoding != "identity" or not length or not length.isdigit():
        return None
    if int(length) > MAX_PAGE:
        return None
    return rewrite_page(upstream.read())


def rewrite_page(html: bytes) -> bytes:
    """Root-absolute CSS urls of TensorBoard's page (url(/font-roboto/...)) moved under the prefix."""
    return _ROOT_URL.sub(rb"url(\1" + PROXY_PREFIX.encode() + rb"/", html)


def _stream(upstream: http.client.HTTPResponse) -> Iterator[bytes]:
    while chunk := upstream.read1(CHUNK):
        yield chunk


def _unavailable(text: str) -> Response:
    return Response(text + "\n", status=502, mimetype="text/plain")


def _forward(sub: str) -> Response:
    try:
        target = upstream_target(sub, request.query_string)
    except Refused as exc:
        abort(400, description=str(exc))
    board = studio().tensorboard
    if not board.enabled:
        abort(404, description="TensorBoard is off (the UI was started with --no-tensorboard)")
    port = board.upstream_port()
    if port is None:
        status = board.status()
        return _unavailable(f"TensorBoard is not running ({status['state']}). {status['message']}".strip())
    headers = {name: value for name in FORWARD_REQUEST if (value := request.headers.get(name)) is not None}
    body = request.get_data() if request.method == "POST" else None
    conn = http.client.HTTPConnection(UPSTREAM_HOST, port, timeout=TIMEOUT_S)
    try:
        conn.request(request.method, target, body=body, headers=headers)
        upstream = conn.getresponse()
        page = _page_body(upstream) if request.method == "GET" else None
    except (OSError, http.client.HTTPException) as exc:
        conn.close()
        log.info("TensorBoard proxy: %s %s: %s", request.method, target, exc)
        return _unavailable(f"TensorBoard does not answer yet ({exc}); try again in a few seconds.")
    body_iter = [page] if page is not None else _stream(upstream)
    response = Response(body_iter, status=upstream.status, direct_passthrough=True)
    response.headers = _response_headers(upstream, port)
    if page is not None:
        response.headers["Content-Length"] = str(len(page))
    response.call_on_close(upstream.close)
    response.call_on_close(conn.close)
    return response


@bp.route(PROXY_PREFIX + "/", defaults={"sub": ""}, methods=METHODS)
@bp.route(PROXY_PREFIX + "/<path:sub>", methods=METHODS)
@proxy_endpoint
def tensorboard(sub: str) -> Response:
    """TensorBoard (the one the UI started) under /tensorboard/ on the UI's own port."""
    return _forward(sub)
