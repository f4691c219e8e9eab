"""Read a finished search run: its report, the Pareto table, the best model's lineage, the plot.

Everything here only reads the run directory (``report.json``, the journal opened read-only, the
candidates' ``model.py`` as text); nothing from it is executed, and a run that is still being
written can be read (the journal's WAL lets readers in while the writer works).

- :func:`load_run` checks that a folder is a finished run and returns a :class:`~alphac.search.results.RunResult`.
- :func:`pareto_table` turns the report's seed and front into rows with the change against the
  seed; :func:`lineage` follows an individual's parents back to the seed, one
  :class:`LineageStep` per mutation; :func:`plot_pareto` draws ``pareto.png``.

Example::

    run = load_run("alphac-run")
    [row.id for row in run.table()]          # [1, 9, 4]: the seed, then the front by cost
    [step.kind for step in run.best_lineage()]   # [None, 'rewrite', 'delete']
    plot_pareto(run)                          # alphac-run/pareto.png
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alphac.errors import UserError
from alphac.search.journal import JOURNAL_NAME, Individual, Journal, NotARunError
from alphac.search.objectives import OBJECTIVES, get_objective, row_cost
from alphac.search.results import RunResult
from alphac.search.selection import Candidate, pareto_front

__all__ = ["COST_KEYS", "CorruptReportError", "LineageStep", "NotARunDirError", "ParetoRow",
           "PlotUnavailableError", "RunNotFinishedError", "RunReport", "RunResult", "lineage", "load_run",
           "pareto_table", "plot_pareto"]

REPORT_NAME = "report.json"
PLOT_NAME = "pareto.png"
#: The report/journal column of each objective that has one (the rest live in ``values``).
COST_KEYS = {o.name: o.column for o in OBJECTIVES.values() if o.column}


class NotARunDirError(UserError):
    """The folder given to ``alphac report`` does not exist or holds no journal."""


class RunNotFinishedError(UserError):
    """The run has a journal but no ``report.json`` yet (still running, or stopped early)."""


class CorruptReportError(UserError):
    """``report.json`` is not JSON, lacks keys, or names individuals the journal lacks."""

    exit_code = 9


class PlotUnavailableError(UserError):
    """``pareto.png`` cannot be drawn: matplotlib is missing, or the file cannot be written."""


@dataclass(frozen=True)
class ParetoRow:
    """One line of the Pareto table: a retrained model and its change against the seed.

    Costs and accuracies are those of ``report.json`` (accuracies are fractions, from the final
    retraining; ``proxy_val_accuracy`` is the search's). ``*_change`` are relative cost changes
    (-0.4: 40% cheaper than the seed), ``*_points`` accuracy changes in percentage points; None
    where either side is unknown.
    """

    id: int
    is_seed: bool
    on_front: bool
    is_best: bool
    params: int | None
    flops: int | None
    latency_ms: float | None
    val_accuracy: float | None
    test_accuracy: float | None
    proxy_val_accuracy: float | None
    params_change: float | None
    flops_change: float | None
    latency_change: float | None
    val_points: float | None
    test_points: float | None
    path: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LineageStep:
    """One individual on the path from the seed, with the mutation that made it from its parent.

    The seed's step has ``kind`` None and no mutation fields. ``subgraph`` names the parent's
    nodes the mutation replaced (a rewrite) or the block it duplicated or deleted; ``replaced`` is
    the parent's code of those nodes (read from its ``model.py`` when a run directory was given,
    else None) and ``replacement`` the child's code that took their place (the mutation record's
    ``replaced_code``); ``chains`` the synthesized op chains.
    """

    id: int
    parent: int | None
    generation: int
    status: str
    val_accuracy: float | None
    kind: str | None = None
    mutator: str | None = None
    block: str | None = None
    block_type: str | None = None
    instances: tuple[str, ...] = ()
    subgraph: tuple[str, ...] = ()
    chains: tuple[tuple[str, ...], ...] = ()
    replaced: str | None = None
    replacement: str | None = None
    params_before: int | None = None
    params_after: int | None = None
    flops_before: int | None = None
    flops_after: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: What :func:`load_run` returns (the same type the driver and the Python API give).
RunReport = RunResult


# ---- loading --------------------------------------------------------------------------------


def load_run(run_dir: str | os.PathLike[str]) -> RunResult:
    """Read the run in ``run_dir``: its ``report.json`` and its journal (read-only).

    Pre: nothing; every problem is a UserError. Post: the report is a JSON object with
    ``seed_model``, ``pareto`` and ``best`` (rows with an ``id``), all of them in the journal.
    Raises NotARunDirError (no such folder, or no journal), RunNotFinishedError (no
    report.json), CorruptReportError, or the journal's own errors (corrupt, newer schema).
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        what = "does not exist" if not run_dir.exists() else "is a file, not a folder"
        raise NotARunDirError(f"{run_dir} {what}",
                              hint="pass the folder given to `alphac optimize --out`")
    try:
        journal = Journal.open(run_dir, readonly=True)
    except NotARunError:
        raise NotARunDirError(f"{run_dir} is not an alphac run: it holds no {JOURNAL_NAME}",
                              hint="pass the folder given to `alphac optimize --out`") from None
    with journal:
        individuals = tuple(journal.individuals())
        settings, identity, counts = journal.settings, journal.seed_identity, journal.counts()
    report = _read_report(run_dir, settings, identity, counts)
    try:
        result = RunResult.from_json(run_dir, report, journal_settings=settings,
                                     seed_identity=identity, individuals=individuals,
                                     counts_now=counts)
    except ValueError as exc:
        raise _corrupt(run_dir, str(exc), identity, settings) from None
    known = {ind.id for ind in individuals}
    rows = [result.seed_model, result.best, *result.pareto]
    unknown = sorted({row.id for row in rows} - known)
    if unknown:
        raise _corrupt(run_dir, f"it names individuals {unknown} that the journal lacks",
                       identity, settings)
    return result


def _read_report(run_dir: Path, settings: Mapping[str, Any], identity: Mapping[str, Any],
                 counts: Mapping[str, int]) -> dict[str, Any]:
    path = run_dir / REPORT_NAME
    if not path.is_file():
        busy = ", ".join(f"{counts[s]} {s}" for s in ("running", "queued") if counts.get(s))
        state = f"it is still going ({busy}) or stopped" if busy else "it stopped"
        raise RunNotFinishedError(
            f"the run in {run_dir} has not finished: {state} before writing {REPORT_NAME}",
            hint=f"wait for it, or resume it with `{_resume_command(run_dir, identity, settings)}`")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise _corrupt(run_dir, f"it cannot be read as JSON ({exc})", identity, settings) from None


def _resume_command(run_dir: Path, identity: Mapping[str, Any],
                    settings: Mapping[str, Any]) -> str:
    words = ["alphac", "optimize", str(identity.get("source", "MODEL")), "--target",
             str(identity.get("target", settings.get("target", "TARGET"))), "--out", str(run_dir),
             "--resume"]
    if isinstance(settings.get("candidates"), int):
        # the stored count is the children to train (the seed is not counted)
        words += ["--candidates", str(max(1, settings["candidates"]))]
    return shlex.join(words)


def _corrupt(run_dir: Path, detail: str, identity: Mapping[str, Any],
             settings: Mapping[str, Any]) -> CorruptReportError:
    return CorruptReportError(
        f"{run_dir / REPORT_NAME} is corrupt: {detail}",
        hint=f"delete it and write it again with `{_resume_command(run_dir, identity, settings)}` "
             "(the front is retrained and tested once more)")


# ---- the table ------------------------------------------------------------------------------


def pareto_table(report: Mapping[str, Any], run_dir: str | os.PathLike[str] | None = None,
                 objective: str | None = None) -> list[ParetoRow]:
    """The seed, then every model of the report's Pareto front by increasing cost.

    Pre: ``report`` has ``report.json``'s shape (``seed_model``, ``pareto``, ``best``);
    ``objective`` orders the front (default: the report's settings, else params). Post: the seed comes first and once, even
    when it is on the front; changes are against the seed's row. ``path`` is the model's
    ``pareto/NNNNNN`` folder under ``run_dir`` (the report's own path without one).

    Example: seed 1000 params at 90.0% val, front member 500 params at 89.6% gives
    ``params_change == -0.5`` and ``val_points == -0.4`` (up to rounding).
    """
    seed, best_id = report["seed_model"], report["best"]["id"]
    stated = report.get("settings")
    objective = objective or (stated.get("objective") if isinstance(stated, dict) else None)
    name = objective if objective in OBJECTIVES else "params"
    front_ids = {row["id"] for row in report["pareto"]}
    others = sorted((r for r in report["pareto"] if r["id"] != seed["id"]),
                    key=lambda r: (_number(row_cost(r, name), math.inf), r["id"]))
    folder = None if run_dir is None else Path(run_dir)
    return [_table_row(row, seed, row["id"] in front_ids, row["id"] == best_id, folder)
            for row in (seed, *others)]


def _table_row(row: Mapping[str, Any], seed: Mapping[str, Any], on_front: bool, is_best: bool,
               run_dir: Path | None) -> ParetoRow:
    path = str(_row_folder(run_dir, row)) if run_dir is not None else row.get("path")
    return ParetoRow(
        id=row["id"], is_seed=row["id"] == seed["id"], on_front=on_front, is_best=is_best,
        params=row.get("params"), flops=row.get("flops"), latency_ms=row.get("latency_ms"),
        val_accuracy=row.get("val_accuracy"), test_accuracy=row.get("test_accuracy"),
        proxy_val_accuracy=row.get("proxy_val_accuracy"),
        params_change=_relative(row.get("params"), seed.get("params")),
        flops_change=_relative(row.get("flops"), seed.get("flops")),
        latency_change=_relative(row.get("latency_ms"), seed.get("latency_ms")),
        val_points=_points(row.get("val_accuracy"), seed.get("val_accuracy")),
        test_points=_points(row.get("test_accuracy"), seed.get("test_accuracy")), path=path)


def _row_folder(run_dir: Path, row: Mapping[str, Any]) -> Path:
    # Derived, not the report's "path": that one is relative to wherever the search ran.
    return run_dir / "pareto" / f"{row['id']:06d}"


def _number(value: Any, default: float | None = None) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else default


def _relative(value: Any, seed: Any) -> float | None:
    value, seed = _number(value), _number(seed)
    return None if value is None or not seed else value / seed - 1.0


def _points(value: Any, seed: Any) -> float | None:
    value, seed = _number(value), _number(seed)
    return None if value is None or seed is None else 100.0 * (value - seed)


# ---- the lineage ----------------------------------------------------------------------------


def lineage(individuals: Iterable[Individual], ident: int, *,
            run_dir: str | os.PathLike[str] | None = None) -> list[LineageStep]:
    """The chain of individuals from the seed to ``ident``, seed first, each with its mutation.

    Pre: ``individuals`` are a journal's rows (``Journal.individuals()``). Post: the first step
    is the seed (no parent, ``kind`` None), the last is ``ident``, and each step's ``parent`` is
    the previous step's ``id``. With ``run_dir``, ``replaced`` holds the parent's code of the
    replaced nodes, read as text from the parent's ``model.py``. Raises CorruptReportError when
    ``ident`` or an ancestor is missing, or the parents loop.

    Example: seed 1, 2 = rewrite of 1, 5 = delete in 2: ``[s.id for s in lineage(rows, 5)]`` is
    ``[1, 2, 5]`` and the kinds are ``[None, 'rewrite', 'delete']``.
    """
    by_id = {ind.id: ind for ind in individuals}
    chain: list[Individual] = []
    current: int | None = ident
    while current is not None:
        if current not in by_id:
            raise CorruptReportError(f"individual {current} (an ancestor of {ident}, or itself) "
                                     "is not in the journal",
                                     hint="report.json and the journal disagree (edited, or "
                                          "mixed with another run); start a new run")
        if any(ind.id == current for ind in chain):
            raise CorruptReportError(f"the parents of individual {ident} loop at {current}",
                                     hint="the journal was edited by hand; start a new run")
        chain.append(by_id[current])
        current = by_id[current].parent
    chain.reverse()
    folder = None if run_dir is None else Path(run_dir)
    return [_step(ind, by_id.get(ind.parent) if ind.parent is not None else None, folder)
            for ind in chain]


def _step(ind: Individual, parent: Individual | None, run_dir: Path | None) -> LineageStep:
    base = dict(id=ind.id, parent=ind.parent, generation=ind.generation, status=ind.status,
                val_accuracy=ind.val_accuracy)
    record = ind.mutation or {}
    if parent is None or "kind" not in record:
        return LineageStep(**base)
    subgraph = tuple(record.get("subgraph") or ())
    replaced = _parent_code(run_dir, parent, subgraph) if run_dir is not None else None
    return LineageStep(
        **base, kind=record["kind"], mutator=record.get("mutator"), block=record.get("block"),
        block_type=record.get("block_type"), instances=tuple(record.get("instances") or ()),
        subgraph=subgraph, chains=tuple(tuple(c) for c in record.get("chains") or ()),
        replaced=replaced, replacement=record.get("replaced_code"),
        params_before=record.get("params_parent", parent.params),
        params_after=record.get("params_child", ind.params),
        flops_before=record.get("flops_parent", parent.flops),
        flops_after=record.get("flops_child", ind.flops))


def _parent_code(run_dir: Path, parent: Individual, nodes: tuple[str, ...]) -> str | None:
    """The lines of the parent's ``forward`` that assign one of ``nodes``, None if unreadable."""
    root = run_dir.resolve()
    path = (run_dir / parent.code_path).resolve()
    if not nodes or not path.is_relative_to(root) or not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    names, lines, in_forward = set(nodes), [], False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("def "):
            in_forward = stripped.startswith("def forward(")
            continue
        statement = stripped.split(";  ", 1)[0]  # drop fx's "x = None" bookkeeping
        if in_forward and " = " in statement and \
                set(statement.split(" = ", 1)[0].split(", ")) & names:
            lines.append(statement)
    return "\n".join(lines) or None


# ---- the plot -------------------------------------------------------------------------------


def plot_pareto(run: str | os.PathLike[str] | RunResult, out_path: str | os.PathLike[str] |
                None = None, objective: str | None = None) -> Path:
    """Draw validation accuracy against cost for the run and write it as a PNG; return its path.

    Pre: ``run`` is a finished run's folder or its :class:`RunResult`; ``objective`` is params,
    flops or latency (default: the run's). Post: ``out_path`` (default ``RUN_DIR/pareto.png``)
    is replaced atomically by a plot of every finished individual (grey, the search's proxy
    accuracy), the proxy Pareto front (a line), the seed (a star), the retrained front (the
    report's final validation accuracy) and the best model's lineage (arrows from the seed).
    Raises PlotUnavailableError without matplotlib (a dependency of alphac) or when the
    file cannot be written.
    """
    run = run if isinstance(run, RunResult) else load_run(run)
    objective = get_objective(objective or run.objective).name
    figure_cls, canvas_cls = _matplotlib()
    out = Path(out_path) if out_path is not None else run.run_dir / PLOT_NAME
    figure = figure_cls(figsize=(7.5, 5.0), dpi=120)
    canvas_cls(figure)  # the Agg canvas: no display and no global pyplot state
    _draw(figure.add_subplot(), run, objective)
    figure.tight_layout()
    return _save(figure, out)


def _matplotlib() -> tuple[Any, Any]:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotUnavailableError("cannot draw pareto.png: matplotlib is not installed",
                                   hint="it is a dependency of alphac: pip install matplotlib"
                                   ) from None
    return Figure, FigureCanvasAgg


def _draw(ax: Any, run: RunResult, objective: str) -> None:
    from matplotlib.ticker import FuncFormatter

    done = {ind.id: ind for ind in run.individuals if ind.status == "done"
            and _number(ind.values.get(objective)) is not None and ind.val_accuracy is not None}
    point = {i: (float(ind.values[objective]), 100 * ind.val_accuracy)
             for i, ind in done.items()}
    ax.scatter([p[0] for p in point.values()], [p[1] for p in point.values()], s=18,
               color="0.65", label=f"candidates ({len(point)}, proxy)", zorder=2)
    front = pareto_front(Candidate(i, ind.val_accuracy, point[i][0], i) for i, ind in done.items())
    ax.step([point[c.id][0] for c in front], [point[c.id][1] for c in front], where="post",
            color="tab:blue", lw=1.5, label="Pareto front (proxy)", zorder=3)
    _draw_lineage(ax, run, point)
    _draw_final(ax, run, objective)
    seed_id = run.seed_model["id"]
    if seed_id in point:
        ax.scatter(*point[seed_id], marker="*", s=220, color="gold", edgecolor="black",
                   label=f"seed #{seed_id}", zorder=6)
    costs = [p[0] for p in point.values() if p[0] > 0]
    if costs and max(costs) / min(costs) > 20:
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short(v)))
    ax.set_xlabel(f"{OBJECTIVES[objective].unit} (objective: {objective})")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title(f"{run.run_dir.name}: accuracy against {objective}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")


def _draw_lineage(ax: Any, run: RunResult, point: Mapping[int, tuple[float, float]]) -> None:
    steps = [s.id for s in lineage(run.individuals, run.best["id"]) if s.id in point]
    for a, b in zip(steps, steps[1:], strict=False):
        ax.annotate("", xy=point[b], xytext=point[a], zorder=4,
                    arrowprops={"arrowstyle": "->", "color": "tab:orange", "lw": 1.6})
    for ident in steps:
        ax.annotate(f"#{ident}", point[ident], textcoords="offset points", xytext=(5, 5),
                    fontsize=7, color="tab:orange", zorder=7)
    if steps:
        ax.plot([], [], color="tab:orange", label=f"lineage of best #{run.best['id']}")
        ax.scatter(*point[steps[-1]], s=140, facecolor="none", edgecolor="tab:orange", lw=2,
                   zorder=5)


def _draw_final(ax: Any, run: RunResult, objective: str) -> None:
    rows = [r for r in (run.seed_model, *run.pareto) if _number(row_cost(r, objective))
            is not None and _number(r.get("val_accuracy")) is not None]
    if rows:
        ax.scatter([row_cost(r, objective) for r in rows], [100 * r["val_accuracy"] for r in rows],
                   marker="D",
                   s=36, facecolor="none", edgecolor="tab:green", zorder=4,
                   label="retrained (final recipe)")


def _short(value: float) -> str:
    """Axis ticks: 1500000 -> '1.5M', 0.25 -> '0.25'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:g}{unit}"
    return f"{value:g}"


def _save(figure: Any, out: Path) -> Path:
    """Write under a temporary name, then rename: a reader never sees half a PNG."""
    # Not tempfile: its files are private (0600); this one's mode follows the umask, like the
    # run's other files.
    temp = out.parent / f".{out.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(temp, "xb") as handle:
            figure.savefig(handle, format="png")
        os.replace(temp, out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)
        raise PlotUnavailableError(f"cannot write {out}: {exc.strerror or exc}",
                                   hint="pass an output path in a folder you can write to"
                                   ) from None
    return out
