"""Who may talk to the viewer (viewer/access.py): its own address and the names the operator
allows, pages of its own origin, and on a shared bind the holders of the access token. A real
``hmil view`` answers foreign ``Host`` headers with 403 on pages, websocket and tiles alike;
the Training page is not offered on a shared bind."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket
from streamlit.testing.v1 import AppTest
from viewer_fixtures import APP
from viewer_fixtures import APP_TIMEOUT as TIMEOUT

from benchmarks.browser import free_port
from hmil.cli import main
from viewer.access import AccessGuard, AccessPolicy, is_loopback
from viewer.state import settings_from_env
from viewer.tiles.registry import SlideRegistry
from viewer.tiles.routes import OSD_URL, TileService

TOKEN = "test-token-0123456789"
ALLOWED = "viewer.test"
BASE = "http://127.0.0.1:8501"
STREAM = "ws://127.0.0.1:8501/_stcore/stream"  # TestClient's websockets default to "testserver"


@pytest.mark.parametrize(
    ("bind", "host", "allowed"),
    [
        ("127.0.0.1", "127.0.0.1:8501", True),
        ("127.0.0.1", "localhost:8501", True),
        ("127.0.0.1", "LocalHost.", True),
        ("127.0.0.1", "[::1]:8501", True),
        ("127.0.0.1", "localhost:9000", True),  # ssh -L 9000:localhost:8501
        ("127.0.0.1", f"{ALLOWED}:443", True),
        ("127.0.0.1", "evil.example:8501", False),  # DNS rebinding
        ("127.0.0.1", "127.0.0.1.nip.io:8501", False),
        ("127.0.0.1", "localhost.evil.example", False),
        ("127.0.0.1", "192.168.1.5:8501", False),  # an address this bind does not serve
        ("127.0.0.1", "localhost:8501@evil.example", False),
        ("127.0.0.1", "localhost/x", False),
        ("127.0.0.1", "localhost:99999", False),
        ("127.0.0.1", "[::1", False),
        ("127.0.0.1", "", False),
        ("0.0.0.0", "192.168.1.5:8501", True),  # the machine's address, from another one
        ("0.0.0.0", "[fe80::1]:8501", True),
        ("0.0.0.0", f"{ALLOWED}:8501", True),
        ("0.0.0.0", "evil.example:8501", False),
        ("10.0.0.7", "10.0.0.7:8501", True),
        ("10.0.0.7", "10.0.0.8:8501", False),
    ],
)
def test_the_host_names_a_bind_answers_to(bind: str, host: str, allowed: bool) -> None:
    assert AccessPolicy.for_bind(bind, (ALLOWED,)).host_allowed(host) is allowed


def test_loopback_binds() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "", "10.0.0.7", "example.org"]))


def _echo(request: object) -> PlainTextResponse:
    return PlainTextResponse("page")


async def _socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("hello")
    await websocket.close()


def _client(policy: AccessPolicy) -> TestClient:
    """The tile routes, a page and a websocket behind the guard (as in viewer/server.py)."""
    routes = [
        Route("/", _echo, methods=["GET", "PUT"]),
        WebSocketRoute("/_stcore/stream", _socket),
        Route("/_stcore/health", _echo),
        *TileService(SlideRegistry()).routes(),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(AccessGuard, policy=policy)])
    return TestClient(app, base_url=BASE)


def test_a_foreign_host_is_refused_on_pages_tiles_and_the_websocket() -> None:
    client = _client(AccessPolicy.for_bind("127.0.0.1", (ALLOWED,)))
    evil = {"host": "evil.example:8501"}
    for path in ("/", OSD_URL, f"/hmil/dz/{'0' * 20}.dzi", "/_stcore/health"):
        response = client.get(path, headers=evil)
        assert response.status_code == 403, path
        assert response.text.startswith("refused: this viewer answers only to its own address")
        assert "set-cookie" not in response.headers
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect(STREAM, headers=evil),
    ):
        pass
    assert denied.value.status_code == 403
    for host in ("127.0.0.1:8501", f"{ALLOWED}:8501"):
        assert client.get(OSD_URL, headers={"host": host}).status_code == 200
        with client.websocket_connect(STREAM, headers={"host": host}) as ws:
            assert ws.receive_text() == "hello"


def test_the_websocket_and_changes_must_come_from_a_page_of_this_origin() -> None:
    client = _client(AccessPolicy.for_bind("127.0.0.1"))
    with client.websocket_connect(STREAM, headers={"origin": BASE}) as ws:
        assert ws.receive_text() == "hello"
    for origin in (
        "http://localhost:3000",
        "http://127.0.0.1:8502",
        "null",
        "https://evil.example",
    ):
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            client.websocket_connect(STREAM, headers={"origin": origin}),
        ):
            pass
        assert denied.value.status_code == 403, origin
        assert client.put("/", headers={"origin": origin}).status_code == 403, origin
        assert client.get("/", headers={"origin": origin}).status_code == 200  # reads are CORS's
    assert client.put("/", headers={"origin": "http://127.0.0.1:8501"}).status_code == 200


def test_the_token_is_asked_once_then_kept_in_a_strict_http_only_cookie() -> None:
    client = _client(AccessPolicy.for_bind("0.0.0.0", token=TOKEN))
    first = client.get("/")
    assert first.status_code == 401 and first.text.startswith("this viewer needs its access token")
    assert client.get(f"{OSD_URL}?token=wrong-token-000000").status_code == 401
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect(STREAM),
    ):
        pass
    assert denied.value.status_code == 401
    assert client.get("/_stcore/health").status_code == 200  # supervisors' probes stay open
    shown = client.get(f"/?token={TOKEN}")
    assert shown.status_code == 200 and shown.text == "page"
    cookie = shown.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    assert client.get(OSD_URL).status_code == 200  # the client kept the cookie
    with client.websocket_connect(STREAM) as ws:
        assert ws.receive_text() == "hello"
    other = AccessPolicy.for_bind("0.0.0.0", token="another-token-0000")
    assert other.cookie_name != AccessPolicy.for_bind("0.0.0.0", token=TOKEN).cookie_name


def _settings_env(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name in ("HOST", "ALLOW_HOSTS", "TOKEN", "ALLOW_TRAINING"):
        monkeypatch.setenv(f"HMIL_VIEW_{name}", values.get(name.lower(), ""))


def _titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


def test_a_shared_bind_leaves_the_training_page_out_unless_asked(
    app_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _settings_env(monkeypatch)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    at.switch_page("views/train.py").run()
    assert "Training" in _titles(at) and not at.exception
    _settings_env(monkeypatch, host="0.0.0.0", token=TOKEN)  # the same session asks again
    at.run()
    assert "Training" not in _titles(at) and not at.exception  # the default page instead
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("views/train.py")
    _settings_env(monkeypatch, host="0.0.0.0", token=TOKEN, allow_training="1")
    fresh = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    fresh.switch_page("views/train.py").run()
    assert "Training" in _titles(fresh)


def test_dry_run_of_a_shared_bind_makes_up_a_token_and_turns_training_off(
    viewer_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HMIL_VIEW_TOKEN", raising=False)
    assert main(["view", str(viewer_run), "--host", "0.0.0.0", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    env = dict(line.split("=", 1) for line in out.splitlines() if line.startswith("HMIL_VIEW_"))
    assert len(env["HMIL_VIEW_TOKEN"]) >= 32 and f"?token={env['HMIL_VIEW_TOKEN']}" in err
    assert env["HMIL_VIEW_HOST"] == "0.0.0.0" and env["HMIL_VIEW_ALLOW_TRAINING"] == ""
    assert "Training page off" in err
    settings = settings_from_env(env)
    assert not settings.training_enabled and settings.token == env["HMIL_VIEW_TOKEN"]
    assert TOKEN not in repr(settings) and env["HMIL_VIEW_TOKEN"] not in repr(settings)

    monkeypatch.setenv("HMIL_VIEW_TOKEN", TOKEN)
    args = ["view", str(viewer_run), "--host", "0.0.0.0", "--allow-training"]
    assert main([*args, "--allow-host", ALLOWED, "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert f"HMIL_VIEW_TOKEN={TOKEN}" in out.splitlines() and "HMIL_VIEW_ALLOW_TRAINING=1" in out
    assert f"HMIL_VIEW_ALLOW_HOSTS={ALLOWED}" in out and "Training page offered" in err

    monkeypatch.delenv("HMIL_VIEW_TOKEN")
    assert main(["view", str(viewer_run), "--dry-run"]) == 0  # loopback: no token by default
    assert "HMIL_VIEW_TOKEN=\n" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--allow-host", "evil.example:80"], "not a host name or IP address"),
        (["--allow-host", "*"], "not a host name or IP address"),
        (["--token", "short"], "must be 12–256 letters"),
        (["--token", "has space in it!"], "must be 12–256 letters"),
    ],
)
def test_bad_access_options_are_one_line_errors(
    viewer_run: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    assert main(["view", str(viewer_run), *extra, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


# ----------------------------------------------------------------------------- a real server


def _ask(port: int, path: str, host: str, headers: dict[str, str] | None = None) -> tuple:
    """``GET path`` with this ``Host``: ``(status, body, set-cookie)``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
    connection.putheader("Host", host)
    for name, value in (headers or {}).items():
        connection.putheader(name, value)
    connection.endheaders()
    response = connection.getresponse()
    body = b"" if response.status == 101 else response.read()
    connection.close()
    return response.status, body.decode("utf-8", "replace"), response.getheader("set-cookie")


def _upgrade(port: int, host: str, cookie: str = "") -> int:
    """The status of a websocket handshake on Streamlit's stream, from a page of ``host``."""
    headers = {
        "Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol": "streamlit",
        "Origin": f"http://{host}",
    }  # fmt: skip
    if cookie:
        headers["Cookie"] = cookie
    return int(_ask(port, "/_stcore/stream", host, headers)[0])


@pytest.fixture(scope="module")
def guarded_server(viewer_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``hmil view RUN --token T --allow-host viewer.test`` on a free loopback port."""
    port = free_port()
    log = tmp_path_factory.mktemp("guarded") / "view.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HMIL_VIEW_")}
    command = [sys.executable, "-m", "hmil", "view", str(viewer_run), "--port", str(port)]
    command += ["--token", TOKEN, "--allow-host", ALLOWED]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if _ask(port, "/_stcore/health", f"127.0.0.1:{port}")[0] == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.5)
        assert f"?token={TOKEN}" in log.read_text()
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_a_real_server_refuses_foreign_hosts_everywhere(guarded_server: int) -> None:
    """Before: ``Host: evil.example`` got the page (200), the XSRF cookie from the health
    check, a 101 on Streamlit's websocket and the tile routes."""
    port = guarded_server
    evil = f"evil.example:{port}"
    for path in (
        "/",
        "/_stcore/health",
        "/_stcore/host-config",
        OSD_URL,
        f"/hmil/dz/{'0' * 20}.dzi",
    ):
        status, body, cookie = _ask(port, path, evil)
        assert (status, cookie) == (403, None), path
        assert body.startswith("refused: this viewer answers only to its own address")
    assert _upgrade(port, evil) == 403


def test_a_real_server_with_a_token_sets_its_cookie_once(guarded_server: int) -> None:
    port = guarded_server
    here = f"127.0.0.1:{port}"
    status, body, _ = _ask(port, "/", here)
    assert status == 401 and body.startswith("this viewer needs its access token")
    assert _ask(port, OSD_URL, here)[0] == 401 and _upgrade(port, here) == 401
    status, body, cookie = _ask(port, f"/?token={TOKEN}", here)
    assert status == 200 and "<html" in body.lower()
    assert cookie is not None and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    jar = cookie.split(";")[0]
    for host in (here, f"localhost:{port}", f"{ALLOWED}:{port}"):
        assert _ask(port, OSD_URL, host, {"Cookie": jar})[0] == 200, host
        assert _upgrade(port, host, jar) == 101, host
