"""`alphac train`, `alphac measure` and `alphac data` through typer's CliRunner and a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from alphac.cli import app

runner = CliRunner()


def test_train_small_cnn_on_real_fashion_mnist_json():
    result = runner.invoke(app, ["train", "zoo:small_cnn", "--target", "fashion-mnist",
                                 "--subset", "2000", "--steps", "60", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)  # progress goes to stderr: stdout is one JSON object
    for key in ("val_accuracy", "test_accuracy", "params", "flops", "seconds",
                "images_per_second"):
        assert info[key] is not None, key
    assert info["status"] == "ok" and info["steps"] == 60
    assert info["params"] == 140458 and 40e6 < info["flops"] < 50e6
    assert info["val_accuracy"] > 0.4 and info["test_accuracy"] > 0.4  # chance: 0.1
    assert info["recipe"]["subset"] == 2000


@pytest.mark.parametrize(
    "args,message",
    [
        (["--budget", "abc"], "--budget 'abc' is not a duration"),
        (["--subset", "0"], "subset must be a positive"),
        (["--steps", "5", "--budget", "5m"], "give one budget"),
        (["--device", "tpu"], "unknown device"),
        (["--target", "cifar11"], "unknown target 'cifar11'"),
        (["--data-dir", "/nonexistent/alphac"], "looked for train-images-idx3-ubyte"),
    ],
)
def test_bad_train_input_exits_nonzero_without_a_traceback(args, message):
    base = ["train", "zoo:small_cnn", "--target", "fashion-mnist", "--steps", "1"]
    result = runner.invoke(app, [*base, *args])
    assert result.exit_code != 0
    text = " ".join(result.output.split())
    assert message in text, text
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on GPU machines
    result = runner.invoke(app, ["train", "zoo:small_cnn", "--target", "fashion-mnist",
                                 "--device", "cuda"])
    assert result.exit_code == 2 and "CUDA is not available" in result.output


def test_measure_json():
    result = runner.invoke(app, ["measure", "zoo:small_cnn", "--target", "fashion-mnist",
                                 "--device", "cpu", "--repeats", "2", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["params"] == 140458 and info["latency_ms"] > 0 and info["throughput"] > 0
    assert info["input_shape"] == [1, 28, 28] and info["flops"] > 0


def test_data_info_finds_fashion_mnist():
    result = runner.invoke(app, ["data", "info", "fashion-mnist", "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["train_images"] == 60000 and info["test_images"] == 10000
    assert info["found"] is not None


def test_data_fetch_says_what_to_do_when_it_cannot_download(tmp_path):
    result = runner.invoke(app, ["data", "fetch", "mnist", "--data-dir", str(tmp_path)])
    assert result.exit_code == 5
    assert "does not download mnist" in result.output and "hint" in result.output


def test_train_subprocess_errors_have_no_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "alphac", "train", "zoo:small_cnn", "--target", "mnist",
         "--data-dir", str(tmp_path), "--steps", "1"],
        capture_output=True, text=True, timeout=120,
        env={"HOME": str(tmp_path)},
    )
    assert proc.returncode == 5
    assert "Traceback" not in proc.stderr
    assert "could not download" in proc.stderr or "not found" in proc.stderr
    assert proc.stdout == ""


NAN_MODEL = '''
import torch
from torch import nn


class NaNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        return self.fc(torch.flatten(x, 1)) * float("nan")


def build_model():
    return NaNNet()
'''


def test_diverging_training_exits_6_and_still_prints_its_json(tmp_path):
    path = tmp_path / "nan_model.py"
    path.write_text(NAN_MODEL)
    result = runner.invoke(app, ["train", str(path), "--target", "synthetic", "--steps", "5",
                                 "--subset", "300", "--json"])
    assert result.exit_code == 6
    info = json.loads(result.stdout)
    assert info["status"] == "diverged" and info["diverged_at_step"] == 1
    assert info["val_accuracy"] is None
    assert "NaN" in result.stderr and "Traceback" not in result.output
