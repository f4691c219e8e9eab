"""`alphac mutate` through CliRunner and subprocesses: JSON, determinism across processes, the
child's model.py loading without alphac and training with `alphac train`, and failures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from alphac.cli import app

runner = CliRunner()
_KEYS = ("status", "reason", "mutation", "block", "params_parent", "params_child",
         "flops_parent", "flops_child", "seconds")
_PLAIN = """
from torch import nn

def build_model():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 10))
"""


def _mutate(tmp_path: Path, *args: str) -> dict:
    result = runner.invoke(app, ["mutate", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_mutate_json_writes_a_child(tmp_path: Path) -> None:
    out = tmp_path / "child"
    info = _mutate(tmp_path, "zoo:resnet18", "--input-shape", "2x3x16x16", "--seed", "2",
                   "--out", str(out))
    for key in _KEYS:
        assert key in info, key
    assert info["status"] == "ok" and info["reason"] is None
    assert info["mutation"] in ("rewrite", "duplicate", "delete")
    assert info["params_parent"] > 0 and info["params_child"] > 0
    assert (out / "model.py").is_file() and (out / "weights.pt").is_file()
    assert info["fingerprint_child"] != info["fingerprint_parent"]


def test_the_same_seed_gives_the_same_model_py_across_processes(tmp_path: Path) -> None:
    texts = []
    for run in ("a", "b"):
        out = tmp_path / run
        done = subprocess.run([sys.executable, "-m", "alphac", "mutate", "zoo:vit_ti4",
                               "--input-shape", "2x3x16x16", "--seed", "5", "--kind", "rewrite",
                               "--out", str(out), "--json"], capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr
        texts.append((out / "model.py").read_bytes())
    assert texts[0] == texts[1]
    other = _mutate(tmp_path, "zoo:vit_ti4", "--input-shape", "2x3x16x16", "--seed", "6",
                    "--kind", "rewrite", "--out", str(tmp_path / "c"))
    assert other["status"] == "ok"
    assert (tmp_path / "c" / "model.py").read_bytes() != texts[0]


_LOAD = """
import sys, runpy
sys.modules["alphac"] = None  # any import of alphac fails
import torch
model = runpy.run_path(sys.argv[1])["build_model"]().eval()
with torch.no_grad():
    out = model(torch.randn(2, 1, 28, 28))
print(tuple(out.shape))
"""


def test_the_child_loads_without_alphac_and_trains(tmp_path: Path) -> None:
    out = tmp_path / "child"
    info = _mutate(tmp_path, "zoo:small_cnn", "--target", "fashion-mnist", "--seed", "1",
                   "--kind", "rewrite", "--out", str(out))
    assert info["status"] == "ok"
    done = subprocess.run([sys.executable, "-c", _LOAD, str(out / "model.py")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(2, 10)"
    trained = runner.invoke(app, ["train", str(out / "model.py"), "--target", "fashion-mnist",
                                  "--subset", "1000", "--steps", "5", "--json"])
    assert trained.exit_code == 0, trained.output
    assert json.loads(trained.stdout)["status"] == "ok"


def test_a_failed_mutation_exits_non_zero_with_the_reason(tmp_path: Path) -> None:
    model = tmp_path / "plain.py"
    model.write_text(_PLAIN)
    result = runner.invoke(app, ["mutate", str(model), "--target", "fashion-mnist", "--kind",
                                 "delete", "--json", "--out", str(tmp_path / "x")])
    assert result.exit_code == 8
    info = json.loads(result.stdout)
    assert info["status"] == "failed" and "no block keeps its shape" in info["reason"]
    assert not (tmp_path / "x").exists()


def test_bad_options_are_usage_errors() -> None:
    result = runner.invoke(app, ["mutate", "zoo:small_cnn", "--mutator", "clever"])
    assert result.exit_code == 2 and "unknown mutator 'clever'" in result.output
    result = runner.invoke(app, ["mutate", "zoo:small_cnn", "--kind", "swap"])
    assert result.exit_code == 2 and "unknown mutation kind" in result.output


def test_mutate_prints_what_changed(tmp_path: Path) -> None:
    result = runner.invoke(app, ["mutate", "zoo:resnet18", "--input-shape", "2x3x16x16",
                                 "--seed", "3", "--kind", "rewrite", "--out",
                                 str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    for text in ("rewrite of layer", "selected subgraph", "target depth", "params",
                 "child code of the replaced part", "wrote"):
        assert text in result.output, text
