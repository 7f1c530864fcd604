"""`hpsearch predict` on a champion registered by a real (tiny) `train-final`, checked against the network's
own forward pass on the logged weights; and `mlflow models serve` answering like `hpsearch predict`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from model.cifar10 import CLASSES, load_batch
from model.network import Params, forward
from tests.conftest import ROOT, hpsearch, project_folder

URI = "sqlite:///mlruns/mlflow.db"



def to_image(row: np.ndarray) -> Image.Image:
    """A CIFAR row (3072,) uint8 as a 32 × 32 RGB image: R, G, B planes → height × width × channel."""
    return Image.fromarray(row.reshape(3, 32, 32).transpose(1, 2, 0))


def pixels(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), np.uint8).transpose(2, 0, 1).reshape(-1)


@pytest.fixture(scope="module")
def champion(tmp_path_factory, cifar_dir):
    """A project folder whose store holds cifar10-mlp@champion, plus the weights that model was logged with."""
    from mlflow.tracking import MlflowClient

    with project_folder(tmp_path_factory.mktemp("predict"), cifar_dir) as folder:
        hpsearch("train-final", "--lambda", "0.01")
        uri = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"  # explicit: no process-global MLflow URI
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        version = client.get_model_version_by_alias("cifar10-mlp", "champion")
        local = client.download_artifacts(version.run_id, "model", str(folder))
        with np.load(Path(local) / "artifacts" / "weights.npz") as w:
            weights = {k: w[k] for k in ("W1", "b1", "W2", "b2", "mean", "std")}
        raw, _ = load_batch(cifar_dir / "test_batch")
        images = folder / "images"
        images.mkdir()
        yield folder, weights, raw, images


def network(weights: dict, X: np.ndarray) -> np.ndarray:
    """(n, 10) probabilities of the network itself on raw pixel rows X: (n, 3072)."""
    params = Params(weights["W1"], weights["b1"], weights["W2"], weights["b2"])
    return forward(params, (X.astype(np.float32) - weights["mean"]) / weights["std"])[1]


def table(stdout: str) -> dict[str, tuple[str, float]]:
    rows = [line.split() for line in stdout.splitlines() if line.strip()]
    return {r[0]: (r[1], float(r[2])) for r in rows}


def test_png_and_jpeg_are_classified_like_the_network(champion):
    folder, weights, raw, images = champion
    names, expected_rows = [], []
    for i in range(6):  # PNG is lossless: the file's pixels are exactly the CIFAR row
        path = images / f"test{i}.png"
        to_image(raw[i]).save(path)
        names.append(str(path))
        expected_rows.append(raw[i])
    jpeg = images / "test6.jpg"
    to_image(raw[6]).save(jpeg, quality=95)
    names.append(str(jpeg))
    expected_rows.append(pixels(Image.open(jpeg)))
    result = hpsearch("predict", *names)
    got = table(result.stdout)
    P = network(weights, np.stack(expected_rows))
    assert list(got) == names
    for name, p in zip(names, P, strict=True):
        assert got[name][0] == CLASSES[p.argmax()]
        assert got[name][1] == pytest.approx(p.max(), abs=0.006)  # printed with 2 decimals
    assert result.stderr == ""


def test_an_image_of_another_size_is_resized_to_32x32(champion):
    folder, weights, raw, images = champion
    big = to_image(raw[7]).resize((100, 60), Image.Resampling.BICUBIC)
    path = images / "wide.png"
    big.save(path)
    expected = pixels(big.resize((32, 32), Image.Resampling.LANCZOS))
    got = table(hpsearch("predict", str(path)).stdout)
    assert got[str(path)][0] == CLASSES[network(weights, expected[None, :])[0].argmax()]


def test_json_lists_every_probability(champion):
    folder, weights, raw, images = champion
    paths = []
    for i in (8, 9):
        paths.append(images / f"json{i}.png")
        to_image(raw[i]).save(paths[-1])
    out = json.loads(hpsearch("predict", "--json", *map(str, paths)).stdout)
    P = network(weights, raw[8:10])
    assert [o["file"] for o in out] == [str(p) for p in paths]
    for o, p in zip(out, P, strict=True):
        assert set(o) == {"file", "class", "probability", "probabilities"}
        assert list(o["probabilities"]) == list(CLASSES)
        assert sum(o["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
        assert o["class"] == CLASSES[p.argmax()] == max(o["probabilities"], key=o["probabilities"].get)
        assert o["probability"] == pytest.approx(p.max(), rel=1e-5)
        np.testing.assert_allclose(list(o["probabilities"].values()), p, rtol=1e-4, atol=1e-7)


def test_a_cifar_batch_file_gives_one_line_per_row(champion, cifar_dir):
    folder, weights, raw, images = champion
    batch = cifar_dir / "test_batch"
    got = table(hpsearch("predict", str(batch)).stdout)
    assert list(got) == [f"{batch}[{i}]" for i in range(len(raw))]
    expected = [CLASSES[k] for k in network(weights, raw).argmax(axis=1)]
    assert [c for c, _ in got.values()] == expected


def test_unreadable_files_are_reported_and_the_others_still_classified(champion):
    folder, weights, raw, images = champion
    good = images / "good.png"
    to_image(raw[0]).save(good)
    truncated = images / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:300])
    text = images / "notes.png"
    text.write_text("not an image")
    missing = images / "missing.jpg"
    result = hpsearch("predict", str(truncated), str(good), str(text), str(missing), code=1)
    assert list(table(result.stdout)) == [str(good)]
    errors = result.stderr.splitlines()
    assert len(errors) == 3, errors
    for path, err in zip((truncated, text, missing), errors, strict=True):
        assert err.startswith(f"error: {path}: ")
    assert "Traceback" not in result.output


def test_without_a_champion_one_line_and_exit_1(project):
    for _ in range(2):  # no store at all, then a store without the model
        result = hpsearch("predict", "whatever.png", code=1)
        assert result.stdout == ""
        assert result.stderr.splitlines() == [
            f"error: no model registered as cifar10-mlp@champion in sqlite:///{project}/mlruns/mlflow.db; "
            "run `hpsearch train-final` first"
        ]
        from pipeline.tracking.tracker import Tracker

        Tracker(URI, "cifar10-lambda")
    assert not (project / "whatever.png").exists()


# ---- mlflow models serve answers like hpsearch predict ---------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.5)
    pytest.fail(f"{url} did not answer within {timeout} s")


def stop_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    except ProcessLookupError:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # workers left behind by their parent
    except ProcessLookupError:
        pass


ONE_LINER = ("import json, sys; from pipeline.views.predict import image_row; "
             "print(json.dumps({'inputs': [image_row(p).tolist() for p in sys.argv[1:]]}))")


@pytest.mark.slow
def test_mlflow_models_serve_answers_like_hpsearch_predict(champion, tmp_path):
    folder, weights, raw, images = champion
    paths = []
    for i in range(10, 16):
        paths.append(images / f"serve{i}.png")
        to_image(raw[i]).save(paths[-1])
    expected = [c for c, _ in table(hpsearch("predict", *map(str, paths)).stdout).values()]

    # docs/model.md's one-liner turns the images into the request body.
    body = subprocess.run([sys.executable, "-c", ONE_LINER, *map(str, paths)], cwd=folder, check=True,
                          capture_output=True, env=os.environ | {"PYTHONPATH": str(ROOT)}).stdout
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HPSEARCH_", "MLFLOW_"))}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlruns' / 'mlflow.db'}"
    # `mlflow models serve` runs `uvicorn` by name: the venv's bin must be on PATH, as after `activate`.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/cifar10-mlp@champion",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", proc, 90)
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            P = np.asarray(json.load(r)["predictions"])
    finally:
        stop_group(proc)
        log.close()
    assert P.shape == (len(paths), len(CLASSES))
    assert [CLASSES[k] for k in P.argmax(axis=1)] == expected
    np.testing.assert_allclose(P, network(weights, raw[10:16]), rtol=1e-4, atol=1e-7)
