"""The package's dependency structure, read from the source with ``ast`` (nothing is
imported): no import circle between modules, no import from a lower layer to a higher
one, and every import inside a library function says why in a comment.

Run: ``.venv/bin/python -m pytest tests/test_layers.py -q``
"""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("model_garden", "vtg_datasets")

# The layers, lowest first: layer -> (module prefixes, the other layers it may import).
# A module belongs to the layer of its longest matching prefix and may always import
# modules of its own layer. training and inference are siblings: neither imports the
# other. vtg sits beside the pipeline; cli and the notes' shims sit on top and nothing
# below imports them; testing is test support that library code never imports.
LAYERS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "base": (("model_garden", "model_garden.jsonfmt", "model_garden.options", "model_garden.progress",
              "model_garden.models", "model_garden.vision_compat", "model_garden.grammar", "model_garden.locks",
              "model_garden.extras"), ()),
    "data": (("model_garden.data",), ("base",)),
    "masking": (("model_garden.masking",), ("base", "data")),
    "training": (("model_garden.training",), ("base", "data", "masking")),
    "inference": (("model_garden.inference",), ("base", "data", "masking")),
    "evaluation": (("model_garden.evaluation",), ("base", "data", "masking", "training", "inference")),
    "export": (("model_garden.export",), ("base", "data", "masking", "training", "inference")),
    "experiments": (("model_garden.experiments",), ("base", "data", "masking", "training", "inference", "evaluation", "export")),
    "vtg": (("model_garden.vtg",), ("base", "data", "masking", "training", "inference", "evaluation")),
    "testing": (("model_garden.testing",), ("base", "data", "masking")),
    "cli": (("model_garden.cli", "model_garden.__main__"),
            ("base", "data", "masking", "training", "inference", "evaluation", "export", "experiments", "vtg")),
    "shims": (("model_garden.selective_loss", "model_garden.vision_training", "vtg_datasets"),
              ("base", "data", "masking", "training", "inference", "evaluation", "export", "experiments", "vtg")),
}
LEVEL = {"base": "0", "data": "1", "masking": "2", "training": "3", "inference": "3", "evaluation": "4", "export": "5",
         "experiments": "5", "vtg": "beside", "testing": "test support", "cli": "top", "shims": "top"}
# Library code, whose imports inside functions need a comment saying why.
LIBRARY = ("base", "data", "masking", "training", "inference", "evaluation", "export", "experiments", "vtg")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _modules()


def layer_of(module: str) -> str:
    prefix = max((p for prefixes, _ in LAYERS.values() for p in prefixes if module == p or module.startswith(p + ".")), key=len)
    return next(name for name, (prefixes, _) in LAYERS.items() if prefix in prefixes)


def _in_tree(name: str) -> str | None:
    """``name`` or its longest in-tree prefix (``from model_garden.masking import x`` may
    name an attribute); None for a third-party module."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


@dataclass(frozen=True)
class Import:
    importer: str
    path: Path
    line: int
    name: str  # as written, relative imports resolved; ``from X import sub`` gives X.sub when sub is a module
    where: str  # "module" (runs at import time; class bodies too), "function", "main" or "type-checking"
    commented: bool  # a comment on its lines or on the line above its run of consecutive imports

    @property
    def target(self) -> str | None:
        return _in_tree(self.name)

    @property
    def parents(self) -> list[str]:
        """Packages whose ``__init__`` runs on the way to ``target``, except those the
        importer is inside (they are already loading when it runs)."""
        parts = (self.target or "").split(".")
        above = (".".join(parts[:i]) for i in range(1, len(parts)))
        return [p for p in above if not (self.importer == p or self.importer.startswith(p + "."))]

    def __str__(self) -> str:
        context = {"module": "", "function": ", inside a function", "main": ", under __main__", "type-checking": ", under TYPE_CHECKING"}
        return f"{self.path.relative_to(REPO)}:{self.line}{context[self.where]}"


def _comment_lines(source: str) -> set[int]:
    return {t.start[0] for t in tokenize.generate_tokens(io.StringIO(source).readline) if t.type == tokenize.COMMENT}


def _run_starts(tree: ast.Module) -> dict[int, int]:
    """The first line of the run of consecutive import statements each import is in:
    one comment above a run of lazy imports covers all of them."""
    starts: dict[int, int] = {}
    for node in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            statements = getattr(node, field, None)
            if not isinstance(statements, list):  # a lambda's or an ``x if c else y``'s body
                continue
            start, previous = None, None
            for stmt in statements:
                if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    start = start if previous is not None and stmt.lineno == previous + 1 else stmt.lineno
                    starts[id(stmt)] = start
                    previous = stmt.end_lineno
                else:
                    start, previous = None, None
    return starts


def _guard(test: ast.expr) -> str | None:
    text = ast.unparse(test)
    if text in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
        return "type-checking"
    if text in ("__name__ == '__main__'", "'__main__' == __name__"):
        return "main"
    return None


def _imports(module: str, path: Path) -> list[Import]:
    """Every import statement anywhere in the module, one entry per name imported."""
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source, str(path))
    comments, run_start = _comment_lines(source), _run_starts(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def add(node: ast.stmt, name: str, where: str) -> None:
        first = run_start.get(id(node), node.lineno)
        commented = any(n in comments for n in range(first - 1, node.end_lineno + 1))
        found.append(Import(module, path, node.lineno, name, where, commented))

    def visit(node: ast.AST, where: str) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(node, alias.name, where)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: ``.`` is this module's package, each further dot one up
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            submodules = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            for name in submodules or [base]:
                add(node, name, where)
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and where != "main":
                inner = "function"
            elif isinstance(node, ast.If) and child in node.body and where == "module":
                inner = _guard(node.test) or where
            visit(child, inner)

    visit(tree, "module")
    return found


IMPORTS = [imp for module, path in MODULES.items() for imp in _imports(module, path)]
# Imports between in-tree modules (an import of the module itself, e.g. in a __main__ demo, is left out).
INTERNAL = [imp for imp in IMPORTS if imp.target is not None and imp.target != imp.importer]


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle per strongly connected component of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = stack[stack.index(v):]
            del stack[stack.index(v):]
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)

    cycles = []
    for component in components:  # breadth first from the component's first module back to it
        members, start = set(component), component[0]
        paths, seen = [[start]], {start}
        while paths:
            path = paths.pop(0)
            following = sorted(w for w in edges.get(path[-1], ()) if w in members)
            if start in following:
                cycles.append([*path, start])
                break
            for w in following:
                if w not in seen:
                    seen.add(w)
                    paths.append([*path, w])
    return cycles


def test_the_walk_sees_the_package():
    assert {"model_garden", "model_garden.masking.build", "model_garden.cli", "vtg_datasets"} <= MODULES.keys()
    assert [layer_of(m) for m in ("model_garden", "model_garden.grammar", "model_garden.masking.build", "model_garden.export.llama_cpp",
                                  "model_garden.cli.train", "vtg_datasets.collate_fns")] == ["base", "base", "masking", "export", "cli", "shims"]
    # Relative imports resolve; ``from package import submodule`` names the submodule.
    masking = {imp.target for imp in INTERNAL if imp.importer == "model_garden.masking" and imp.where == "module"}
    assert "model_garden.masking.codec" in masking, masking
    assert any(imp.target == "model_garden.training.run" for imp in INTERNAL if imp.importer.startswith("model_garden.cli")), "cli runs train()"
    assert _cycles({"a": {"b"}, "b": {"c", "d"}, "c": {"a"}, "d": set(), "e": {"a", "e"}}) == [["a", "b", "c", "a"]]


def test_no_import_circle():
    """Module-level imports only: an import inside a function runs after every module it
    could meet is loaded, so it cannot close a circle at import time. Importing
    ``a.b.c`` also runs ``a/b/__init__.py``, so packages on the way count too."""
    edges: dict[str, set[str]] = {}
    first: dict[tuple[str, str], Import] = {}
    for imp in INTERNAL:
        if imp.where == "module":
            for target in (imp.target, *imp.parents):
                edges.setdefault(imp.importer, set()).add(target)
                first.setdefault((imp.importer, target), imp)
    cycles = _cycles(edges)
    described = ["\n  ".join(f"{a} -> {b}  ({first[a, b]})" for a, b in zip(cycle, cycle[1:])) for cycle in cycles]
    assert not cycles, "import circles (module-level imports):\n  " + "\n\n  ".join(described)


def test_no_import_from_a_lower_layer_to_a_higher_one():
    """Every import counts, also those inside functions and __main__ demos: they still make
    the lower layer depend on the higher one."""
    bad = []
    for imp in INTERNAL:
        mine, theirs = layer_of(imp.importer), layer_of(imp.target)
        if mine != theirs and theirs not in LAYERS[mine][1]:
            bad.append(f"{imp}: {imp.importer} (layer {mine}, {LEVEL[mine]}) imports {imp.target} (layer {theirs}, {LEVEL[theirs]})")
    assert not bad, f"{len(bad)} imports against the layers (see LAYERS in {Path(__file__).name}):\n  " + "\n  ".join(bad)


def test_imports_inside_library_functions_say_why():
    """Imports belong at the top of a module; one inside a function is there for an
    optional dependency and says so in a comment on its line or the line above (one
    comment may head a run of consecutive imports). cli, testing, the shims and
    ``if __name__ == "__main__":`` demos are left out."""
    bad = sorted(
        {f"{imp}: {imp.importer} imports {imp.name}" for imp in IMPORTS
         if imp.where == "function" and layer_of(imp.importer) in LIBRARY and not imp.commented},
        key=lambda text: (text.split(":")[0], int(text.split(":")[1].split(",")[0])),
    )
    assert not bad, f"{len(bad)} imports inside library functions without a comment saying why:\n  " + "\n  ".join(bad)
