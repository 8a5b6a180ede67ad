"""Serving a guard with MLServer (issue 20, point 4): the runtime's batching and protocol, ``diffguard serve``, and
one end-to-end run of the real server on loopback (REST and gRPC answers equal ``guard.score`` offline, bad
requests get a 4xx and the server keeps serving, the metrics count, and a SIGKILLed server comes back with the
same answers).

The tests that need MLServer skip without it (``pip install 'diffguard[serve]'``; ``make test`` installs it).
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from diffguard.cli import build_parser, main
from diffguard.errors import UserError
from diffguard.guard.guard import Guard
from diffguard.serving.batching import ImageBatcher, split_arrays
from diffguard.serving.server_files import IMPLEMENTATION, RuntimeOptions

HAVE_MLSERVER = importlib.util.find_spec("mlserver") is not None
needs_mlserver = pytest.mark.skipif(not HAVE_MLSERVER, reason="mlserver is not installed: pip install "
                                    "'diffguard[serve]' (make test installs it)")
MODEL = "tiny"
MAX_REQUEST_IMAGES = 8
REQUEST_TIMEOUT = 30.0
START_TIMEOUT = 90.0


# -- batching (no MLServer needed) -----------------------------------------------------------------------------------
def fake_score(calls: list[int]):
    """A scoring function that records batch sizes, returns each image's pixel sum + 1000 * its id, and refuses NaN
    images like a guard does."""

    def score(x: torch.Tensor, ids: torch.Tensor) -> dict[str, np.ndarray]:
        if torch.isnan(x).any():
            raise UserError("NaN pixel")
        calls.append(len(x))
        time.sleep(0.02)
        return {"score": (x.flatten(1).sum(1).double() + 1000 * ids).numpy(), "id": ids.numpy()}

    return score


def images(n: int, value: float) -> torch.Tensor:
    return torch.full((n, 1, 2, 2), value)


def run_concurrently(batcher: ImageBatcher, batches: list[torch.Tensor]) -> list[Any]:
    async def go() -> list[Any]:
        return await asyncio.gather(*(batcher.score(b) for b in batches), return_exceptions=True)

    return asyncio.run(go())


def test_concurrent_requests_are_merged_and_split_back_with_their_own_ids():
    calls: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        batcher = ImageBatcher(fake_score(calls), pool, max_images=32, max_wait=0.05)
        sizes = [1, 2, 3, 5]
        out = run_concurrently(batcher, [images(n, float(n)) for n in sizes])
    assert calls == [11]
    for n, got in zip(sizes, out):
        assert got["id"].tolist() == list(range(n))  # as guard.score(x) alone would seed them
        assert got["score"].tolist() == [4.0 * n + 1000 * i for i in range(n)]


def test_batches_hold_whole_requests_up_to_max_images():
    calls: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        batcher = ImageBatcher(fake_score(calls), pool, max_images=5, max_wait=0.05)
        out = run_concurrently(batcher, [images(3, 1.0), images(3, 2.0), images(7, 3.0), images(2, 4.0)])
    assert [len(o["score"]) for o in out] == [3, 3, 7, 2]
    assert sorted(calls) == [2, 3, 3, 7]  # 7 alone (never split); 3 + 3 > 5


def test_a_bad_request_does_not_fail_its_batch_mates():
    calls: list[int] = []
    with ThreadPoolExecutor(1) as pool:
        batcher = ImageBatcher(fake_score(calls), pool, max_images=32, max_wait=0.05)
        good, bad = images(2, 1.0), images(1, float("nan"))
        out = run_concurrently(batcher, [good, bad, good])
    assert isinstance(out[1], UserError)
    assert out[0]["score"].tolist() == out[2]["score"].tolist() == [4.0, 1004.0]


def test_a_request_whose_client_left_is_not_scored():
    calls: list[int] = []

    async def go() -> dict[str, np.ndarray]:
        with ThreadPoolExecutor(1) as pool:
            batcher = ImageBatcher(fake_score(calls), pool, max_images=32, max_wait=0.1)
            gone = asyncio.ensure_future(batcher.score(images(4, 1.0)))
            kept = asyncio.ensure_future(batcher.score(images(1, 2.0)))
            await asyncio.sleep(0.01)
            gone.cancel()
            return await kept

    assert asyncio.run(go())["score"].tolist() == [4 * 2.0]
    assert calls == [1]


def test_split_arrays_refuses_a_length_mismatch():
    with pytest.raises(RuntimeError, match="3 values"):
        split_arrays({"score": np.zeros(3)}, [2, 2])


def test_runtime_options_refuse_unknown_and_bad_values():
    assert RuntimeOptions.from_extra({"max_batch_images": 4}).max_batch_images == 4
    with pytest.raises(UserError, match="unknown key"):
        RuntimeOptions.from_extra({"max_batch_size": 4})
    with pytest.raises(UserError, match="positive"):
        RuntimeOptions(max_request_images=0)


# -- the command line (no MLServer needed) ---------------------------------------------------------------------------
def fake_guard_dir(tmp_path: Path) -> Path:
    guard = tmp_path / "my-guard"
    guard.mkdir()
    (guard / "guard.json").write_text("{}")
    return guard


def test_serve_write_only_writes_the_mlserver_settings(tmp_path, capsys):
    guard = fake_guard_dir(tmp_path)
    out = tmp_path / "settings"
    assert main(["serve", str(guard), "--write-only", "--settings-dir", str(out), "--port", "9100",
                 "--grpc-port", "9101", "--metrics-port", "9102", "--max-batch-images", "16"]) == 0
    server = json.loads((out / "settings.json").read_text())
    model = json.loads((out / "my-guard" / "model-settings.json").read_text())
    assert (server["http_port"], server["grpc_port"], server["metrics_port"]) == (9100, 9101, 9102)
    assert server["parallel_workers"] == 0 and server["host"] == "127.0.0.1"
    assert model["name"] == "my-guard" and model["implementation"] == IMPLEMENTATION
    assert model["parameters"]["uri"] == str(guard.resolve())
    assert model["parameters"]["extra"]["max_batch_images"] == 16
    assert "max_batch_size" not in model  # MLServer's own batching stays off
    assert f"mlserver start {out}" in capsys.readouterr().out
    assert sorted(p.name for p in guard.iterdir()) == ["guard.json"]  # the guard folder is not written to


def test_serve_refuses_a_folder_that_is_not_a_guard_and_a_bad_name(tmp_path, capsys):
    assert main(["serve", str(tmp_path), "--write-only"]) == 2
    assert "not a guard folder" in capsys.readouterr().err
    assert main(["serve", str(fake_guard_dir(tmp_path)), "--write-only", "--name", "a/b"]) == 2
    assert "cannot be used in a URL" in capsys.readouterr().err


def test_serve_refuses_a_port_in_use(tmp_path, capsys):
    if not HAVE_MLSERVER:
        pytest.skip("mlserver is not installed, and the port check comes after the MLServer check")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(fake_guard_dir(tmp_path)), "--port", str(port), "--grpc-port", str(free_port()),
                     "--metrics-port", str(free_port()), "--settings-dir", str(tmp_path / "s")]) == 2
    assert f"127.0.0.1:{port}" in capsys.readouterr().err


def test_the_command_line_works_without_mlserver(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlserver", None)  # `import mlserver` now fails
    for name in [m for m in sys.modules if m.startswith(("diffguard.serving", "diffguard.cli.serve_cmd"))]:
        monkeypatch.delitem(sys.modules, name)
    assert "serve" in build_parser().format_help()
    assert main(["serve", str(fake_guard_dir(tmp_path))]) == 2
    assert "pip install 'diffguard[serve]'" in capsys.readouterr().err


# -- the protocol (MLServer's types) ---------------------------------------------------------------------------------
def request_input(datatype: str, shape: list[int], data: list[Any]):
    from mlserver.types import RequestInput

    return RequestInput(name="images", datatype=datatype, shape=shape, data=data)


@needs_mlserver
def test_the_protocol_refuses_bad_inputs_with_a_reason():
    from mlserver.types import InferenceRequest, RequestOutput

    from diffguard.serving.protocol import BadRequest, Limits, decode_files, decode_tensor, images_input
    from diffguard.serving.protocol import requested_outputs

    limits = Limits(max_images=4, max_image_bytes=100)
    shape = (1, 2, 2)
    ok = decode_tensor(request_input("FP32", [2, 1, 2, 2], [0.5] * 8), shape, limits)
    assert ok.shape == (2, 1, 2, 2) and ok.dtype == torch.float32
    cases = [(lambda: decode_tensor(request_input("FP32", [1, 1, 3, 3], [0.0] * 9), shape, limits), 400, "shape"),
             (lambda: decode_tensor(request_input("FP32", [1, 1, 2, 2], [0.0] * 3), shape, limits), 400, "fill"),
             (lambda: decode_tensor(request_input("FP32", [1, 1, 2, 2], [float("nan")] * 4), shape, limits), 400,
              "NaN"),
             (lambda: decode_tensor(request_input("FP32", [1, 1, 2, 2], [2.0] * 4), shape, limits), 400, "[-1, 1]"),
             (lambda: decode_tensor(request_input("FP32", [5, 1, 2, 2], [0.0] * 20), shape, limits), 413, "split"),
             (lambda: decode_tensor(request_input("FP32", [0, 1, 2, 2], []), shape, limits), 400, "no images"),
             (lambda: decode_files(request_input("BYTES", [1], ["QUJD" * 40]), limits), 413, "MiB"),
             (lambda: decode_files(request_input("BYTES", [2, 2], ["QUJD"] * 4), limits), 400, "shape [N]"),
             (lambda: decode_files(request_input("BYTES", [1], ["AB\u00ff"]), limits), 400, "base64"),
             (lambda: images_input(InferenceRequest(inputs=[])), 400, "no input 'images'"),
             (lambda: requested_outputs(InferenceRequest(inputs=[], outputs=[RequestOutput(name="x")])), 400,
              "unknown output")]
    for call, status, words in cases:
        with pytest.raises(BadRequest) as err:
            call()
        assert err.value.status_code == status and words in str(err.value), str(err.value)
    assert decode_files(request_input("BYTES", [2], ["QUJD", b"\x89PNG"]), limits) == [b"ABC", b"\x89PNG"]


# -- the real server, end to end -------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``diffguard serve`` in a subprocess on free loopback ports; started, SIGKILLed and restarted by the test."""

    def __init__(self, guard: Path, folder: Path):
        self.guard = guard
        self.folder = folder
        self.http, self.grpc, self.metrics = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen | None = None
        self.log = folder / "server.log"

    def start(self) -> None:
        args = [sys.executable, "-m", "diffguard", "serve", str(self.guard), "--name", MODEL,
                "--port", str(self.http), "--grpc-port", str(self.grpc), "--metrics-port", str(self.metrics),
                "--settings-dir", str(self.folder / "settings"), "--threads", "1", "--max-batch-time", "0.2",
                "--max-request-images", str(MAX_REQUEST_IMAGES)]
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            if self.ready():
                return
            time.sleep(0.5)
        self.kill()
        pytest.fail(f"the server was not ready within {START_TIMEOUT} s:\n{self.log.read_text()[-3000:]}")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/v2/models/{MODEL}/ready", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def post(self, body: Any, model: str = MODEL) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body) of POST /v2/models/MODEL/infer."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(f"{self.url}/v2/models/{model}/infer", data,
                                     {"content-type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as r:
                return r.status, json.load(r)
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=REQUEST_TIMEOUT) as r:
            return r.read().decode()


@pytest.fixture(scope="module")
def guard(server: Server):
    """The served guard, loaded here to score offline."""
    return Guard.load(server.guard, device="cpu")


@pytest.fixture(scope="module")
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    if not HAVE_MLSERVER:
        pytest.skip("mlserver is not installed: pip install 'diffguard[serve]' (make test installs it)")
    srv = Server(request.getfixturevalue("tiny_guard"), tmp_path_factory.mktemp("serve"))
    srv.start()
    yield srv
    srv.kill()


def make_images(n: int, seed: int) -> torch.Tensor:
    """n images in [-1, 1]: some like the fake Fashion-MNIST classes (bright band), some noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 28, 28, generator=g) * 0.4 - 1.0
    for i in range(n):
        c = (seed + i) % 10
        x[i, 0, 2 * c:2 * c + 8, 4:24] += 1.4 if i % 3 else 0.3
    return x.clamp(-1, 1)


def png_files(n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, size=(28, 28), dtype=np.uint8)).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def fp32_body(x: torch.Tensor) -> dict[str, Any]:
    return {"inputs": [{"name": "images", "datatype": "FP32", "shape": list(x.shape), "data": x.flatten().tolist()}]}


def bytes_body(blobs: list[bytes]) -> dict[str, Any]:
    return {"inputs": [{"name": "images", "datatype": "BYTES", "shape": [len(blobs)],
                        "parameters": {"content_type": "base64"},
                        "data": [base64.b64encode(b).decode() for b in blobs]}]}


MERGED_TOLERANCE = 1e-4
"""Requests merged into one scoring call: the guard's float32 networks round differently at other batch sizes."""


def assert_matches(answer: dict[str, Any], expected, exact: bool = True) -> None:
    """A 200 answer equals the offline GuardResult: the same decisions and labels, and the same scores to the last
    bit (``exact``), else within :data:`MERGED_TOLERANCE` (a decision may then differ only at the threshold)."""
    out = {o["name"]: o for o in answer["outputs"]}
    assert [o["name"] for o in answer["outputs"]] == ["score", "is_ood", "label", "diffguard_ran"]
    assert out["score"]["datatype"] == "FP64" and out["score"]["shape"] == [len(expected.score)]
    score = np.array(out["score"]["data"], dtype=np.float64)
    if exact:
        assert np.array_equal(score, expected.score)
    else:
        np.testing.assert_allclose(score, expected.score, rtol=MERGED_TOLERANCE, atol=MERGED_TOLERANCE)
    at_threshold = np.abs(expected.score - expected.threshold) < MERGED_TOLERANCE * (0 if exact else 10)
    assert (np.array(out["is_ood"]["data"]) == expected.is_ood)[~at_threshold].all()
    assert out["label"]["data"] == expected.label.tolist()
    assert out["diffguard_ran"]["data"] == expected.diffguard_ran.tolist()
    assert answer["parameters"]["threshold"] == expected.threshold


def offline(guard, x: torch.Tensor):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the server (--threads 1)
    try:
        return guard.score(x)
    finally:
        torch.set_num_threads(threads)


def requests_of_different_sizes() -> list[tuple[dict[str, Any], Any]]:
    """(body, how to get the same images offline) for FP32 and PNG requests of 1..5 images."""
    fp32 = [make_images(n, seed) for n, seed in ((1, 0), (3, 1), (5, 2), (2, 3), (4, 4))]
    pngs = [png_files(n, seed) for n, seed in ((2, 10), (1, 11), (3, 12))]
    return ([(fp32_body(x), lambda g, x=x: x) for x in fp32]
            + [(bytes_body(b), lambda g, b=b: g.decode_images(b)) for b in pngs])


@pytest.mark.slow
def test_a_request_scored_alone_equals_offline_scores_to_the_last_bit(server, guard):
    answers = []
    for body, images_of in requests_of_different_sizes()[:4:2] + requests_of_different_sizes()[-1:]:
        status, answer = server.post(body)  # one at a time: nothing to merge with
        assert status == 200, answer
        assert_matches(answer, offline(guard, images_of(guard)), exact=True)
        answers.append(answer)
    server.alone_answers = answers


@pytest.mark.slow
def test_concurrent_rest_requests_are_batched_and_split_back(server, guard):
    cases = requests_of_different_sizes()
    before = batch_count(server.metrics_text())
    with ThreadPoolExecutor(len(cases)) as pool:
        answers = list(pool.map(lambda case: server.post(case[0]), cases))
    for (body, images_of), (status, answer) in zip(cases, answers):
        assert status == 200, answer
        assert_matches(answer, offline(guard, images_of(guard)), exact=False)
    assert batch_count(server.metrics_text()) - before < len(cases), "concurrent requests were not merged"
    assert any(any(o["data"]) for a in answers for o in a[1]["outputs"] if o["name"] == "diffguard_ran"), \
        "no image reached DiffGuard: the test images do not exercise the cascade"


def batch_count(metrics: str) -> float:
    """How many scoring calls our model made (the count of the diffguard_batch_images histogram)."""
    counts = [float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith("diffguard_batch_images_count{") and f'model_name="{MODEL}"' in line]
    return counts[0] if counts else 0.0


@pytest.mark.slow
def test_grpc_answers_equal_offline_scores(server, guard):
    import grpc
    from mlserver.grpc import dataplane_pb2 as pb
    from mlserver.grpc import dataplane_pb2_grpc as pb_grpc

    x = make_images(3, 7)
    blobs = png_files(2, 8)
    tensor = pb.ModelInferRequest.InferInputTensor
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        fp32 = stub.ModelInfer(pb.ModelInferRequest(model_name=MODEL, inputs=[tensor(
            name="images", datatype="FP32", shape=list(x.shape),
            contents=pb.InferTensorContents(fp32_contents=x.flatten().tolist()))]), timeout=REQUEST_TIMEOUT)
        files = stub.ModelInfer(pb.ModelInferRequest(model_name=MODEL, inputs=[tensor(
            name="images", datatype="BYTES", shape=[2], contents=pb.InferTensorContents(bytes_contents=blobs))]),
            timeout=REQUEST_TIMEOUT)
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(pb.ModelInferRequest(model_name=MODEL, inputs=[tensor(
                name="images", datatype="FP32", shape=[1, 1, 2, 2],
                contents=pb.InferTensorContents(fp32_contents=[0.0] * 4))]), timeout=REQUEST_TIMEOUT)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "shape" in err.value.details()
    for answer, expected in ((fp32, offline(guard, x)), (files, offline(guard, guard.decode_images(blobs)))):
        out = {o.name: o for o in answer.outputs}
        assert np.array_equal(np.array(out["score"].contents.fp64_contents), expected.score)
        assert list(out["is_ood"].contents.bool_contents) == expected.is_ood.tolist()
        assert list(out["label"].contents.int64_contents) == expected.label.tolist()
        assert float(answer.parameters["threshold_text"].string_param) == expected.threshold


def bad_requests(guard) -> list[tuple[bytes | dict[str, Any], int, str]]:
    """(body, expected status, words of the reason) of requests the server must refuse."""
    c, h, w = guard.input_shape
    def raw(value: bytes) -> bytes:  # JSON has no NaN: null reads as NaN, a NaN literal is no JSON at all
        return b'{"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, %d, %d, %d], "data": [%s]}]}' % (
            c, h, w, b", ".join([value] * (c * h * w)))

    good = fp32_body(make_images(1, 5))["inputs"][0]
    return [
        ({"inputs": [{**good, "name": "pixels"}]}, 400, "no input 'images'"),
        ({"inputs": [good, {**good, "name": "extra"}]}, 400, "nothing else"),
        (fp32_body(torch.zeros(1, c, h + 1, w)), 400, "shape"),
        ({"inputs": [{**good, "datatype": "INT32", "data": [0] * (c * h * w)}]}, 400, "datatype INT32"),
        (raw(b"null"), 400, "NaN"),
        (raw(b"NaN"), 422, "JSON decode error"),
        (fp32_body(torch.full((1, c, h, w), 3.0)), 400, "[-1, 1]"),
        (bytes_body([b"this is not an image"]), 400, "item 0"),
        (fp32_body(torch.zeros(MAX_REQUEST_IMAGES + 1, c, h, w)), 413, "split it"),
        ({**fp32_body(torch.zeros(1, c, h, w)), "outputs": [{"name": "logits"}]}, 400, "unknown output"),
    ]


@pytest.mark.slow
def test_bad_requests_get_a_4xx_with_the_reason_and_the_server_keeps_serving(server, guard):
    bad = bad_requests(guard)
    good = make_images(2, 9)
    bodies = [body for body, _, _ in bad] + [fp32_body(good)]
    with ThreadPoolExecutor(len(bodies)) as pool:  # bad and good requests in the same batching window
        answers = list(pool.map(server.post, bodies))
    for (body, status, words), (got, answer) in zip(bad, answers):
        assert got == status and words in json.dumps(answer), (status, words, got, answer)
    assert answers[-1][0] == 200
    assert_matches(answers[-1][1], offline(guard, good))
    status, answer = server.post(fp32_body(good), model="no-such-model")
    assert status == 404 and "not found" in answer["error"]
    status, answer = server.post(fp32_body(good))
    assert status == 200 and server.proc.poll() is None


def metric_values(text: str, name: str) -> dict[str, float]:
    """predicted_class -> value of the series ``name`` of our model."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and f'model_name="{MODEL}"' in line:
            labels, value = line.rsplit(" ", 1)
            out[labels.split('predicted_class="')[1].split('"')[0]] = float(value)
    return out


@pytest.mark.slow
def test_metrics_count_images_by_predicted_class(server, guard):
    x = make_images(5, 20)
    before = server.metrics_text()
    status, answer = server.post(fp32_body(x))
    assert status == 200
    after = server.metrics_text()
    expected = offline(guard, x)
    for name, counted in (("diffguard_images_scored_total", np.ones(len(x), dtype=bool)),
                          ("diffguard_images_flagged_total", expected.is_ood)):
        old, new = metric_values(before, name), metric_values(after, name)
        for cls in np.unique(expected.label):
            assert new[str(cls)] - old.get(str(cls), 0.0) == counted[expected.label == cls].sum(), name
    assert f'model_infer_request_success_total{{model="{MODEL}"' in after  # MLServer's own metrics are there too


@pytest.mark.slow
def test_a_sigkilled_server_restarts_with_the_same_answers(server):
    first = getattr(server, "alone_answers", None)
    if first is None:
        pytest.skip("needs test_a_request_scored_alone_equals_offline_scores_to_the_last_bit to run first")
    server.kill()
    assert server.proc.returncode == -signal.SIGKILL and not server.ready()
    server.start()
    cases = requests_of_different_sizes()[:4:2] + requests_of_different_sizes()[-1:]
    for (body, _), before in zip(cases, first):
        status, answer = server.post(body)
        assert status == 200
        assert answer["outputs"] == before["outputs"] and answer["parameters"] == before["parameters"]
