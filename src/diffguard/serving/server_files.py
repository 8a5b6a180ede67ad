"""The files ``mlserver start FOLDER`` reads to serve a guard: ``settings.json`` (the server) and
``NAME/model-settings.json`` (the model: ``GuardRuntime``, the guard folder as ``parameters.uri``, the runtime's
options in ``parameters.extra``). Imports no MLServer, so the command line can write them without it.

The guard folder itself is never written to: it deploys unchanged (on KServe, MLServer builds the same model
settings from ``MLSERVER_MODEL_*`` environment variables; see ``docs/serving.md``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from diffguard.errors import UserError

IMPLEMENTATION = "diffguard.serving.runtime.GuardRuntime"
GRPC_MAX_MESSAGE = 64 * 2**20
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class RuntimeOptions:
    """The runtime's settings, read from the model settings' ``parameters.extra`` (every key optional).

    Attributes:
        device: where the guard runs (``cpu``, ``cuda``, ``cuda:1``, ...).
        threads: torch CPU threads (default: torch's choice).
        max_batch_images: adaptive batching: at most this many images (of concurrent requests) per scoring call.
        max_batch_time: adaptive batching: seconds a batch waits for more requests after its first one.
        max_request_images: at most this many images in one request (more: HTTP 413).
        max_image_bytes: at most this many bytes per encoded image file (more: HTTP 413).
        warmup: score one blank image at load, so the first request does not pay for lazy initialisation.
    """

    device: str = "cpu"
    threads: int | None = None
    max_batch_images: int = 32
    max_batch_time: float = 0.01
    max_request_images: int = 256
    max_image_bytes: int = 10 * 2**20
    warmup: bool = True

    def __post_init__(self) -> None:
        counts = {"max_batch_images": self.max_batch_images, "max_request_images": self.max_request_images,
                  "max_image_bytes": self.max_image_bytes, "threads": 1 if self.threads is None else self.threads}
        bad = {k: v for k, v in counts.items() if not isinstance(v, int) or v < 1}
        if bad or not self.max_batch_time >= 0:
            raise UserError(f"runtime options must be positive integers and max_batch_time >= 0 seconds, got "
                            f"{bad or {'max_batch_time': self.max_batch_time}}")

    @classmethod
    def from_extra(cls, extra: dict[str, Any] | None) -> RuntimeOptions:
        """The options of ``parameters.extra``; UserError names unknown keys."""
        extra = dict(extra or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(extra) - set(known))
        if unknown:
            raise UserError(f"unknown key(s) {unknown} in the model settings' parameters.extra; known: {known}")
        return cls(**extra)


@dataclass(frozen=True)
class ServerOptions:
    """Where MLServer listens: ``host`` and the REST, gRPC and Prometheus metrics ports."""

    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 8081
    metrics_port: int = 8082

    def check(self) -> None:
        """Refuse ports out of range or used twice."""
        ports = [self.http_port, self.grpc_port, self.metrics_port]
        if any(not 0 < p < 65536 for p in ports):
            raise UserError(f"ports must lie in 1..65535, got {ports}")
        if len(set(ports)) != 3:
            raise UserError(f"--port, --grpc-port and --metrics-port must differ, got {ports}")


def check_model_name(name: str) -> str:
    """The model name as used in ``/v2/models/NAME``: letters, digits, '_', '.', '-'."""
    if not _NAME.match(name):
        raise UserError(f"model name {name!r} cannot be used in a URL: use letters, digits, '_', '.' and '-' "
                        "(--name NAME)")
    return name


def server_settings(server: ServerOptions) -> dict[str, Any]:
    """``settings.json``: one process (``parallel_workers: 0``, see docs/serving.md), no per-request access log."""
    return {"debug": False, "host": server.host, "http_port": server.http_port, "grpc_port": server.grpc_port,
            "metrics_port": server.metrics_port, "parallel_workers": 0,
            "grpc_max_message_length": GRPC_MAX_MESSAGE}


def model_settings(name: str, guard_dir: Path, runtime: RuntimeOptions) -> dict[str, Any]:
    """``model-settings.json``: the guard folder served by ``GuardRuntime`` as model ``name``.

    MLServer's own adaptive batching (``max_batch_size``) stays off: the runtime batches (``max_batch_images``).
    """
    return {"name": check_model_name(name), "implementation": IMPLEMENTATION,
            "parameters": {"uri": str(guard_dir.resolve()), "extra": dataclasses.asdict(runtime)}}


def write_settings(folder: Path, name: str, guard_dir: Path, server: ServerOptions, runtime: RuntimeOptions) -> Path:
    """Write ``FOLDER/settings.json`` and ``FOLDER/NAME/model-settings.json`` (MLServer expects a model's settings
    in a folder of its name); returns the model settings' path."""
    server.check()
    model_file = folder / check_model_name(name) / "model-settings.json"
    folder.mkdir(parents=True, exist_ok=True)
    others = [p for p in folder.rglob("model-settings.json") if p != model_file]
    if others:
        raise UserError(f"{folder} holds other model settings ({others[0]}), which MLServer would serve too: "
                        "choose an empty --settings-dir")
    model_file.parent.mkdir(exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(server_settings(server), indent=2) + "\n")
    model_file.write_text(json.dumps(model_settings(name, guard_dir, runtime), indent=2) + "\n")
    return model_file
