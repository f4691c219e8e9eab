"""No code outside the Rewriter edits a graph directly.

Every graph mutation goes through :class:`alphac.rewriter.Rewriter`, which tracks whether anything
changed and bumps the graph version that analysis caches are keyed by. This test parses (``ast``)
every ``.py`` file under ``alphac/``, ``passes/``, ``frontends/`` and ``runtime/`` except
``alphac/rewriter.py`` and reports each of these, unless :data:`ALLOWED` lists it:

1. a call of a method that exists only to edit a graph or a node in place, whatever its receiver
   (:data:`EDIT_METHODS`: ``gm.graph.erase_node(n)``, ``n.replace_all_uses_with(m)``,
   ``n.update_arg(0, x)``, ``with graph.inserting_before(n)``...). ``Node.append`` moves a node
   too, but every list has an ``append``: it is left out;
2. a call of a node-building ``Graph`` method (:data:`BUILD_METHODS`: ``placeholder``, ``output``,
   ``call_module``...) on an *existing* graph: a receiver spelled ``<expr>.graph``, or a name that
   the enclosing functions bind to such an expression, to ``with <expr>.edit() as g``, or as a
   parameter annotated ``Graph``. Building a *fresh* graph (``g = fx.Graph(); g.placeholder(n)``,
   as :func:`alphac.ir.extract` does) is construction, not an edit, and ``rw.call_module(...)``
   is a Rewriter verb: neither is reported;
3. an assignment (plain, augmented, annotated, or ``setattr``/``object.__setattr__`` with a literal
   name) to a node's ``args``, ``kwargs``, ``target`` or ``op`` on any object but ``self`` (a
   class setting its own attribute of that name is not editing a node);
4. ``with <expr>.edit()``: :meth:`Rewriter.edit` hands out the raw graph (a legacy door, for
   tests only).

The scan is a tripwire, not a proof: an alias it cannot follow (a graph passed in an unannotated
parameter, ``getattr(n, "update_arg")``) slips through. A finding names the file, the function
and the call, not the line, so an allowlisted one survives unrelated edits.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("alphac", "passes", "frontends", "runtime")
#: The one module allowed to edit graphs: it is the door.
REWRITER = Path("alphac/rewriter.py")

EDIT_METHODS = frozenset({
    "erase_node", "create_node", "inserting_before", "inserting_after", "replace_all_uses_with",
    "replace_input_with", "update_arg", "update_kwarg", "eliminate_dead_code", "prepend",
})
BUILD_METHODS = frozenset({
    "placeholder", "output", "call_function", "call_module", "call_method", "get_attr",
    "node_copy", "graph_copy",
})
NODE_FIELDS = frozenset({"args", "kwargs", "target", "op"})

#: ``(file, function, call) -> why it is legitimate``; ``function`` is the qualified name of the
#: enclosing function (``<module>`` at the top level), ``call`` what :func:`findings` reports.
#: Empty today: capture-time edits and mode flips go through ``Rewriter`` too, and
#: ``alphac.ir.extract`` builds a fresh ``fx.Graph`` (rule 2 does not report it). An entry must
#: say why the edit cannot go through a Rewriter; a stale entry fails
#: :func:`test_every_allowlist_entry_is_still_needed`.
ALLOWED: dict[tuple[str, str, str], str] = {}


def _is_existing_graph(value: ast.expr | None) -> bool:
    """``<expr>.graph``, or ``<expr>.edit(...)`` (what ``with ... as g`` binds g to)."""
    if isinstance(value, ast.Attribute):
        return value.attr == "graph"
    return (isinstance(value, ast.Call) and isinstance(value.func, ast.Attribute)
            and value.func.attr == "edit")


def _annotated_graph(annotation: ast.expr | None) -> bool:
    """Whether a parameter's annotation is ``Graph``, ``fx.Graph``, ``"fx.Graph"``, or a union
    with one of those."""
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        try:
            annotation = ast.parse(annotation.value, mode="eval").body
        except SyntaxError:
            return False
    if isinstance(annotation, ast.BinOp):
        return _annotated_graph(annotation.left) or _annotated_graph(annotation.right)
    return (isinstance(annotation, ast.Name) and annotation.id == "Graph") or (
        isinstance(annotation, ast.Attribute) and annotation.attr == "Graph")


_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def _own_nodes(scope: ast.AST):
    """The nodes of ``scope``'s body, not descending into the functions and classes it defines."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, _SCOPES):
            todo.extend(ast.iter_child_nodes(node))


def _bindings(scope: ast.AST) -> dict[str, bool]:
    """The names ``scope`` (a module, class or function) binds: True where one of its bindings is
    an existing graph (rule 2), False where none is (a fresh graph, anything else)."""
    bound: dict[str, bool] = {}

    def bind(target: ast.expr | None, existing: bool) -> None:
        if isinstance(target, ast.Name):
            bound[target.id] = bound.get(target.id, False) or existing
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                bind(element, False)

    if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        arguments = scope.args
        for param in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                      arguments.vararg, arguments.kwarg]:
            if param is not None:
                bound[param.arg] = _annotated_graph(param.annotation)
    for node in _own_nodes(scope):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                bind(target, _is_existing_graph(node.value))
        elif isinstance(node, (ast.AnnAssign, ast.NamedExpr)) and node.value is not None:
            bind(node.target, _is_existing_graph(node.value))
        elif isinstance(node, (ast.With, ast.AsyncWith)):
            for item in node.items:
                bind(item.optional_vars, _is_existing_graph(item.context_expr))
        elif isinstance(node, (ast.For, ast.AsyncFor, ast.comprehension)):
            bind(node.target, False)
    return bound


def _node_fields_set(target: ast.expr) -> list[str]:
    """``"assignment to .args"`` for each node field an assignment target names (rule 3)."""
    if (isinstance(target, ast.Attribute) and target.attr in NODE_FIELDS
            and not (isinstance(target.value, ast.Name) and target.value.id == "self")):
        return [f"assignment to .{target.attr}"]
    if isinstance(target, (ast.Tuple, ast.List)):
        return [what for element in target.elts for what in _node_fields_set(element)]
    return []


class _Finder(ast.NodeVisitor):
    """Collects ``(function, call)`` for every direct graph edit, by the rules of this module."""

    def __init__(self) -> None:
        self.found: list[tuple[str, str]] = []
        #: (name, bindings, is a class) per enclosing scope, outermost (the module) first
        self._scopes: list[tuple[str, dict[str, bool], bool]] = []

    def scan(self, tree: ast.Module) -> list[tuple[str, str]]:
        self._scopes = [("<module>", _bindings(tree), False)]
        self.generic_visit(tree)
        return self.found

    def _report(self, what: str) -> None:
        names = [name for name, _, _ in self._scopes[1:]] or ["<module>"]
        self.found.append((".".join(names), what))

    def _scoped(self, node: ast.AST, name: str) -> None:
        self._scopes.append((name, _bindings(node), isinstance(node, ast.ClassDef)))
        self.generic_visit(node)
        self._scopes.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._scoped(node, node.name)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self._scoped(node, node.name)

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self._scoped(node, "<lambda>")

    def _existing(self, receiver: ast.expr) -> bool:
        """Whether ``receiver`` is an existing graph: ``<expr>.graph``, or a name whose innermost
        binding says so (a class body's names are not visible in its methods, as in Python)."""
        if isinstance(receiver, ast.Attribute):
            return receiver.attr == "graph"
        if not isinstance(receiver, ast.Name):
            return False
        for depth, (_, bound, is_class) in enumerate(reversed(self._scopes)):
            if receiver.id in bound and not (is_class and depth > 0):
                return bound[receiver.id]
        return False

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            if func.attr in EDIT_METHODS:
                self._report(f"call of .{func.attr}")
            elif func.attr in BUILD_METHODS and self._existing(func.value):
                self._report(f"call of .{func.attr} on an existing graph")
        named = (isinstance(func, ast.Name) and func.id == "setattr") or (
            isinstance(func, ast.Attribute) and func.attr == "__setattr__")
        if (named and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                and node.args[1].value in NODE_FIELDS):
            self._report(f"assignment to .{node.args[1].value}")
        self.generic_visit(node)

    def _assigned(self, targets: list[ast.expr]) -> None:
        for target in targets:
            for what in _node_fields_set(target):
                self._report(what)

    def visit_Assign(self, node: ast.Assign) -> None:
        self._assigned(node.targets)
        self.generic_visit(node)

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self._assigned([node.target])
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self._assigned([node.target])
        self.generic_visit(node)

    def visit_With(self, node: ast.With) -> None:
        for item in node.items:
            expr = item.context_expr
            if (isinstance(expr, ast.Call) and isinstance(expr.func, ast.Attribute)
                    and expr.func.attr == "edit"):
                self._report("with .edit() (the raw graph)")
        self.generic_visit(node)


def findings(source: str) -> list[tuple[str, str]]:
    """``(function, call)`` for each direct graph edit in ``source``, in source order."""
    return _Finder().scan(ast.parse(source))


def scanned_files() -> list[Path]:
    """Every Python file of the four source folders, relative to the root, but the Rewriter."""
    return [p.relative_to(ROOT) for folder in FOLDERS for p in sorted((ROOT / folder).rglob("*.py"))
            if "__pycache__" not in p.parts and p.relative_to(ROOT) != REWRITER]


def violations(path: Path) -> list[str]:
    """``"file: function: call"`` per finding in ``path`` that :data:`ALLOWED` does not list."""
    found = findings((ROOT / path).read_text())
    return [f"{path}: {fn}: {what}" for fn, what in found if (str(path), fn, what) not in ALLOWED]


FILES = scanned_files()


@pytest.mark.parametrize("path", FILES, ids=str)
def test_no_direct_graph_edits_outside_the_rewriter(path: Path) -> None:
    bad = violations(path)
    assert not bad, ("edit graphs through alphac.rewriter.Rewriter's verbs (insert, set_arg, "
                     "replace_all_uses, erase, splice, commit):\n  " + "\n  ".join(bad))


def test_every_allowlist_entry_is_still_needed() -> None:
    present = {(str(p), fn, what) for p in FILES for fn, what in findings((ROOT / p).read_text())}
    assert set(ALLOWED) <= present, f"stale allowlist entries: {sorted(set(ALLOWED) - present)}"


def test_the_walk_covers_every_folder_and_skips_only_the_rewriter() -> None:
    assert {p.parts[0] for p in FILES} == set(FOLDERS)
    assert REWRITER not in FILES and (ROOT / REWRITER).is_file()
    assert {Path("alphac/ir.py"), Path("frontends/modes_capture.py"), Path("frontends/trace.py"),
            Path("alphac/modes.py")} <= set(FILES)


def test_the_rewriter_itself_would_be_reported() -> None:
    # The check can see real edits: the door's own file is full of them.
    whats = {what for _, what in findings((ROOT / REWRITER).read_text())}
    assert {"call of .erase_node", "call of .create_node", "call of .eliminate_dead_code",
            "call of .update_arg", "call of .replace_all_uses_with"} <= whats


SAMPLE = '''
import torch
from torch import fx


def edits(gm, node, other):
    gm.graph.erase_node(node)
    with gm.graph.inserting_after(node):
        new = gm.graph.call_function(torch.relu, (node,))
    node.replace_all_uses_with(new)
    node.args = (other,)
    node.kwargs["x"] = 1          # a subscript of kwargs: the dict, not the field (not reported)
    new.target, new.meta, new.op = torch.sigmoid, {}, "call_function"
    node.args += (1,)
    setattr(node, "kwargs", {})
    graph = gm.graph
    graph.output(new)
    graph.eliminate_dead_code()


def through_edit(rw):
    with rw.edit() as g:
        g.placeholder("y")


def annotated(graph: fx.Graph, n, other: "Graph | None" = None):
    graph.node_copy(n)
    other.output(n)


def fine(gm, rw, subgraph):
    graph = fx.Graph()                           # a fresh graph: construction
    x = graph.placeholder("x")
    graph.output(graph.call_function(torch.relu, (x,)))
    rw.call_module(torch.nn.ReLU(), (x,))        # Rewriter verbs
    rw.get_attr("weight")
    rw.set_arg(x, 0, 1)
    gm.graph.lint()
    node = gm.graph.find_nodes(op="output")[0]
    node.meta["tensor_meta"] = None
    return [n.args for n in gm.graph.nodes]


class Holder:
    def __init__(self, target):
        self.target = target                     # its own attribute, not a node's
'''


def test_the_check_itself_detects_violations_and_spares_construction() -> None:
    found = findings(SAMPLE)
    assert found == [
        ("edits", "call of .erase_node"),
        ("edits", "call of .inserting_after"),
        ("edits", "call of .call_function on an existing graph"),
        ("edits", "call of .replace_all_uses_with"),
        ("edits", "assignment to .args"),
        ("edits", "assignment to .target"),
        ("edits", "assignment to .op"),
        ("edits", "assignment to .args"),
        ("edits", "assignment to .kwargs"),
        ("edits", "call of .output on an existing graph"),
        ("edits", "call of .eliminate_dead_code"),
        ("through_edit", "with .edit() (the raw graph)"),
        ("through_edit", "call of .placeholder on an existing graph"),
        ("annotated", "call of .node_copy on an existing graph"),
        ("annotated", "call of .output on an existing graph"),
    ]
