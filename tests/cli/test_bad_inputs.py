"""The bad-input catalogue: each mistake a user can make gets one clear message (what, where, how
to fix), its documented exit code and no traceback, unless `alphac --debug` asks for one.

Tiny models written to tmp_path; `--target synthetic` where data is not the point; nothing trains
beyond a step.
"""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from alphac import errors
from alphac.cli import app

runner = CliRunner()
ALPHAC = str(Path(sys.executable).parent / "alphac")
# Should an optimize test get past its error by mistake, the search it starts is a short one.
FAST_SEARCH = ["--executor", "inline", "--steps", "1", "--subset", "64", "--val-images", "64",
               "--test-images", "64", "--final-steps", "1",
               "--candidates", "1"]

TINY = """
from torch import nn


def build_model():
    return nn.Sequential(nn.Conv2d({channels}, 4, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, {classes}))
"""
MODELS = {
    "tiny": TINY.format(channels=3, classes=10),
    "grey": TINY.format(channels=1, classes=10),
    "seven_classes": TINY.format(channels=3, classes=7),
    "feature_map": "from torch import nn\n\n\ndef build_model():\n"
                   "    return nn.Conv2d(3, 10, 3, padding=1)\n",
    "syntax": "from torch import nn\n\n\ndef build_model(:\n    return nn.Identity()\n",
    "imports": "from torch import nn\nimport not_a_real_package_xyz\n",
    "uses_broken": "import importlib.util\nfrom pathlib import Path\n\n"
                   "spec = importlib.util.spec_from_file_location(\n"
                   "    'helper', Path(__file__).with_name('broken_helper.py'))\n"
                   "spec.loader.exec_module(importlib.util.module_from_spec(spec))\n",
    "uses_sibling": "import broken_helper\n",
    "broken_helper": "def build(:\n    pass\n",
    "empty": "WIDTH = 4\n",
    "ambiguous": "from torch import nn\n\n\nclass A(nn.Module):\n    pass\n\n\n"
                 "class B(nn.Module):\n    pass\n",
    "needs_args": "from torch import nn\n\n\nclass Net(nn.Module):\n"
                  "    def __init__(self, width):\n        super().__init__()\n",
    "init_raises": "from torch import nn\n\n\nclass Net(nn.Module):\n"
                   "    def __init__(self):\n        super().__init__()\n"
                   "        raise ValueError('width must be even')\n",
    "builder_raises": "def build_model():\n    return {}['weights']\n",
    "value_branch": """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        if x.sum() > 0:
            x = x * 2
        return self.fc(x.flatten(1))
""",
}


@pytest.fixture
def model(tmp_path: Path):
    """Write MODELS[name] to tmp_path/name.py (and any helper it names); return its path."""

    def write(name: str) -> str:
        path = tmp_path / f"{name}.py"
        path.write_text(MODELS[name])
        if name.startswith("uses_"):
            (tmp_path / "broken_helper.py").write_text(MODELS["broken_helper"])
        return str(path)

    return write


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def assert_error(result, code: int, *fragments: str) -> str:
    """Exit ``code``; an ``error:`` and a ``hint:`` line on stderr holding every fragment; no
    traceback and no exception escaping. Returns stderr with whitespace normalized."""
    text = " ".join(result.stderr.split())
    assert result.exit_code == code, (result.exit_code, result.output)
    assert text.startswith("error: ") and " hint: " in text, text
    for fragment in fragments:
        assert fragment in text, (fragment, text)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return text


# 1 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", [["inspect"], ["train", "--target", "synthetic"],
                                     ["mutate"], ["measure"]])
def test_missing_model_file(tmp_path, command):
    missing = tmp_path / "nowhere" / "model.py"
    result = invoke(command[0], missing, *command[1:])
    assert_error(result, 3, f"no model file at {missing}", "zoo:NAME")


# 2 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "fragments"), [
    ("syntax", ["syntax.py:4:17: syntax error", "`def build_model(:`", "fix the Python syntax"]),
    ("imports", ["imports.py:2", "ModuleNotFoundError", "not_a_real_package_xyz",
                 "install the package"]),
    ("uses_broken", ["importing", "uses_broken.py failed: ", "broken_helper.py:1:11: syntax error"]),
    ("uses_sibling", ["uses_sibling.py:1", "No module named 'broken_helper'",
                      "without its folder on the import path"]),
])
def test_syntax_or_import_error_names_file_and_line(model, name, fragments):
    assert_error(invoke("inspect", model(name)), 3, *fragments)


# 3 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "fragments"), [
    ("empty", ["defines no model", "no build_model()", "`model = MyNet()`"]),
    ("ambiguous", ["several nn.Module classes", "A, B", "def build_model(): return A()"]),
    ("needs_args", ["cannot build its model without arguments", "Net", "return Net(...)"]),
])
def test_no_model_or_an_ambiguous_one(model, name, fragments):
    assert_error(invoke("inspect", model(name)), 3, f"{name}.py", *fragments)


# 4 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "fragments"), [
    ("init_raises", ["Net() in", "init_raises.py:7", "ValueError: width must be even",
                     "fix Net.__init__"]),
    ("builder_raises", ["build_model() in", "builder_raises.py:2", "KeyError: 'weights'",
                        "fix build_model()"]),
])
def test_a_constructor_that_raises(model, name, fragments):
    assert_error(invoke("train", model(name), "--target", "synthetic", "--steps", "1"), 3,
                 *fragments, "--debug")


# 5 -------------------------------------------------------------------------------------------
def test_an_untraceable_forward(model):
    text = assert_error(invoke("mutate", model("value_branch")), 4,
                        "cannot capture Net as a graph", "value_branch.py:12",
                        "`if x.sum() > 0:`", "torch.where")
    assert "torch.fx:" in text and "torch.export:" in text


# 6 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "fragments"), [
    ("seven_classes", ["a tensor of shape 2x7", "nn.Linear(..., 10)"]),
    ("feature_map", ["a tensor of shape 2x10x32x32", "nn.Flatten()"]),
])
def test_an_output_that_is_not_batch_by_classes(model, name, fragments):
    result = invoke("train", model(name), "--target", "synthetic", "--steps", "1")
    assert_error(result, 3, f"{name}.py outputs", "target synthetic needs (batch, 10)",
                 *fragments)


def test_an_output_that_is_not_batch_by_classes_from_the_python_api():
    from alphac.runtime.targets import get_target
    from alphac.runtime.train import train_and_evaluate

    recipe = get_target("synthetic").recipe.replace(steps=1, batch_size=4, subset=16)
    with pytest.raises(errors.OutputShapeError, match=r"4x7, but target synthetic") as info:
        train_and_evaluate(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3072, 7)),
                           "synthetic", recipe)
    assert info.value.exit_code == 3 and "nn.Linear(..., 10)" in info.value.hint


def test_optimize_refuses_an_output_that_is_not_batch_by_classes(model, tmp_path):
    result = invoke("optimize", model("seven_classes"), "--target", "synthetic", *FAST_SEARCH,
                    "--out", tmp_path / "run")
    assert_error(result, 3, "seven_classes.py outputs a tensor of shape 2x7")
    assert not (tmp_path / "run").exists()


# 7 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "fragments"), [
    (["inspect", "{tiny}", "--input-shape", "2x1x28x28"],
     ["fails on an input of shape 2x1x28x28", "to have 3 channels", "--input-shape"]),
    (["train", "{tiny}", "--target", "mnist", "--steps", "1"],
     ["target mnist feeds 1x28x28 images", "to have 3 channels", "pick the --target"]),
    (["inspect", "{tiny}", "--input-shape", "2x3xbig"], ["cannot read the input shape"]),
])
def test_an_input_shape_the_model_rejects(model, args, fragments):
    assert_error(invoke(*(a.format(tiny=model("tiny")) for a in args)), 2, *fragments)


# 8 -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["inspect", "train", "mutate", "optimize"])
def test_unknown_target(model, tmp_path, command):
    extra = {"mutate": ["--out", tmp_path / "run"],
             "optimize": ["--out", tmp_path / "run", *FAST_SEARCH]}.get(command, [])
    result = invoke(command, model("tiny"), "--target", "cifar11", *extra)
    assert_error(result, 2, "unknown target 'cifar11' (did you mean cifar10?)",
                 "fashion-mnist, mnist")


# 9 -------------------------------------------------------------------------------------------
def _writers():
    path = Path(__file__).parents[1] / "runtime" / "dataset_writers.py"
    spec = importlib.util.spec_from_file_location("bad_inputs_dataset_writers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _mnist(folder: Path, *, skip: tuple[str, ...] = (), images: int = 8) -> None:
    write_idx = _writers().write_idx
    rng = np.random.default_rng(0)
    for split, n in (("train", images), ("t10k", 4)):
        if f"{split}-images" not in skip:
            write_idx(folder / f"{split}-images-idx3-ubyte",
                      rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        if f"{split}-labels" not in skip:
            write_idx(folder / f"{split}-labels-idx1-ubyte",
                      rng.integers(0, 10, (n,), dtype=np.uint8))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:40])


DATASETS = {
    "empty folder": ("mnist", lambda d: None,
                     ["mnist data not found", "train-images-idx3-ubyte", "--data-dir"]),
    "partial": ("mnist", lambda d: _mnist(d, skip=("t10k-images", "t10k-labels")),
                ["is incomplete", "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] "
                 "missing", "copy the missing files"]),
    "truncated gzip": ("mnist", lambda d: (_mnist(d),
                                           _truncate(d / "train-images-idx3-ubyte.gz")),
                       ["cannot read", "train-images-idx3-ubyte.gz", "fetch the dataset again"]),
    "not IDX": ("mnist", lambda d: (_mnist(d), (d / "t10k-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(b"<html>404</html>"))),
                ["t10k-labels-idx1-ubyte.gz is not an IDX file", "bad magic number"]),
    "labels do not match": ("mnist", lambda d: (_mnist(d), _writers().write_idx(
        d / "train-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))),
                            ["have shapes (8, 28, 28) and (5,)", "--data-dir"]),
    "corrupt CIFAR batch": ("cifar10", lambda d: (
        _writers().write_cifar(d, per_batch=4),
        (d / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x02garbage")),
                            ["data_batch_3 is corrupt or not a CIFAR batch file",
                             "fetch the dataset again"]),
}


@pytest.mark.parametrize("case", list(DATASETS))
def test_missing_partial_or_corrupt_dataset(model, tmp_path, case):
    target, make, fragments = DATASETS[case]
    data = tmp_path / "data"
    data.mkdir()
    make(data)
    name = "grey" if target == "mnist" else "tiny"
    result = invoke("train", model(name), "--target", target, "--data-dir", data,
                    "--steps", "1", "--subset", "8")
    assert_error(result, 5, str(data), *fragments)


# 10 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["mutate", "optimize"])
@pytest.mark.parametrize("where", ["under a file", "at a file"])
def test_an_unwritable_run_directory(model, tmp_path, command, where):
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    out = a_file / "run" if where == "under a file" else a_file
    extra = FAST_SEARCH if command == "optimize" else []
    result = invoke(command, model("tiny"), "--target", "synthetic", "--out", out, *extra)
    text = assert_error(result, 2, str(out), "--out")
    assert "file, not a folder" in text or "Not a directory" in text
    assert a_file.read_text() == "not a folder"


def test_an_unwritable_run_directory_is_refused_before_the_work(model, tmp_path, monkeypatch):
    import alphac.passes.transform.mutate as mutation

    def no_mutation(*args, **kwargs):
        raise AssertionError("mutated although --out cannot be written")

    monkeypatch.setattr(mutation, "mutate", no_mutation)
    (tmp_path / "a_file").write_text("")
    result = invoke("mutate", model("tiny"), "--out", tmp_path / "a_file" / "child")
    assert_error(result, 2, f"{tmp_path / 'a_file'} is a file, not a folder")


# 11 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("command", "device", "fragments"), [
    ("train", "cuda", ["--device cuda was asked for but CUDA is not available", "--device cpu"]),
    ("train", "cuda:3", ["--device cuda:3 was asked for", "--device cpu"]),
    ("train", "tpu", ["unknown device 'tpu'", "cpu, cuda"]),
    ("measure", "tpu", ["unknown device 'tpu'", "cpu, cuda"]),
    ("optimize", "tpu", ["unknown device 'tpu'"]),
    ("optimize", "cuda", ["CUDA is not available"]),
])
def test_a_device_that_does_not_exist(model, tmp_path, monkeypatch, command, device, fragments):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on GPU machines
    extra = ["--out", tmp_path / "run", *FAST_SEARCH] if command == "optimize" else []
    result = invoke(command, model("tiny"), "--target", "synthetic", "--device", device, *extra)
    assert_error(result, 2, *fragments)


def test_optimize_checks_the_device_before_making_the_run(model, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = tmp_path / "run"
    result = invoke("optimize", model("tiny"), "--target", "synthetic", "--device", "cuda",
                    *FAST_SEARCH, "--out", out)
    assert_error(result, 2, "CUDA is not available")
    assert not (out / "journal.sqlite").exists()  # else a rerun says "already holds a run"


# 12 ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("args", "fragments"), [
    (["--candidates", "0"], ["--candidates must be at least 1", "got 0"]),
    (["--candidates", "-1"], ["--candidates must be at least 1", "got -1"]),
    (["--objective", "foo"], ["--objective must be one of params, flops, latency", "'foo'"]),
    (["--max-accuracy-drop", "-1"], ["--max-accuracy-drop must be", "got -1"]),
    (["--workers", "0"], ["--workers must be at least 1", "got 0"]),
])
def test_invalid_search_settings(model, tmp_path, args, fragments):
    out = tmp_path / "run"
    result = invoke("optimize", model("tiny"), "--target", "synthetic", "--out", out,
                    *FAST_SEARCH, *args)
    assert_error(result, 2, *fragments, "alphac optimize --help")
    assert not out.exists()


# internal errors and --debug -----------------------------------------------------------------
def _break_cost_analysis(monkeypatch):
    import alphac.passes.analysis.cost as cost

    def broken(*args, **kwargs):
        raise RuntimeError("the cost analysis\nbroke")

    monkeypatch.setattr(cost, "model_cost", broken)


def test_an_internal_error_is_one_line_and_exit_1(model, monkeypatch):
    _break_cost_analysis(monkeypatch)
    result = invoke("inspect", model("tiny"))
    assert result.exit_code == 1
    assert result.stderr.strip() == ("internal error: RuntimeError: the cost analysis broke; "
                                     "rerun with --debug for the traceback, and please report it")
    assert isinstance(result.exception, SystemExit)


def test_debug_re_raises_with_the_traceback(model, monkeypatch, tmp_path):
    result = invoke("--debug", "inspect", tmp_path / "missing.py")
    assert isinstance(result.exception, errors.ModelLoadError) and result.exit_code == 1
    _break_cost_analysis(monkeypatch)
    result = invoke("--debug", "inspect", model("tiny"))
    assert isinstance(result.exception, RuntimeError) and "broke" in str(result.exception)
    assert invoke("inspect", tmp_path / "missing.py").exit_code == 3  # --debug does not stick


SUBPROCESS_CASES = [
    (["inspect", "{missing}"], 3, "no model file at"),
    (["inspect", "{syntax}"], 3, "syntax.py:4:17: syntax error"),
    (["train", "{tiny}", "--target", "mars"], 2, "unknown target 'mars'"),
]


@pytest.mark.parametrize(("args", "code", "fragment"), SUBPROCESS_CASES)
def test_errors_in_a_real_process_have_no_traceback(model, tmp_path, args, code, fragment):
    paths = {"missing": tmp_path / "missing.py", "syntax": model("syntax"), "tiny": model("tiny")}
    proc = subprocess.run([ALPHAC, *(a.format(**paths) for a in args)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == code, proc.stderr
    assert fragment in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_debug_in_a_real_process_shows_the_traceback(model):
    proc = subprocess.run([ALPHAC, "--debug", "inspect", model("init_raises")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert "ValueError: width must be even" in proc.stderr  # the cause in the user's code, too
    assert "alphac.errors.ModelLoadError: Net() in" in proc.stderr


# the Python API and the docs -----------------------------------------------------------------
def test_the_python_api_raises_the_messages_the_cli_prints(model, tmp_path):
    from alphac.cli.common import check_out_dir
    from alphac.frontends import load_module
    from alphac.runtime.datasets import load_dataset
    from alphac.runtime.device import resolve_device
    from alphac.runtime.targets import get_target

    (tmp_path / "a_file").write_text("")
    cases = [
        (lambda: load_module(str(tmp_path / "missing.py")), errors.ModelLoadError,
         ["inspect", tmp_path / "missing.py"]),
        (lambda: get_target("cifar11"), errors.UnknownTargetError,
         ["inspect", "zoo:small_cnn", "--target", "cifar11"]),
        (lambda: resolve_device("tpu"), errors.DeviceError,
         ["measure", "zoo:small_cnn", "--device", "tpu"]),
        (lambda: load_dataset("mnist", tmp_path), errors.DatasetError,
         ["train", "zoo:small_cnn", "--target", "mnist", "--data-dir", tmp_path, "--steps", "1"]),
        (lambda: check_out_dir(tmp_path / "a_file"), errors.RunDirError,
         ["mutate", "zoo:small_cnn", "--out", tmp_path / "a_file"]),
    ]
    for call, kind, cli in cases:
        with pytest.raises(kind) as info:
            call()
        text = " ".join(invoke(*cli).stderr.split())
        assert f"error: {info.value.message} hint: {info.value.hint}" in text, (kind, text)


def test_every_user_error_is_in_the_exit_code_table():
    table = (Path(__file__).parents[2] / "docs" / "errors.md").read_text()
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.UserError)]
    assert len(classes) >= 12
    for cls in classes:
        row = next((line for line in table.splitlines() if f"`{cls.__name__}`" in line), None)
        assert row is not None, cls.__name__
        assert row.startswith(f"| {cls.exit_code} |"), (cls.__name__, row)
        assert cls.__name__ in (errors.__doc__ or "") or cls is errors.UserError
