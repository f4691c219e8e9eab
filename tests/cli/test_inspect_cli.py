from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from alphac.cli import app
from alphac.units import format_count

runner = CliRunner()
ALPHAC = [sys.executable, "-m", "alphac"]


def run_json(*args: str) -> dict:
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_help_lists_commands():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for command in ("inspect", "zoo"):
        assert command in result.output


def test_inspect_resnet34_cifar_json():
    info = run_json("inspect", "zoo:resnet34", "--target", "cifar10")
    assert {"frontend", "nodes", "params", "flops", "input_shape", "output_shape", "blocks"} <= set(
        info
    )
    assert info["frontend"] == "fx"
    assert abs(info["params"] - 21.28e6) / 21.28e6 < 0.005
    assert info["input_shape"] == [2, 3, 32, 32] and info["output_shape"] == [2, 10]
    assert len(info["blocks"]) == 16
    assert set(info["blocks"][0]) >= {"path", "type", "nodes", "children"}
    assert info["diagnostics"] == []  # every op of ResNet-34 has exact rules
    # ResNet-34 on 32x32: about 1.16 GMAC per image = 2.32 GFLOPs, batch 2
    assert 4.4e9 < info["flops"] < 4.8e9


def test_inspect_fashion_mnist_input_and_override(model_file):
    info = run_json("inspect", "zoo:small_cnn", "--target", "fashion-mnist")
    assert info["input_shape"] == [2, 1, 28, 28]
    info = run_json("inspect", model_file("residual_net"), "--input-shape", "4x3x16x16")
    assert info["input_shape"] == [4, 3, 16, 16] and info["output_shape"] == [4, 10]


def test_inspect_table_output(model_file):
    result = runner.invoke(app, ["inspect", model_file("residual_net")])
    assert result.exit_code == 0
    assert "body.2" in result.output and "frontend" in result.output


def test_shape_branch_reports_export_frontend(model_file):
    assert run_json("inspect", model_file("shape_branch"))["frontend"] == "export"


def test_value_branch_error_as_subprocess(model_file):
    proc = subprocess.run(
        [*ALPHAC, "inspect", model_file("value_branch")], capture_output=True, text=True
    )
    assert proc.returncode == 4
    assert "value_branch.py:14" in proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout


def test_user_errors_exit_nonzero_without_traceback(model_file, tmp_path):
    cases = [
        (["inspect", str(tmp_path / "missing.py")], 3, "no model file"),
        (["inspect", "zoo:resnet34", "--target", "mars"], 2, "unknown target"),
        (["inspect", "zoo:nope"], 3, "resnet18"),
        (["inspect", model_file("residual_net"), "--input-shape", "abc"], 2, "input shape"),
        (["inspect", model_file("ambiguous")], 3, "build_model"),
    ]
    for args, code, fragment in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == code, (args, result.output)
        assert fragment in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_json_subprocess_is_pure_json():
    proc = subprocess.run(
        [*ALPHAC, "inspect", "zoo:small_cnn", "--target", "fashion-mnist", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    info = json.loads(proc.stdout)
    assert info["output_shape"] == [2, 10]


def test_zoo_lists_models():
    info = run_json("zoo")
    names = {m["name"] for m in info["models"]}
    assert {"zoo:resnet34", "zoo:vit_s16", "zoo:small_cnn"} <= names


def test_console_script_installed():
    script = Path(sys.executable).parent / "alphac"
    proc = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "inspect" in proc.stdout


def test_inspect_and_measure_report_the_same_cost_as_the_flop_counter():
    import torch

    from alphac.frontends import load
    from alphac.ir import count_params, flop_counter_flops

    info = run_json("inspect", "zoo:small_cnn", "--target", "fashion-mnist")
    measured = run_json("measure", "zoo:small_cnn", "--target", "fashion-mnist", "--repeats", "1")
    traced = load("zoo:small_cnn", (1, 1, 28, 28), num_classes=10)
    counted = flop_counter_flops(traced.gm, (torch.randn(1, 1, 28, 28),))
    assert info["flops_per_sample"] == measured["flops"] == counted
    assert info["params"] == measured["params"] == count_params(traced.module)
    assert "B*H*W" in info["flops_expr"]
    assert "C" not in info["flops_expr"]  # a grey input: its one channel stays a constant


def test_inspect_shows_the_block_tree():
    info = run_json("inspect", "zoo:vit_ti4")
    assert len(info["blocks"]) == 12
    first = info["blocks"][0]
    assert first["path"] == "blocks.0" and first["type"].startswith("Block#")
    assert [c["path"] for c in first["children"]] == ["blocks.0.attn", "blocks.0.mlp"]
    assert all(c["nodes"] < first["nodes"] and c["children"] == [] for c in first["children"])
    result = runner.invoke(app, ["inspect", "zoo:vit_ti4"])
    assert result.exit_code == 0, result.output
    assert "12 blocks (24 inner, indented)" in result.output
    assert "└ blocks.0.attn" in result.output and "└ blocks.11.mlp" in result.output


def test_inspect_reports_ops_without_exact_rules_once(model_file):
    args = ["inspect", model_file("unknown_op"), "--input-shape", "2x3x16x16"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)  # stdout stays pure JSON; the notes go to stderr
    found = {(d["analysis"], d["op"]): d for d in info["diagnostics"]}
    assert set(found) == {("shape", "flip"), ("shape", "cumsum")}
    assert found["shape", "cumsum"]["count"] == 2 and found["shape", "cumsum"]["blocks"] == [
        "<model>"]
    assert "note: 2 ops have no exact rule" in result.stderr
    assert result.stderr.count("'cumsum'") == 1
    assert "UserWarning" not in result.stderr and "Warning" not in result.stdout
    assert [b["path"] for b in info["blocks"]] == ["body.0", "body.1", "body.2", "body.3"]


SIXTEEN_SCORES = """
from torch import nn


def build_model():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, {classes}))
"""


def _scores_model(tmp_path: Path, classes: int) -> str:
    path = tmp_path / f"scores_{classes}.py"
    path.write_text(SIXTEEN_SCORES.format(classes=classes))
    return str(path)


def test_inspect_warns_when_the_output_does_not_fit_the_target(tmp_path):
    model = _scores_model(tmp_path, 16)
    result = runner.invoke(app, ["inspect", model, "--target", "cifar10"])
    assert result.exit_code == 0, result.output  # inspect still shows what it sees
    text = " ".join(result.stderr.split())
    assert text.startswith(f"warning: {model} outputs a tensor of shape 2x16, but target "
                           "cifar10 needs (batch, 10): 16 scores per image for 10 classes"), text
    assert "hint: make its last layer produce 10 outputs" in text
    assert "nn.Linear(..., 10)" in text and "num_classes=10" in text
    assert "frontend" in result.stdout and "warning" not in result.stdout
    # the same check as optimize's: the message is the one optimize refuses the model with
    refused = runner.invoke(app, ["optimize", model, "--target", "cifar10", "--candidates", "1",
                                  "--out", str(tmp_path / "run")])
    assert refused.exit_code == 3
    refusal = " ".join(refused.stderr.split()).removeprefix("error: ")
    assert refusal.split(" hint: ")[0] in text


def test_inspect_json_stays_pure_and_names_a_target_that_fits(tmp_path):
    result = runner.invoke(app, ["inspect", _scores_model(tmp_path, 100), "--target", "cifar10",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["output_shape"] == [2, 100]
    assert "100 scores per image for 10 classes" in result.stderr
    assert "or use --target cifar100" in " ".join(result.stderr.split())


def test_inspect_says_nothing_of_an_output_that_fits(tmp_path):
    result = runner.invoke(app, ["inspect", _scores_model(tmp_path, 10), "--target", "cifar10"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output


def test_inspect_labels_flops_per_image_and_per_example_batch():
    result = runner.invoke(app, ["inspect", "zoo:small_cnn", "--target", "fashion-mnist",
                                 "--input-shape", "4x1x28x28"])
    assert result.exit_code == 0, result.output
    info = run_json("inspect", "zoo:small_cnn", "--target", "fashion-mnist", "--input-shape",
                    "4x1x28x28")
    assert info["flops"] == 4 * info["flops_per_sample"]
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in result.stdout.splitlines() if line.count("│") == 3}
    assert rows["FLOPs (per image)"] == format_count(info["flops_per_sample"]) == "43.81M"
    assert rows["FLOPs (example batch of 4)"] == format_count(info["flops"])
    assert "at this input" not in result.stdout and "/sample" not in result.stdout
