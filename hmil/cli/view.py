"""``hmil view [RUN]``: start the Streamlit viewer on a run directory (default: the demo run).

The server is :mod:`viewer.server` — the Streamlit pages and the Deep Zoom tile routes as one
ASGI app under uvicorn, on one port. ``hmil view`` *replaces itself* with it (``exec``): the
process a supervisor, a terminal's Ctrl-C or ``kill`` signals is the server itself, so stopping
``hmil view`` stops the server and nothing is left serving.

The viewer binds to 127.0.0.1 unless ``--host`` says otherwise, reads files only below its data
roots (the run, the data its config names, the demo folder, ``checkpoints/`` and each
``--data-root``) and caps uploads at ``--max-upload-mb``. It answers only to its own address
and the names given with ``--allow-host`` (:mod:`viewer.access`). Bound to another address
than loopback it asks for an access token (``--token`` or ``HMIL_VIEW_TOKEN``; one is made up
and printed when neither is given) and leaves the Training page out unless
``--allow-training``. Settings reach the Streamlit process through ``HMIL_VIEW_*`` environment
variables (:mod:`viewer.state`).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path
from urllib.parse import quote

from hmil.cli.flags import add_field_flags
from hmil.errors import CheckpointError, ConfigError, HMILError, RunError
from viewer.state import ViewerSettings

NAME = "view"
HELP = "start the Streamlit viewer (slide, cohort and training pages) on a run directory"
#: ViewerSettings fields set by the flag of their name (--max-upload-mb, --overlay)
SETTINGS_FLAGS = ("max_upload_mb", "overlay")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run",
        nargs="?",
        metavar="RUN",
        help="run directory (default: hmil-demo/run if it exists, else the demo checkpoint "
        "checkpoints/demo alone)",
    )
    parser.add_argument("--port", type=int, default=8501, help="port (default 8501)")
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 shares it, "
        "behind an access token)",
    )
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="NAME",
        help="another host name the viewer answers to (a reverse proxy's, a DNS alias); "
        "repeatable. Requests for any other name are refused",
    )
    parser.add_argument(
        "--token",
        default=None,
        help="access token every visitor must show once (?token=...); default $HMIL_VIEW_TOKEN, "
        "else a new one when binding to a non-loopback address (printed)",
    )
    parser.add_argument(
        "--allow-training",
        action="store_true",
        help="offer the Training page (it starts processes) on a non-loopback bind too",
    )
    parser.add_argument(
        "--data-root",
        action="append",
        default=[],
        metavar="DIR",
        help="another folder the viewer may read (slides, bags, runs) and write new runs "
        "into; repeatable",
    )
    parser.add_argument(
        "--checkpoint", help="default checkpoint for uploaded bags (default: the demo one)"
    )
    add_field_flags(parser, ViewerSettings, dotted=False, defaults=True, only=SETTINGS_FLAGS)
    parser.add_argument(
        "--dry-run", action="store_true", help="print the streamlit command and exit"
    )


def app_path() -> Path:
    """``viewer/server.py`` (the ASGI app: pages + tile routes) of the installed viewer.

    Looked up as the module ``viewer.server``, not as a file beside ``viewer.__path__``: where
    another ``viewer`` folder comes first on ``sys.path`` (the test suite's ``tests/viewer``),
    the package itself is that namespace folder, and only the submodules are the installed
    ones."""
    import importlib.util

    spec = importlib.util.find_spec("viewer.server")
    if spec is None or spec.origin is None:
        raise HMILError("hmil view", "the viewer package is not installed (viewer/server.py)")
    return Path(spec.origin)


def streamlit_command(host: str, port: int, max_upload_mb: int) -> list[str]:
    """The ``streamlit run`` command line (no file watching, no telemetry, no browser)."""
    return [
        sys.executable, "-m", "streamlit", "run", str(app_path()),
        "--server.address", host,
        "--server.port", str(port),
        "--server.headless", "true",
        "--server.maxUploadSize", str(max_upload_mb),
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
    ]  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from viewer.state import ENV_TOKEN, build_settings, settings_env

    if args.run is not None:
        run_dir = Path(args.run)
        if not (run_dir / "config.yaml").is_file():
            raise RunError(
                run_dir, "not a run directory (no config.yaml); give a `hmil train` --out"
            )
    for root in args.data_root:
        if not Path(root).is_dir():
            raise ConfigError(root, "--data-root is not a folder")
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise CheckpointError(args.checkpoint, "checkpoint not found")
    if not 1 <= args.port <= 65535:
        raise ConfigError("--port", f"must be within 1..65535, got {args.port}")
    ViewerSettings(None, None, (), (), max_upload_mb=args.max_upload_mb)  # before any work
    from viewer.access import is_loopback, is_wildcard, new_token, valid_host_name, valid_token

    for name in args.allow_host:
        if not valid_host_name(name):
            raise ConfigError("--allow-host", f"not a host name or IP address: {name!r}")
    token = args.token if args.token is not None else os.environ.get(ENV_TOKEN, "")
    if token and not valid_token(token):
        raise ConfigError("--token", "must be 12–256 letters, digits or . _ ~ -")
    shared = not is_loopback(args.host)
    if shared and not token:
        token = new_token()
    allow_hosts = list(args.allow_host)
    if is_wildcard(args.host):  # the address other machines will most likely type
        allow_hosts.append(socket.gethostname())
    settings = build_settings(
        args.run,
        args.data_root,
        checkpoint=args.checkpoint,
        max_upload_mb=args.max_upload_mb,
        overlay=args.overlay,
        host=args.host,
        allow_hosts=list(dict.fromkeys(h for h in allow_hosts if valid_host_name(h))),
        token=token,
        allow_training=args.allow_training,
    )
    if settings.run is None and settings.checkpoint is None:
        raise RunError(
            "hmil view",
            "no RUN given and neither the demo run (hmil-demo/run) nor the demo checkpoint "
            "(checkpoints/demo/checkpoint.pt) exists; run `hmil demo` or pass a run directory",
        )
    command = streamlit_command(args.host, args.port, args.max_upload_mb)
    from viewer.warmup import ENV_RENDER_PAGE

    # the server renders its default page once before it listens (viewer/warmup.py)
    env = {**os.environ, **settings_env(settings), ENV_RENDER_PAGE: "1"}
    what = f"run {settings.run}" if settings.run else f"model {settings.checkpoint} (no run)"
    print(f"HMIL Studio viewer: {what}", file=sys.stderr)
    query = f"/?token={quote(token)}" if token else ""
    print(
        f"  open http://{_url_host(args.host)}:{args.port}{query} once Streamlit prints it (the "
        "server first warms up: imports and one run of the default page, a few seconds)",
        file=sys.stderr,
    )
    print("  data roots: " + ", ".join(str(r) for r in settings.roots), file=sys.stderr)
    if shared:
        names = ", ".join(settings.allow_hosts) or "none"
        training = (
            "offered (--allow-training)"
            if settings.training_enabled
            else "off (--allow-training offers it)"
        )
        print(
            f"  warning: bound to {args.host}: whoever has the token can view the data roots; "
            f"extra host names: {names}; Training page {training}",
            file=sys.stderr,
        )
    if args.dry_run:
        for key, value in settings_env(settings).items():
            print(f"{key}={value}")
        print(" ".join(command))
        return 0
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(command[0], command, env)  # never returns: this process becomes the server
    return 0


def _url_host(host: str) -> str:
    from viewer.access import is_wildcard

    if is_wildcard(host):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host
