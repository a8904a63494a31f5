"""Bounded fuzzing of the viewer's HTTP surface: the Deep Zoom, overlay and static routes
behind the access guard, called the way uvicorn calls them (the request target percent-decoded
into ``path``). Whatever the path, number, spec or header, the answer is below 500 with at most
one short line of text: never an exception, never a traceback. Example counts keep the module
to a few seconds on 2 CPU cores."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware

from hmil.demo.tiff import aperio_description, write_pyramid_tiff
from viewer.access import AccessGuard, AccessPolicy
from viewer.tiles.geometry import DeepZoomGeometry
from viewer.tiles.registry import AttentionEntry, SlideRegistry
from viewer.tiles.routes import OverlaySpec, TileService

FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
PORT = 8501
HOST = f"127.0.0.1:{PORT}"
TOKEN = "fuzz-token-0123456789"
#: the longest refusal the routes and the guard write (one line)
SHORT = 300
#: what a browser leaves as it is in a request target (``%`` too: sequences stay encoded)
URL_SAFE = "/%?=&-._~!$'()*+,;:@"


class Served:
    """One slide and one attention map behind the routes, with and without a token."""

    def __init__(self, root: Path) -> None:
        rng = np.random.default_rng(0)
        level0 = rng.integers(0, 255, size=(600, 700, 3), dtype=np.uint8)
        slide = root / "slide.tiff"
        desc = aperio_description(700, 600, 64, 80, 0.5, 20.0, "SYNTHETIC fuzz slide")
        write_pyramid_tiff(slide, [level0, level0[::4, ::4].copy()], mpp=0.5, description=desc)
        registry = SlideRegistry()
        self.key = registry.register_slide(slide, [root], (700, 600))
        coords = np.array([[0, 0], [256, 0], [0, 256], [256, 256]])
        attention = {"coarse": np.array([[0.1, 0.2, 0.3, 0.4]]), "fine": np.eye(4)[:2] + 0.1}
        self.okey = registry.register_attention(
            "fuzz", AttentionEntry(700, 600, coords, 256, attention)
        )
        self.top = DeepZoomGeometry(700, 600).level_count - 1
        routes = TileService(registry).routes()
        policy = AccessPolicy.for_bind("127.0.0.1", allow_hosts=("viewer.test",))
        self.open = Starlette(routes=routes, middleware=[Middleware(AccessGuard, policy=policy)])
        with_token = AccessPolicy.for_bind("127.0.0.1", token=TOKEN)
        self.locked = Starlette(
            routes=routes, middleware=[Middleware(AccessGuard, policy=with_token)]
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Served:
    return Served(tmp_path_factory.mktemp("routes"))


def call(
    app: Any, target: str, headers: list[tuple[str, str]] | None = None, method: str = "GET"
) -> tuple[int, bytes]:
    """``method target`` as uvicorn hands it to the app: ``path`` is the percent-decoded
    target (invalid UTF-8 becomes U+FFFD), ``raw_path`` the bytes (what is not ASCII is
    percent-encoded first, as a browser sends it). Returns the status and the body; an
    exception that escapes after the response started is that response (a 500)."""
    raw, _, query = (quote(part, safe=URL_SAFE) for part in target.partition("?"))
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": unquote(raw), "raw_path": raw.encode("ascii"),
        "query_string": query.encode("ascii"), "root_path": "",
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                    for k, v in (headers if headers is not None else [("host", HOST)])],
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", PORT),
    }  # fmt: skip
    sent: list[dict[str, Any]] = []

    async def run() -> None:
        done = asyncio.Event()
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:  # the (empty) body first, then a disconnect once answered
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                done.set()

        await app(scope, receive, send)

    try:
        asyncio.run(run())
    except Exception:
        if not sent:
            return 500, b"(an exception before any response)"
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return status, body


def assert_refused_cleanly(status: int, body: bytes, what: object) -> None:
    assert status < 500, (what, status, body[:200])
    if status >= 400:
        assert len(body) <= SHORT and b"\n" not in body.strip(), (what, body[:200])
        assert b"Traceback" not in body and b'File "' not in body, what


_numbers = (
    st.integers(-(10**6), 10**6).map(str)
    | st.integers(1, 6000).map(lambda n: "9" * n)  # Python refuses int() beyond 4300 digits
    | st.floats(allow_nan=True, allow_infinity=True).map(repr)
    | st.sampled_from(["nan", "NaN", "inf", "-inf", "1e309", "0x10", "1_0", "+1", " 1", "", "٣",
                       "１", "²", "0" * 40, "00", "-0", "1.0", "%30", "%00"])
)  # fmt: skip
_words = st.text(st.characters(codec="utf-8"), max_size=24) | st.sampled_from(
    ["..", ".", "%2e%2e", "%2F", "%252F", "\x00", "\u202e", "ä", "%ff%fe", "~", "*", "//", "\\"]
)


def _segment(draw: st.DrawFn, valid: str, kind: str) -> str:
    """The valid value, a number-ish or a word-ish one; raw text is percent-encoded the way a
    browser would (sometimes leaving % sequences as they are)."""
    pick = draw(st.integers(0, 3))
    if pick == 0:
        return valid
    value = draw(_numbers if kind == "number" else _words)
    keep = "%" if draw(st.booleans()) else ""
    return quote(value, safe=keep + "-._~!$&'()*+,;=:@")


@st.composite
def targets(draw: st.DrawFn, served: Served) -> str:
    level, col, row = (_segment(draw, v, "number") for v in (str(served.top), "0", "0"))
    key, okey = _segment(draw, served.key, "word"), _segment(draw, served.okey, "word")
    spec = draw(
        st.sampled_from([OverlaySpec.format("coarse", 0, "jet", "raw", 0.0)])
        | st.builds(
            "{}-{}-{}-{}-{}".format,
            st.sampled_from(["coarse", "fine", "x", ""]),
            _numbers,
            st.sampled_from(["jet", "viridis", "nope", ""]),
            st.sampled_from(["raw", "percentile", "relative", "x"]),
            _numbers,
        )
        | _words
    )
    spec = quote(spec, safe="-._~")
    name = _segment(draw, "openseadragon/openseadragon.min.js", "word")
    shapes = [
        f"/hmil/dz/{key}.dzi",
        f"/hmil/dz/{key}_files/{level}/{col}_{row}.jpeg",
        f"/hmil/ov/{okey}/{spec}.dzi",
        f"/hmil/ov/{okey}/{spec}_files/{level}/{col}_{row}.png",
        f"/hmil/static/{name}",
        f"/hmil/{_segment(draw, 'dz', 'word')}/{key}/{level}/{col}_{row}",
    ]
    target = draw(st.sampled_from(shapes))
    if draw(st.booleans()):
        target += "?" + quote(draw(_words), safe="=&")
    return target


@FUZZ
@example(target="/hmil/dz/{key}_files/" + "9" * 5000 + "/0_0.jpeg")
@example(target="/hmil/ov/{okey}/fine-0-jet-raw-9999.dzi")
@example(target="/hmil/ov/{okey}/fine-0-jet-raw-6401_files/{top}/0_0.png")
@example(target="/hmil/dz/{key}_files/{top}/٣_0.jpeg")
@example(target="/hmil/static/%00")
@example(target="/hmil/static/" + "x" * 5000)
@given(target=st.data())
def test_no_route_answers_500_whatever_the_path(served: Served, target: Any) -> None:
    if isinstance(target, str):
        target = target.format(key=served.key, okey=served.okey, top=served.top)
    else:
        target = target.draw(targets(served))
    status, body = call(served.open, target)
    assert_refused_cleanly(status, body, target)


_header_values = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=40
) | st.sampled_from(
    ["evil.example", "127.0.0.1", "[::1]:8501", "localhost:99999", "localhost:-1", "[::1",
     "127.0.0.1:8501@evil", "null", "http://127.0.0.1:8501", "http://127.0.0.1:x",
     f"hmil_view={TOKEN}", "a=b; c", "", " ", "%00", "xn--bcher-kva.example"]
)  # fmt: skip
_header_names = st.sampled_from(["host", "origin", "cookie", "upgrade", "connection"])


@FUZZ
@given(
    headers=st.lists(st.tuples(_header_names, _header_values), max_size=5),
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
    query=st.none() | _words.map(lambda w: "token=" + quote(w)) | st.just(f"token={TOKEN}"),
    locked=st.booleans(),
)
def test_no_header_makes_the_guard_answer_500(
    served: Served, headers: list[tuple[str, str]], method: str, query: str | None, locked: bool
) -> None:
    target = f"/hmil/dz/{served.key}.dzi" + (f"?{query}" if query else "")
    app = served.locked if locked else served.open
    status, body = call(app, target, headers, method)
    assert_refused_cleanly(status, body, (headers, method, query))


def test_the_fuzzed_routes_still_serve_valid_requests(served: Served) -> None:
    """The strategies' valid values do reach tiles (so the fuzz exercises real reads too)."""
    for target in (
        f"/hmil/dz/{served.key}.dzi",
        f"/hmil/dz/{served.key}_files/{served.top}/0_0.jpeg",
        f"/hmil/ov/{served.okey}/{OverlaySpec.format('coarse', 0, 'jet', 'raw', 0.0)}.dzi",
        "/hmil/static/openseadragon/openseadragon.min.js",
    ):
        status, _ = call(served.open, target)
        assert status == 200, target
