"""The import layers of ``eval/`` point one way (read from the source with ``ast``; nothing is imported).

Layer order, bottom to top (a module may import its own package and any lower layer, never a higher one):

0. the shared bottom, top-level modules that import no other ``eval`` module: :mod:`eval.atomic` (atomic
   writers, figures included), :mod:`eval.config_path` (where ``conf/`` is), :mod:`eval.instantiate`
   (``hydra.utils.instantiate`` with the target's own error; the dataset node) and :mod:`eval.markdown`
   (Markdown tables, slugs, output folders);
1. ``eval.folder``: the run folder's files, their names and schemas (torch-free);
2. ``eval.data``: datasets, their files and preparation;
3. ``eval.metrics``: the Hungarian metric, the protocols and the scores of summed stats;
4. ``eval.spec``: the typed run spec built (and validated) from the composed config;
5. ``eval.run``: the runner and a run's bookkeeping (records, identity, masks, qualitative grid);
6. ``eval.stats``: statistics of finished runs (reads run folders; scores from ``eval.metrics``);
7. ``eval.report``: tables, sweep figures, the ledger of published claims;
8. ``eval.explore``: the browser explorer;
9. ``eval.bench``: the benchmarks (one of them times the explorer's session);
10. the command-line modules ``eval/*.py`` other than the bottom (``eval.compare``, ``eval.tables``,
    ``eval.merge``, ``eval.rescore``, ``eval.demo``): thin CLIs that nothing else imports.

A package of the order that does not exist (yet) is skipped. :data:`KNOWN` lists the breaches that can only
be removed inside a module another change owns; each entry names its owner, and the list only shrinks.

Imports are counted wherever they stand: at module level, under ``if TYPE_CHECKING`` and inside functions.
An import of another ``eval`` package placed inside a function is refused (it would hide a dependency,
usually one that dodges a cycle) unless :data:`LAZY_HEAVY` names it with its reason; inside one package, a
function-level import is refused where the imported module already imports the importer at module level
(it dodges a cycle), and allowed otherwise (a heavy sibling such as matplotlib's figures loaded on first use).
``diffseg/`` is the library under the harness and never imports ``eval``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

BOTTOM = ("eval.atomic", "eval.config_path", "eval.instantiate", "eval.markdown")
PACKAGES = ("eval.folder", "eval.data", "eval.metrics", "eval.spec", "eval.run", "eval.stats", "eval.report",
            "eval.explore", "eval.bench")
CLI = "eval/*.py"  # the layer of every top-level module that is not in BOTTOM (and of eval/__init__.py)

# Function-level imports of another eval package that are allowed: (importing module, imported module) ->
# why the import waits for the call (a heavy library kept out of a light module's start-up). Keep it short.
_DEMO_START = "the demo refuses bad settings before torch loads (the synthetic data, tables and runner import it)"
LAZY_HEAVY: dict[tuple[str, str], str] = {
    ("eval.demo", "eval.data.synthetic"): _DEMO_START,
    ("eval.demo", "eval.report.tables"): _DEMO_START,
    ("eval.demo", "eval.run"): _DEMO_START,
}

# Breaches known today, each removable only inside a module that another change owns: the exact line of
# ``problems()`` -> the owner and the edit that removes it. The lead empties this list; never add to it.
KNOWN: dict[str, str] = {}


@dataclass(frozen=True)
class Import:
    """One import statement's target, where it stands and whether it is inside a function."""

    source: str  # importing module, e.g. "eval.run.runner"
    target: str  # imported module, e.g. "eval.metrics.protocols"
    path: str
    line: int
    in_function: bool

    def __str__(self) -> str:
        where = "inside a function" if self.in_function else "at module level"
        return f"{self.path}:{self.line}: {self.source} imports {self.target} ({where})"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(root: Path, name: str) -> bool:
    base = root.joinpath(*name.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imports(root: Path, top: str) -> list[Import]:
    """Every import of ``eval`` / ``diffseg`` modules by the modules under ``root/top``, wherever it stands."""
    out = []
    for path in sorted((root / top).rglob("*.py")):
        source = module_name(root, path)
        package = source.split(".") if path.name == "__init__.py" else source.split(".")[:-1]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        in_function: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
                in_function.update(id(n) for n in ast.walk(node) if n is not node)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolved against the importing module's package
                    base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if is_module(root, f"{base}.{a.name}") else base for a in node.names]
            else:
                continue
            for target in dict.fromkeys(targets):
                if target.split(".")[0] in ("eval", "diffseg"):
                    out.append(Import(source, target, str(path.relative_to(root)), node.lineno,
                                      id(node) in in_function))
    return out


def unit(name: str) -> str:
    """The layering unit of an ``eval`` module: its sub-package, a bottom module, or a CLI module."""
    parts = name.split(".")
    if len(parts) >= 2 and f"eval.{parts[1]}" in PACKAGES:
        return f"eval.{parts[1]}"
    if len(parts) >= 2 and f"eval.{parts[1]}" in BOTTOM:
        return f"eval.{parts[1]}"
    return name if len(parts) == 2 else "eval"


def layer(name: str) -> int:
    u = unit(name)
    if u in BOTTOM:
        return 0
    if u in PACKAGES:
        return 1 + PACKAGES.index(u)
    return 1 + len(PACKAGES)


def cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The strongly connected components of more than one unit (Tarjan), each sorted."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def problems(root: Path) -> list[str]:
    """Every breach of the layer rules in the tree under ``root`` (``eval/`` and ``diffseg/``), one line each."""
    out = []
    found = [i for i in imports(root, "eval") if i.target.split(".")[0] == "eval"]
    edges = {(unit(i.source), unit(i.target)) for i in found if unit(i.source) != unit(i.target)}
    out += [f"package cycle: {' <-> '.join(c)}" for c in cycles(edges)]
    for i in found:
        src, dst = unit(i.source), unit(i.target)
        if src == dst:
            continue
        if layer(dst) == 1 + len(PACKAGES):
            out.append(f"{i}: a CLI module is imported (move what it needs into a library package)")
        elif layer(dst) > layer(src) or (layer(dst) == layer(src) == 0):
            out.append(f"{i}: layer {layer(src)} ({src}) imports layer {layer(dst)} ({dst})")
        if i.in_function and (i.source, i.target) not in LAZY_HEAVY:
            out.append(f"{i}: import of another eval package inside a function (hoist it, or move the code)")
    out += [f"{i}: diffseg imports eval" for i in imports(root, "diffseg") if i.target.split(".")[0] == "eval"]
    out += [f"{i}: {i.target} imports {i.source} at module level: an import inside a function that dodges a cycle"
            for i in cycle_dodges(found)]
    return out


def cycle_dodges(found: list[Import]) -> list[Import]:
    """Function-level imports A -> B (any two eval modules) where B already reaches A at module level.

    Importing ``eval.x.y`` also runs ``eval/x/__init__.py``, so an import reaches the target's packages too.
    """
    graph: dict[str, set[str]] = {}
    for i in found:
        if not i.in_function:
            parts = i.target.split(".")
            graph.setdefault(i.source, set()).update(".".join(parts[:n]) for n in range(2, len(parts) + 1))

    def reaches(start: str, goal: str) -> bool:
        seen, todo = {start}, [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return start == goal

    return [i for i in found if i.in_function and reaches(i.target, i.source)]


def test_eval_layers_point_one_way():
    """No package cycle in eval/, no import upwards or of a CLI module, no hidden cross-package import."""
    assert [p for p in problems(ROOT) if p not in KNOWN] == []


def test_known_breaches_are_current():
    """Each known breach still occurs (a fixed one leaves the list, so it cannot come back unseen)."""
    assert set(KNOWN) <= set(problems(ROOT))


def test_every_eval_package_has_a_layer():
    """A new sub-package of eval/ must be placed in the order above (or this test cannot see its imports)."""
    packages = {f"eval.{p.parent.name}" for p in (ROOT / "eval").glob("*/__init__.py")}
    assert packages <= set(PACKAGES)
    assert {"eval.data", "eval.metrics", "eval.run", "eval.stats", "eval.report"} <= packages
    assert all(is_module(ROOT, name) for name in BOTTOM)


def test_lazy_heavy_allow_list_is_current():
    """Each allowed function-level import still exists (a stale entry would hide a future one)."""
    found = {(i.source, i.target) for i in imports(ROOT, "eval") if i.in_function}
    assert set(LAZY_HEAVY) <= found


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    for folder in ("eval", "diffseg"):
        (tmp_path / folder).mkdir(exist_ok=True)
        (tmp_path / folder / "__init__.py").touch()
    return tmp_path


@pytest.mark.parametrize("files, expected", [
    # a cycle hidden inside a function (metrics -> run at module level, run -> metrics in a function)
    ({"eval/metrics/__init__.py": "from eval.run.build import build\n",
      "eval/run/__init__.py": "", "eval/run/build.py": "def f():\n    from eval.metrics import x\n"},
     ["package cycle: eval.metrics <-> eval.run",
      "eval/metrics/__init__.py:1: eval.metrics imports eval.run.build (at module level): layer 3 (eval.metrics) "
      "imports layer 5 (eval.run)",
      "eval/run/build.py:2: eval.run.build imports eval.metrics (inside a function): import of another eval "
      "package inside a function (hoist it, or move the code)",
      "eval/run/build.py:2: eval.run.build imports eval.metrics (inside a function): eval.metrics imports "
      "eval.run.build at module level: an import inside a function that dodges a cycle"]),
    # the run-folder owner and the spec sit low: the folder may not import a dataset, the spec not the runner
    ({"eval/folder/__init__.py": "", "eval/folder/layout.py": "from eval.data.synthetic_marker import m\n",
      "eval/spec/__init__.py": "", "eval/spec/build.py": "from eval.metrics import p\nfrom eval.run import r\n",
      "eval/data/__init__.py": "", "eval/metrics/__init__.py": "", "eval/run/__init__.py": ""},
     ["eval/folder/layout.py:1: eval.folder.layout imports eval.data.synthetic_marker (at module level): layer 1 "
      "(eval.folder) imports layer 2 (eval.data)",
      "eval/spec/build.py:2: eval.spec.build imports eval.run (at module level): layer 4 (eval.spec) imports layer 5 "
      "(eval.run)"]),
    # library code importing a CLI module, by a relative import
    ({"eval/report/__init__.py": "", "eval/report/tables.py": "from ..compare import load\n",
      "eval/compare.py": "def load(): pass\n"},
     ["eval/report/tables.py:1: eval.report.tables imports eval.compare (at module level): a CLI module is "
      "imported (move what it needs into a library package)"]),
    # the library importing the harness
    ({"diffseg/segment.py": "import eval.atomic\n", "eval/atomic.py": ""},
     ["diffseg/segment.py:1: diffseg.segment imports eval.atomic (at module level): diffseg imports eval"]),
    # a cycle inside one package, dodged by a function-level import
    ({"eval/data/__init__.py": "", "eval/data/classes.py": "from eval.data.download import pinned\n",
      "eval/data/download.py": "def pinned():\n    from eval.data.classes import modules\n"},
     ["eval/data/download.py:2: eval.data.download imports eval.data.classes (inside a function): "
      "eval.data.classes imports eval.data.download at module level: an import inside a function that dodges a "
      "cycle"]),
    # a lazy import of a heavy sibling that does not import back: allowed
    ({"eval/report/__init__.py": "", "eval/report/figures.py": "import matplotlib\n",
      "eval/report/tables.py": "def f():\n    from eval.report.figures import plot_sweep\n"}, []),
    # downwards, at module level: allowed
    ({"eval/report/__init__.py": "from eval.stats import runs\n", "eval/stats/__init__.py": "",
      "eval/stats/runs.py": "from eval.metrics.summed_scores import scores\nfrom eval.atomic import w\n",
      "eval/metrics/__init__.py": "", "eval/metrics/summed_scores.py": "", "eval/atomic.py": ""}, []),
])
def test_checker_sees_each_breach(tmp_path, files, expected):
    """The checker itself: each rule fires on a small tree that breaks it, and not on one that keeps it."""
    assert problems(_tree(tmp_path, files)) == expected
