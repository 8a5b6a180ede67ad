"""``diffguard serve GUARD_DIR``: serve a guard folder over REST and gRPC (Open Inference Protocol v2) with MLServer.

Writes MLServer's ``settings.json`` and ``NAME/model-settings.json`` into ``--settings-dir`` (default: a new
temporary folder; the guard folder is never written to) and runs ``mlserver start`` on it in this process, until stopped
(Ctrl-C or SIGTERM). The model is served as ``/v2/models/NAME`` (default NAME: the guard folder's name); metrics
are on ``http://HOST:METRICS_PORT/metrics``. ``--write-only`` writes the files and prints the command instead.

MLServer is the optional extra ``diffguard[serve]``; ``docs/serving.md`` has the request format and KServe.
"""

from __future__ import annotations

import argparse
import importlib.util
import socket
import tempfile
from pathlib import Path

from diffguard.errors import UserError
from diffguard.serving.server_files import RuntimeOptions, ServerOptions, check_model_name, write_settings

INSTALL = "pip install 'diffguard[serve]'"


def add(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("serve", help="serve a guard folder over REST and gRPC (Open Inference Protocol) with MLServer")
    s.add_argument("guard_dir", metavar="GUARD_DIR", help="a guard folder (with guard.json)")
    s.add_argument("--name", default=None, help="model name in /v2/models/NAME (default: the guard folder's name)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1; 0.0.0.0: all)")
    s.add_argument("--port", type=int, default=8080, help="REST port (default: 8080)")
    s.add_argument("--grpc-port", type=int, default=8081, help="gRPC port (default: 8081)")
    s.add_argument("--metrics-port", type=int, default=8082, help="Prometheus metrics port (default: 8082)")
    s.add_argument("--settings-dir", default=None, help="folder for settings.json and NAME/model-settings.json "
                   "(default: a new temporary folder)")
    s.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:N")
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    s.add_argument("--max-batch-images", type=int, default=RuntimeOptions.max_batch_images,
                   help="adaptive batching: at most this many images of concurrent requests per scoring call "
                        f"(default: {RuntimeOptions.max_batch_images})")
    s.add_argument("--max-batch-time", type=float, default=RuntimeOptions.max_batch_time,
                   help="adaptive batching: seconds a batch waits for more requests "
                        f"(default: {RuntimeOptions.max_batch_time})")
    s.add_argument("--max-request-images", type=int, default=RuntimeOptions.max_request_images,
                   help=f"images per request; more get HTTP 413 (default: {RuntimeOptions.max_request_images})")
    s.add_argument("--write-only", action="store_true", help="write the settings and print the mlserver command")
    s.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    guard_dir = check_guard_dir(Path(args.guard_dir))
    name = check_model_name(args.name or guard_dir.resolve().name)
    server = ServerOptions(args.host, args.port, args.grpc_port, args.metrics_port)
    runtime = RuntimeOptions(device=args.device, threads=args.threads, max_batch_images=args.max_batch_images,
                             max_batch_time=args.max_batch_time, max_request_images=args.max_request_images)
    if not args.write_only:
        check_mlserver()
        check_ports_free(server)
    folder = Path(args.settings_dir) if args.settings_dir else Path(tempfile.mkdtemp(prefix=f"diffguard-serve-{name}-"))
    model_file = write_settings(folder, name, guard_dir, server, runtime)
    print(f"MLServer settings: {folder / 'settings.json'}, {model_file} (serve them with `mlserver start {folder}`)")
    if args.write_only:
        return 0
    print(f"serving guard {guard_dir} as model {name!r}: REST http://{server.host}:{server.http_port}/v2/models/"
          f"{name}/infer, gRPC {server.host}:{server.grpc_port}, metrics http://{server.host}:{server.metrics_port}"
          "/metrics", flush=True)
    return start_mlserver(folder)


def check_guard_dir(path: Path) -> Path:
    """Refuse a path that is not a guard folder."""
    if not (path / "guard.json").is_file():
        raise UserError(f"{path} is not a guard folder (no guard.json): give a folder written by `diffguard export`")
    return path


def check_mlserver() -> None:
    """Refuse to go on without MLServer, saying how to install it."""
    if importlib.util.find_spec("mlserver") is None:
        raise UserError(f"diffguard serve needs MLServer, which is not installed: {INSTALL}")


def check_ports_free(server: ServerOptions) -> None:
    """Refuse ports another process listens on (MLServer would start half of its servers)."""
    server.check()
    for flag, port in (("--port", server.http_port), ("--grpc-port", server.grpc_port),
                       ("--metrics-port", server.metrics_port)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((server.host, port))
            except OSError as err:
                raise UserError(f"cannot listen on {server.host}:{port} ({err.strerror}): choose another {flag}") \
                    from None


def start_mlserver(folder: Path) -> int:
    """``mlserver start FOLDER`` in this process, until the server stops."""
    from mlserver.cli.main import (  # optional: mlserver (the extra diffguard[serve])
        configure_logger,
        install_uvloop_event_loop,
        root,
    )

    configure_logger()
    install_uvloop_event_loop()
    root.main(args=["start", str(folder)], prog_name="mlserver", standalone_mode=False)
    return 0
