"""Counts of the package's structure, for the notes that track them (read from the sources, nothing imported).

    python scripts/code_metrics.py [--json]

- imports of the package's own modules at the top of files and inside functions;
- import cycles among its modules, counting every import (a function-local one breaks a cycle at import time,
  not in the design) and counting top-level ones only;
- `# fmt: skip` markers;
- string-key lookups (`x["key"]`, `x.get("key")`);
- CLI options declared more than once (a flag name in several `typer.Option(...)` calls).
"""

from __future__ import annotations

import argparse
import ast
import json
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "eca_deploy"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _resolve(module: str, node: ast.ImportFrom | ast.Import, is_package: bool, modules: set[str]) -> list[str]:
    """The modules an import names: `from a import b` names a.b when that is a module, else a."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:
        anchor = module.split(".")
        anchor = anchor if is_package else anchor[:-1]
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]


def _type_checking(node: ast.If) -> bool:
    return "TYPE_CHECKING" in ast.unparse(node.test)


def imports(path: Path, modules: set[str]) -> tuple[set[str], set[str]]:
    """(modules imported at the top, modules imported inside functions), the package's own only."""
    module = module_name(path)
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    local: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for name in _resolve(module, child, path.name == "__init__.py", modules):
                    if name in modules and name != module:
                        (local if in_function else top).add(name)
            visit(child, inner)

    visit(tree, False)
    return top, local


def local_import_statements(path: Path) -> tuple[int, int]:
    """(top-level, function-local) import statements of the package's own modules."""
    tree = ast.parse(path.read_text())
    counts = [0, 0]

    def own(node: ast.Import | ast.ImportFrom) -> bool:
        if isinstance(node, ast.ImportFrom):
            return node.level > 0 or (node.module or "").split(".")[0] == PACKAGE
        return any(a.name.split(".")[0] == PACKAGE for a in node.names)

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, (ast.Import, ast.ImportFrom)) and own(child):
                counts[in_function] += 1
            visit(child, inner)

    visit(tree, False)
    return counts[0], counts[1]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def _string_key(node: ast.AST) -> bool:
    """x["key"] or x.get("key")."""
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and bool(node.args)
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def string_keys(path: Path) -> int:
    return sum(_string_key(node) for node in ast.walk(ast.parse(path.read_text())))


def option_declarations(paths: list[Path]) -> Counter[str]:
    flags: Counter[str] = Counter()
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and ast.unparse(node.func) in ("typer.Option", "Option"):
                names = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                long = [n.split("/")[0] for n in names if n.startswith("--")]
                if long:
                    flags[long[0]] += 1
    return flags


def measure() -> dict:
    paths = sorted((ROOT / PACKAGE).rglob("*.py"))
    modules = {module_name(p) for p in paths}
    top_graph: dict[str, set[str]] = {}
    all_graph: dict[str, set[str]] = {}
    top_n = local_n = 0
    for path in paths:
        top, local = imports(path, modules)
        top_graph[module_name(path)] = top
        all_graph[module_name(path)] = top | local
        t, f = local_import_statements(path)
        top_n, local_n = top_n + t, local_n + f
    flags = option_declarations(sorted((ROOT / PACKAGE / "cli").rglob("*.py")))
    return {
        "modules": len(modules),
        "lines": sum(len(p.read_text().splitlines()) for p in paths),
        "own_imports_top": top_n,
        "own_imports_local": local_n,
        "cycles_all_imports": cycles(all_graph),
        "cycles_top_imports": cycles(top_graph),
        "fmt_skip": sum(p.read_text().count("# fmt: skip") for p in paths),
        "string_key_lookups": sum(string_keys(p) for p in paths),
        "options_declared_more_than_once": {k: v for k, v in flags.most_common() if v > 1},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the counts as JSON")
    args = parser.parse_args()
    found = measure()
    if args.json:
        print(json.dumps(found, indent=2))
        return
    for key, value in found.items():
        if isinstance(value, list):
            print(f"{key}: {len(value)}")
            for component in value:
                print("   ", " <-> ".join(component))
        elif isinstance(value, dict):
            print(f"{key}: {len(value)}  " + ", ".join(f"{k} x{v}" for k, v in value.items()))
        else:
            print(f"{key}: {value}")


if __name__ == "__main__":
    main()
