"""Pipeline fuzz: trace -> properties -> select -> synthesize -> splice -> gates -> codegen.

Hypothesis draws a subject (a zoo model at 2x3x16x16 or 2x1x20x20, or a random small model from
tests/fuzz/models.py), a frontend (torch.fx, or torch.export one time in four), a seed and a
mutation config (the default, or splicing into every instance, or chain-only selection). The
parent's blocks (inner levels too) and the whole model get every analysis; then each mutator
(``property``, ``random``) makes a child, and half the time the first child, its blocks found
again as the search does, is mutated once more. Invariants: no exception but
:class:`~alphac.errors.SynthesisFailed` anywhere (no other UserError either: every model drawn
here is supported, so a refusal would be a bug too); the parent is unchanged; a child's
fingerprint differs from its parent's, its output shape is the parent's, and its ``model.py``
from :func:`alphac.codegen.generate_code` runs in a fresh namespace, takes the child's state
dict (strictly) and computes the child's eval output.

``ALPHAC_FUZZ_EXAMPLES`` sets the number of examples (25 in the suite; ``bench/fuzz_pipeline.sh``
runs 1000); with ``ALPHAC_FUZZ_REPORT=PATH`` the counts are written to PATH as JSON at the end.
"""

from __future__ import annotations

import collections
import json
import os
import types
from dataclasses import dataclass

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import fx

from alphac.analysis import AnalysisManager
from alphac.codegen import generate_code
from alphac.errors import SynthesisFailed
from alphac.frontends import EXPORT, FX, find_blocks, trace, zoo
from alphac.frontends.blocks import walk_blocks
from alphac.frontends.trace import _export, follow_mode_in_export
from alphac.ir import Subgraph, annotate_shapes
from alphac.modes import training_mode
from alphac.passes.analysis import CostAnalysis, DepthAnalysis, MixingAnalysis, ShapeAnalysis
from alphac.passes.transform.gates import annotated_output_shape, model_fingerprint
from alphac.passes.transform.mutate import MutationConfig, mutate
from alphac.rewriter import graph_version
from fuzz.models import ModelSpec, build, example_input, model_specs

EXAMPLES = int(os.environ.get("ALPHAC_FUZZ_EXAMPLES", "25"))
ZOO_INPUTS = ((2, 3, 16, 16), (2, 1, 20, 20))
#: Zoo parents kept traced at once (the largest hold about 100 MB of weights each).
ZOO_CACHE = 6
MUTATORS = ("property", "random")
#: What the run saw; ALPHAC_FUZZ_REPORT gets it (bench/fuzz_pipeline.sh writes the results).
TALLY: collections.Counter[str] = collections.Counter()
#: SynthesisFailed reasons (their first 100 characters), for the report.
REASONS: collections.Counter[str] = collections.Counter()


@dataclass(frozen=True)
class Subject:
    """What to trace: a zoo name and input shape or a random model's spec, and the frontend."""

    zoo_name: str | None
    spec: ModelSpec | None
    frontend: str
    zoo_input: tuple[int, ...] = ZOO_INPUTS[0]


@dataclass
class Parent:
    gm: fx.GraphModule
    blocks: list
    example: tuple[torch.Tensor, ...]
    output_shape: tuple[int, ...]


@st.composite
def subjects(draw) -> Subject:
    """Random models three times in four (shrinking goes to them), torch.fx three in four."""
    frontend = draw(st.sampled_from((FX, FX, FX, EXPORT)))
    if draw(st.integers(0, 3)) < 3:
        return Subject(None, draw(model_specs()), frontend)
    return Subject(draw(st.sampled_from(zoo.names())), None, frontend,
                   draw(st.sampled_from(ZOO_INPUTS)))


@st.composite
def configs(draw) -> MutationConfig:
    """The default mix, sometimes splicing into every instance or selecting chains only."""
    return MutationConfig(other_instances_p=draw(st.sampled_from((0.2, 1.0))),
                          sequential=draw(st.booleans()))


_ZOO_PARENTS: dict[tuple[str, str, tuple[int, ...]], Parent] = {}


def _parent(subject: Subject) -> Parent:
    """The traced, shape-annotated parent (zoo models traced once per session: mutate never
    changes its parent, which the test checks)."""
    key = (subject.zoo_name or "", subject.frontend, subject.zoo_input)
    if subject.zoo_name is not None and key in _ZOO_PARENTS:
        return _ZOO_PARENTS[key]
    if subject.zoo_name is not None:
        shape = subject.zoo_input
        model = zoo.build(subject.zoo_name, num_classes=10, input_shape=shape[1:]).eval()
        x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    else:
        model, x = build(subject.spec), example_input(subject.spec)
    if subject.frontend == FX:
        gm, used = trace(model, (x,))
    else:
        gm, used = follow_mode_in_export(_export(model, (x,))), EXPORT
    annotate_shapes(gm, (x,))
    blocks = find_blocks(gm, model if used == FX else None)
    with torch.no_grad():
        shape = tuple(model(x).shape)
    assert annotated_output_shape(gm) == shape
    parent = Parent(gm, blocks, (x,), shape)
    if subject.zoo_name is not None:
        if len(_ZOO_PARENTS) >= ZOO_CACHE:
            del _ZOO_PARENTS[next(iter(_ZOO_PARENTS))]
        _ZOO_PARENTS[key] = parent
    return parent


def _infer_all(gm: fx.GraphModule, blocks: list) -> None:
    """Every analysis on every block (inner levels too) and on the whole model."""
    am = AnalysisManager()
    subgraphs = [b.subgraph(gm) for b in walk_blocks(blocks)] + [Subgraph.whole(gm)]
    for sub in subgraphs:
        for analysis in (ShapeAnalysis(), DepthAnalysis(), MixingAnalysis(), CostAnalysis()):
            am.get(analysis, gm, sub)


def _run_generated(gm: fx.GraphModule, x: torch.Tensor) -> torch.Tensor:
    """``gm``'s model.py executed in a fresh module, built, given ``gm``'s state dict; its eval
    output at ``x``."""
    source = generate_code(gm, class_name="Child")
    namespace = types.ModuleType("alphac_fuzz_child")
    exec(compile(source, "<generated model.py>", "exec"), namespace.__dict__)  # noqa: S102
    model = namespace.build_model(weights=None)
    assert model.training == gm.training
    model.load_state_dict(gm.state_dict())
    with torch.no_grad():
        return model.eval()(x)


def _check_child(parent: Parent, parent_fingerprint: str, child) -> None:
    gm, x = child.gm, parent.example[0]
    assert gm is not parent.gm
    assert child.record.fingerprint_parent == parent_fingerprint
    assert model_fingerprint(gm) == child.record.fingerprint_child != parent_fingerprint
    with training_mode(gm, False), torch.no_grad():
        expected = gm(x)
    assert tuple(expected.shape) == parent.output_shape
    got = _run_generated(gm, x)
    assert tuple(got.shape) == parent.output_shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def _mutate(parent: Parent, seed: int, mutator: str, config: MutationConfig):
    """The child, checked, or None on SynthesisFailed; the parent must be left unchanged."""
    version, fingerprint = graph_version(parent.gm), model_fingerprint(parent.gm)
    try:
        child = mutate(parent.gm, parent.blocks, parent.example, seed=seed, mutator=mutator,
                       config=config)
    except SynthesisFailed as exc:
        assert exc.reason, "a failure must say why"
        TALLY["synthesis_failed"] += 1
        TALLY[f"synthesis_failed:{exc.prop}"] += 1
        REASONS[exc.reason[:100]] += 1
        child = None
    assert graph_version(parent.gm) == version and model_fingerprint(parent.gm) == fingerprint
    if child is not None:
        TALLY["children"] += 1
        TALLY[f"kind:{child.record.kind}"] += 1
        _check_child(parent, fingerprint, child)
    return child


@pytest.fixture(scope="module", autouse=True)
def _one_thread_and_report():
    """One intra-op thread (the tensors are tiny: two threads only contend on a shared 2-core
    machine), and the counts written where ALPHAC_FUZZ_REPORT says."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    path = os.environ.get("ALPHAC_FUZZ_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump({**TALLY, "reasons": dict(REASONS)}, out, indent=1, sort_keys=True)


@pytest.mark.slow
@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(subject=subjects(), seed=st.integers(0, 2**20), config=configs(), again=st.booleans())
def test_the_pipeline_gives_valid_children_or_synthesis_failed(
        subject: Subject, seed: int, config: MutationConfig, again: bool) -> None:
    TALLY["examples"] += 1
    TALLY[f"subject:{'zoo' if subject.zoo_name else 'random'}:{subject.frontend}"] += 1
    parent = _parent(subject)
    _infer_all(parent.gm, parent.blocks)
    children = [c for c in (_mutate(parent, seed, m, config) for m in MUTATORS) if c is not None]
    if again and children:
        first = children[0].gm
        blocks = find_blocks(first, None)
        _infer_all(first, blocks)
        TALLY["second_generation"] += 1
        _mutate(Parent(first, blocks, parent.example, parent.output_shape), seed + 1, "property",
                config)
