"""How a child starts: its parent's trained weights, then its changed parts distilled.

A child made by one mutation takes its parent's best-trained state by name and shape, plus the
channels the mutation's ``weight_plan`` maps (:func:`alphac.codegen.inherit_weights`); that is
its ``weights.pt``. With ``distill_steps`` > 0 (by default 3 times the proxy's steps, at most 300)
its changed parts (the mutation's ``boundaries``) are then trained to compute what the parent
computed there (:func:`alphac.runtime.distill.distill`), on the proxy's training images.

Distillation runs in the worker, as the first part of the child's training job: the task carries
a :class:`DistillPlan` (the parent's code and trained weights, the boundaries in the names the
worker's trace of the generated code gives), so the driver never waits for it, several workers
distil in parallel, and its seconds count as the child's. Where the generated code does not
trace back to the same graph node for node (a model only ``torch.export`` captures), the driver
distils before writing ``weights.pt``, as it did before. The search and its resume both start
children here, and distillation is seeded, so a child replayed after a crash starts the same.
Example::

    starter = Starter(settings, layout)
    start = starter.start(child.gm, parent_member, child.record.weight_plan,
                          child.record.boundaries, seed=1234, codes=(parent_code, child_code))
    start.record      # journalled in the mutation: {"where": "worker", "steps": 281}
    start.plan        # the DistillPlan the child's training task carries (None: nothing to do)
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import fx

from alphac.codegen import inherit_weights
from alphac.errors import UserError
from alphac.ir import Boundary, Subgraph
from alphac.search.budget import work
from alphac.search.layout import RunLayout
from alphac.search.schedule import Member

__all__ = ["DISTILL_STEPS_MAX", "DistillPlan", "Start", "Starter", "distill_steps",
           "worker_names"]

#: The default distillation: three steps per step of the proxy, at most this many (a
#: distillation step costs a parent forward and the parts' backward, well under a training step).
DISTILL_STEPS_MAX = 300


def distill_steps(settings: Any) -> int:
    """The distillation steps per child: ``settings.distill_steps``, or by default 3 times the
    proxy's steps (:func:`~alphac.search.budget.work` / batch size), at most
    :data:`DISTILL_STEPS_MAX`. On small_cnn 50 steps lifted the median rewrite child from 11%
    to 69% validation accuracy before any fine-tune, 300 to 74% (bench/results)."""
    if settings.distill_steps is not None:
        return int(settings.distill_steps)
    proxy_steps = work(settings.proxy) / settings.proxy.batch_size
    return int(min(DISTILL_STEPS_MAX, round(3 * proxy_steps)))


@dataclass(frozen=True)
class DistillPlan:
    """What a worker needs to distil a child before its fine-tune, as plain data: the parent's
    generated code and trained weights (a path), the example input shapes both are traced at,
    the boundaries (JSON, named as that trace names nodes), the steps, the seed, and the seed
    of the data split (the run's ``seed``, as the workers load their data)."""

    parent_code: str
    parent_weights: str
    input_shapes: tuple[tuple[int, ...], ...]
    boundaries: tuple[dict, ...]
    steps: int
    seed: int
    data_seed: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillPlan:
        return cls(data["parent_code"], data["parent_weights"],
                   tuple(tuple(s) for s in data["input_shapes"]), tuple(data["boundaries"]),
                   int(data["steps"]), int(data["seed"]), int(data["data_seed"]))


@dataclass(frozen=True)
class Start:
    """How a child started: ``record`` for its journalled mutation (None: not distilled), and
    the :class:`DistillPlan` its training task carries (None: nothing left for the worker)."""

    record: dict[str, Any] | None = None
    plan: DistillPlan | None = None


def worker_names(gm: fx.GraphModule, code: str, example_inputs: Sequence[torch.Tensor]
                 ) -> dict[str, str] | None:
    """Each node name of ``gm`` -> the name of the same node in the graph a worker traces from
    ``code`` (``gm``'s generated code, :func:`alphac.frontends.trace.trace`); None unless that
    graph is ``gm``'s node for node (the same ops and targets, in order)."""
    from alphac.frontends.trace import trace
    from alphac.search.candidate import build_from_code

    traced, frontend = trace(build_from_code(code), example_inputs)
    ours, theirs = list(gm.graph.nodes), list(traced.graph.nodes)
    if frontend != "fx" or len(ours) != len(theirs):
        return None
    for a, b in zip(ours, theirs, strict=True):
        same_target = a.target == b.target if a.op in ("call_function", "call_method",
                                                        "call_module", "get_attr") else True
        if a.op != b.op or not same_target:
            return None
    return {a.name: b.name for a, b in zip(ours, theirs, strict=True)}


def _renamed(boundary: Boundary, child: dict[str, str], parent: dict[str, str]
             ) -> dict[str, Any] | None:
    part = boundary.part
    names = (*part.nodes, *part.inputs, *part.outputs)
    theirs = (*boundary.parent_inputs, *boundary.parent_outputs)
    if any(n not in child for n in names) or any(n not in parent for n in theirs):
        return None
    moved = Boundary(Subgraph(tuple(child[n] for n in part.nodes),
                              tuple(child[n] for n in part.inputs),
                              tuple(child[n] for n in part.outputs)),
                     tuple(parent[n] for n in boundary.parent_inputs),
                     tuple(parent[n] for n in boundary.parent_outputs))
    return asdict(moved)


class Starter:
    """Starts children of a search with ``settings`` (``distill_steps``, the proxy recipe, the
    target, seed, data folder and device) from the trained weights ``layout`` names, traced at
    ``example_inputs``."""

    def __init__(self, settings: Any, layout: RunLayout,
                 example_inputs: Sequence[torch.Tensor] = ()) -> None:
        self.s, self.layout, self.example = settings, layout, tuple(example_inputs)
        self._data: Any = None
        self._names: dict[int, dict[str, str] | None] = {}  # a parent's worker names, by id

    def start(self, gm: Any, parent: Member, plan: tuple = (), boundaries: tuple = (),
              seed: int = 0, codes: tuple[str, str] | None = None) -> Start:
        """``gm`` takes ``parent``'s best-trained weights (the channels ``plan`` maps
        included); then, with ``distill_steps``, its parts named by ``boundaries`` are to
        learn the parent's values there, seeded by ``seed``: in the worker where ``codes``
        (the parent's and the child's generated code) trace back node for node, else here.
        Nothing to distil (no trained parent yet, nothing changed, distillation off): an
        empty :class:`Start`."""
        trained = self.layout.path(parent.weights[-1]) if parent.weights else None
        if trained is None or not trained.is_file():
            return Start()
        state = torch.load(trained, map_location="cpu", weights_only=True)
        inherit_weights(gm, state, plan=plan)
        steps = distill_steps(self.s)
        if not steps or not boundaries:
            return Start()
        worker = self.plan(gm, parent, boundaries, seed, codes) if codes else None
        if worker is not None:
            return Start({"where": "worker", "steps": steps}, worker)
        return Start(self._distill_here(gm, parent, state, boundaries, steps, seed))

    def plan(self, gm: Any, parent: Member, boundaries: tuple, seed: int,
             codes: tuple[str, str]) -> DistillPlan | None:
        """The worker's :class:`DistillPlan` for child ``gm`` of ``parent`` (generated codes
        ``codes``); None where the names do not carry over (then :meth:`start` distils here)."""
        if not self.example or not parent.weights:
            return None
        if parent.id not in self._names:
            self._names[parent.id] = worker_names(parent.gm, codes[0], self.example)
        ours, theirs = worker_names(gm, codes[1], self.example), self._names[parent.id]
        if ours is None or theirs is None:
            return None
        moved = [_renamed(b, ours, theirs) for b in boundaries]
        if any(m is None for m in moved):
            return None
        return DistillPlan(codes[0], str(self.layout.path(parent.weights[-1])),
                           tuple(tuple(x.shape) for x in self.example), tuple(moved),
                           distill_steps(self.s), seed, self.s.seed)

    def _distill_here(self, gm: Any, parent: Member, state: dict, boundaries: tuple,
                      steps: int, seed: int) -> dict[str, Any]:
        from alphac.runtime.distill import distill

        teacher = copy.deepcopy(parent.gm)
        teacher.load_state_dict(state)
        try:
            data = self.data()
        except UserError as exc:  # the driver cannot read the data (a Ray head without it)
            return {"where": "driver", "skipped": [f"no training data here: {exc}"]}
        done = distill(teacher, gm, boundaries, data, steps=steps, seed=seed)
        gm.to("cpu")
        return {"where": "driver", **done.to_dict()}

    def data(self) -> Any:
        """The proxy's training images, loaded once in this process."""
        if self._data is None:
            from alphac.runtime.train import load_task_data

            self._data = load_task_data(self.s.target, self.s.proxy, seed=self.s.seed,
                                        data_dir=self.s.data_dir, device=self.s.device)
        return self._data


def distill_in_worker(model: torch.nn.Module, plan: DistillPlan, data: Any) -> dict[str, Any]:
    """Distil ``model`` (the child, its inherited weights loaded) on its parent as ``plan``
    says, in place, on the worker's training data ``data``; what it did (JSON-ready)."""
    from alphac.frontends.trace import trace
    from alphac.ir import annotate_shapes
    from alphac.runtime.distill import distill
    from alphac.search.candidate import build_from_code

    parent = build_from_code(plan.parent_code)
    inherit_weights(parent, torch.load(plan.parent_weights, map_location="cpu",
                                       weights_only=True))
    generator = torch.Generator().manual_seed(plan.seed)
    example = tuple(torch.randn(s, generator=generator) for s in plan.input_shapes)
    graphs = []
    for module in (parent, model):
        gm, _ = trace(module, example)  # an fx graph: it shares the module's parameters
        annotate_shapes(gm, example)
        graphs.append(gm)
    done = distill(graphs[0], graphs[1], [Boundary.from_json(b) for b in plan.boundaries], data,
                   steps=plan.steps, seed=plan.seed)
    with torch.no_grad():  # the trace may hold its own copies: the child takes their values
        model.load_state_dict({k: v.to("cpu") for k, v in graphs[1].state_dict().items()})
    return {"where": "worker", **done.to_dict()}
