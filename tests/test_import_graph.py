"""The package's imports have no cycles: the module-level import graph of crossrec_cli is acyclic,
and no import inside a function is there to break a cycle (each one, made module-level, would
still leave the graph acyclic; such imports exist to keep optional or heavy libraries out of the
command line's start-up, never to hide a cycle)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "crossrec_cli"


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _targets(module: str, node: ast.Import | ast.ImportFrom, modules: dict[str, Path]) -> set[str]:
    """The package modules an import statement loads (``from pkg import name``: pkg.name when it
    is a module, else pkg)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            pkg = module.split(".")
            if modules[module].name != "__init__.py":
                pkg = pkg[:-1]
            pkg = pkg[: len(pkg) - node.level + 1]
            base = ".".join(pkg + ([base] if base else []))
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    found = set()
    for name in names:  # importing a.b.c runs a/__init__, a/b/__init__ too, except the packages that hold
        # ``module`` (already being imported when it runs); naming such a package itself still counts
        parts = name.split(".")
        found |= {".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in modules
                  and not module.startswith(".".join(parts[:i]) + ".")}
        found |= {name} & set(modules)
    return found - {module}


def _graphs() -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module-level imports, imports inside functions) of every module of the package."""
    modules = _modules()
    top: dict[str, set[str]] = {m: set() for m in modules}
    inner: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text())
        in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
                        for n in ast.walk(f) if isinstance(n, (ast.Import, ast.ImportFrom))}
        typing_only = {id(n) for b in ast.walk(tree) if isinstance(b, ast.If) and ast.unparse(b.test).endswith("TYPE_CHECKING")
                       for n in ast.walk(b) if isinstance(n, (ast.Import, ast.ImportFrom))}  # never run
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in typing_only:
                (inner if id(node) in in_functions else top)[module] |= _targets(module, node, modules)
    return top, inner


def _reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, stack = {start}, [start]
    while stack:
        node = stack.pop()
        if node == goal:
            return True
        for nxt in graph[node] - seen:
            seen.add(nxt)
            stack.append(nxt)
    return False


def test_module_level_imports_have_no_cycle():
    top, _ = _graphs()
    cycles = sorted(f"{a} -> {b}" for a in top for b in top[a] if _reaches(top, b, a))
    assert not cycles, f"import cycles through: {cycles}"


def test_no_import_inside_a_function_hides_a_cycle():
    top, inner = _graphs()
    hidden = sorted(f"{a} -> {b}" for a in inner for b in inner[a] - top[a] if _reaches(top, b, a))
    assert not hidden, f"imports inside functions that would close a cycle at module level: {hidden}"


def test_the_checks_see_a_cycle(tmp_path, monkeypatch):
    """The graph reader finds a planted cycle (a -> b -> a) and a function import hiding one."""
    pkg = tmp_path / "crossrec_cli"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from crossrec_cli.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from crossrec_cli import a\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", pkg)
    top, inner = _graphs()
    assert top["crossrec_cli.a"] == {"crossrec_cli.sub", "crossrec_cli.sub.b"}  # not its own package
    assert inner["crossrec_cli.sub.b"] == {"crossrec_cli.a"}
    assert _reaches(top, "crossrec_cli.a", "crossrec_cli.sub.b") and not _reaches(top, "crossrec_cli.sub.b", "crossrec_cli.a")
