from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from alphac.cli import app

runner = CliRunner()
ALPHAC = Path(sys.executable).parent / "alphac"


def run_json(*args: str) -> dict:
    result = runner.invoke(app, ["properties", *args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_small_cnn_json_has_every_property_with_check():
    info = run_json("zoo:small_cnn", "--target", "fashion-mnist", "--check")
    assert info["input_shape"] == [2, 1, 28, 28] and "note" not in info
    blocks = info["blocks"]
    assert [b["path"] for b in blocks] == ["features.0", "features.1", "features.3",
                                           "features.4", "features.6"]
    second = blocks[1]
    assert set(second) >= {"path", "type", "inputs", "outputs", "depth", "mixing", "params",
                           "flops", "params_expr", "flops_expr"}
    assert second["inputs"] == [{"shape": ["B", "C", "H", "W"], "concrete": [2, 32, 28, 28],
                                 "layout": "NCHW", "dims": ["B", "C", "H", "W"]}]
    assert second["outputs"][0]["shape"] == ["B", "C", "H", "W"]
    assert second["params"] == 32 * 32 * 9 + 2 * 32 and second["params_expr"] == "9*C**2 + 2*C"
    assert second["flops"] == 2 * 2 * 28 * 28 * 32 * 32 * 9
    assert second["depth"] == {"0->0": 2}
    rows = second["mixing"]["0->0"]
    assert len(rows) == 4 and rows[1] == ["all", "all", "all", "all"]  # C mixes into everything
    assert all(b["check"] == [] for b in blocks)
    assert info["diagnostics"] == []
    # the model's input: a grey image, its one channel a constant, named by its layout letter
    assert info["blocks"][0]["inputs"][0]["dims"] == ["B", "C", "H", "W"]


def test_block_selection_and_tables():
    info = run_json("zoo:resnet18", "--block", "layer2.0")
    (block,) = info["blocks"]
    assert block["path"] == "layer2.0" and block["type"].startswith("BasicBlock")
    assert block["outputs"][0]["shape"] == ["B", "2*C", "floor(H/2 - 1/2) + 1",
                                            "floor(W/2 - 1/2) + 1"]
    assert block["outputs"][0]["concrete"] == [2, 128, 16, 16]
    result = runner.invoke(app, ["properties", "zoo:resnet18", "--block", "layer1.1"])
    assert result.exit_code == 0, result.output
    for text in ("layer1.1", "BasicBlock", "mixing", "18*C**2 + 4*C", "NCHW"):
        assert text in result.output


def test_bad_block_lists_the_valid_paths():
    result = runner.invoke(app, ["properties", "zoo:small_cnn", "--block", "features.9"])
    assert result.exit_code == 2
    assert "features.9" in result.output and "features.0, features.1" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_model_without_blocks_is_one_pseudo_block(model_file):
    info = run_json(model_file("shape_branch"), "--input-shape", "2x3x16x16")
    assert "whole model" in info["note"]
    (block,) = info["blocks"]
    assert block["path"] == "" and block["outputs"][0]["concrete"] == [2, 10]


def test_check_failure_exits_one(monkeypatch):
    from alphac.passes.analysis import ground_truth

    monkeypatch.setattr(ground_truth, "check_mixing",
                        lambda gm, sub, am, **kw: ["dim 2 -> dim 2: abstract many, Jacobian all"])
    result = runner.invoke(app, ["properties", "zoo:small_cnn", "--block", "features.1",
                                 "--check"])
    assert result.exit_code == 1
    assert "abstract many, Jacobian all" in result.output


def test_resnet18_check_passes_as_a_subprocess():
    proc = subprocess.run(
        [str(ALPHAC), "properties", "zoo:resnet18", "--target", "cifar10", "--json", "--check"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert len(info["blocks"]) == 8 and all(b["check"] == [] for b in info["blocks"])
    assert sum(b["params"] for b in info["blocks"]) < 11.2e6



def test_mixing_rows_are_named_by_the_dims_the_shapes_use():
    from alphac.cli.properties_cmd import dim_names
    from alphac.symbols import dim

    b, c, h = dim("B"), dim("C"), dim("H")
    assert dim_names((b, 2 * c, (h - 1) // 2 + 1, 7), "NCHW") == ["B", "C", "H", "W"]
    assert dim_names((b, 5, c), "NLC") == ["B", "N", "C"]
    assert dim_names((b * c, 3), "??") == ["d0", "d1"]
    info = run_json("zoo:vit_ti4", "--block", "blocks.0")
    (block,) = info["blocks"]
    assert block["inputs"][0]["dims"] == block["outputs"][0]["dims"] == ["B", "N", "C"]
    result = runner.invoke(app, ["properties", "zoo:vit_ti4", "--block", "blocks.0"])
    assert result.exit_code == 0, result.output
    # batch is B (one-to-one), tokens N and channels C mix into every token and channel
    assert "0->0 (B,N,C)  B:1..  N:AAA  C:AAA" in result.output
    (inner,) = run_json("zoo:vit_ti4", "--block", "blocks.0.attn")["blocks"]  # an inner level
    assert inner["type"].startswith("Attention#")


def test_properties_report_ops_without_exact_rules_per_block(model_file):
    args = ["properties", model_file("unknown_op"), "--input-shape", "2x3x16x16"]
    result = runner.invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    found = {(d["analysis"], d["op"]): d for d in info["diagnostics"]}
    assert {("shape", "cumsum"), ("mixing", "cumsum")} <= set(found)
    assert found["shape", "cumsum"]["blocks"] == ["body.0", "body.2"]  # the Scan blocks only
    assert ("shape", "flip") not in found  # flip runs in the stem, outside every block
    assert result.stderr.startswith("note: 1 op has no exact rule; these blocks are "
                                    "conservative: body.0, body.2")
    table = runner.invoke(app, args)
    assert table.exit_code == 0 and table.stderr.count("note:") == 1
