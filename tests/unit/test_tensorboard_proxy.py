"""The TensorBoard proxy's address rules: only plain paths under /tensorboard/ reach TensorBoard."""

from __future__ import annotations

import pytest

from qwen_image_studio.webui.tensorboard_proxy import (
    Refused,
    _frame_self,
    _local_location,
    rewrite_page,
    upstream_target,
)


@pytest.mark.parametrize(
    ("sub", "query", "target"),
    [
        ("", b"", "/"),
        ("index.js", b"_file_hash=abc", "/index.js?_file_hash=abc"),
        ("data/plugin/scalars/scalars", b"run=a%2Fb&tag=loss%2Fcurrent", "/data/plugin/scalars/scalars?run=a%2Fb&tag=loss%2Fcurrent"),
        ("font-roboto/a b.woff2", b"", "/font-roboto/a%20b.woff2"),
        ("data/x?y#z", b"", "/data/x%3Fy%23z"),  # decoded '?' and '#' stay in the path
        ("experiment/e1/", b"", "/experiment/e1/"),
        ("Ünï", b"", "/%C3%9Cn%C3%AF"),
        ("a%2e%2e", b"", "/a%252e%252e"),  # a literal '%' (from %25) stays literal
    ],
)
def test_paths_under_the_prefix_are_passed_on(sub: str, query: bytes, target: str) -> None:
    assert upstream_target(sub, query) == target


@pytest.mark.parametrize(
    "sub",
    [
        "..",
        "../api/status",
        "data/../../api/status",
        "./index.js",
        "data/./runs",
        "http://evil.example/x",
        "https:evil.example",
        "//evil.example/x",
        "/etc/passwd",
        "data//runs",
        "data\\..\\x",
        "data\r\nX-Injected: 1",
        "data\x00",
        "data\x7f",
    ],
)
def test_paths_that_leave_the_prefix_are_refused(sub: str) -> None:
    with pytest.raises(Refused):
        upstream_target(sub)


@pytest.mark.parametrize("query", [b"a=1 b", b"a=1\r\nX-Injected: 1", b"a=#x", b'a="x"', "a=é".encode()])
def test_queries_an_address_cannot_hold_are_refused(query: bytes) -> None:
    with pytest.raises(Refused):
        upstream_target("data/runs", query)


def test_redirects_stay_under_the_prefix() -> None:
    assert _local_location("/", 6006) == "/tensorboard/"
    assert _local_location("/experiment/e1/", 6006) == "/tensorboard/experiment/e1/"
    assert _local_location("http://127.0.0.1:6006/x?y=1", 6006) == "/tensorboard/x?y=1"
    assert _local_location("index.html", 6006) == "index.html"  # relative: already under the prefix
    for elsewhere in ("http://evil.example/", "//evil.example/x", "http://127.0.0.1:22/", "https://localhost:6007/"):
        assert _local_location(elsewhere, 6006) == "/tensorboard/"


def test_tensorboard_pages_may_only_be_framed_by_this_origin() -> None:
    csp = _frame_self("default-src 'self';frame-ancestors *;script-src 'self'")
    assert csp == "default-src 'self';script-src 'self';frame-ancestors 'self'"


def test_the_page_loads_its_fonts_under_the_prefix() -> None:
    html = b"""src: local('Roboto'), url(/font-roboto/a.woff2) format('woff2'); b: url('/x.png'); c: url("/y");"""
    assert rewrite_page(html) == (
        b"""src: local('Roboto'), url(/tensorboard/font-roboto/a.woff2) format('woff2'); """
        b"""b: url('/tensorboard/x.png'); c: url("/tensorboard/y");"""
    )
    untouched = b"url(//cdn.example/f.woff2) url(https://e.example/a) url(data:x) url(rel/a) href=\"/a\""
    assert rewrite_page(untouched) == untouched
