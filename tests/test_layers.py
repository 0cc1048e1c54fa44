"""Layers point down (STYLE.md): every import inside ptdsl/, at module level or inside a
function, goes to its own unit or to one in a lower layer. The layers, lowest first:

    diagnostics, resources              shared leaves
    library                             the method specs shipped
    syntax                              text → AST
    ir                                  AST → graph; the op table; constant evaluation
    passes                              checks and rewrites of the graph
    plan                                what the graph asks of the runtime
    codegen, inputs                     generated torch source; checking loss inputs
    compiler                            the pipeline
    api                                 load / compile / CompiledMethod
    inspect, equivalence, runtime       what uses a compiled method: none imports another
    rewards                             the public name for registering reward functions
    integrations                        other libraries' trainers running a compiled method
    ptdsl (the package)                 the public facade
    cli                                 the command line
    __main__                            `python -m ptdsl`

So ir/ imports nothing from passes/, codegen/ or runtime/; passes/ nothing from the runtime;
inspect/ nothing from the runtime. A new top-level module or package must be given a layer here.
"""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ptdsl"

LAYERS = [
    {"version"},
    {"diagnostics", "resources"},
    {"library"},
    {"syntax"},
    {"ir"},
    {"passes"},
    {"plan"},
    {"codegen", "inputs", "sharing"},
    {"compiler"},
    {"api"},
    {"inspect", "equivalence", "runtime"},
    {"rewards", "environments", "integrations"},
    {"ptdsl"},
    {"cli"},
    {"__main__"},
]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def _unit(module: str) -> str:
    """`ptdsl.ir.lower` → `ir`; `ptdsl` itself → `ptdsl`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "ptdsl"


def _module_of(path: Path) -> tuple[str, bool]:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    is_pkg = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_pkg else parts), is_pkg


def imports(path: Path) -> list[tuple[str, int]]:
    """(imported ptdsl module, line) for every import in the file; `from ptdsl import x` names the
    submodule x where there is one, relative imports are resolved."""
    module, is_pkg = _module_of(path)
    package = module if is_pkg else module.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(up + ([node.module] if node.module else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                is_module = (PKG.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                    (PKG.parent / Path(*sub.split(".")) / "__init__.py").exists()
                out.append((sub if is_module else base, node.lineno))
    return [(m, line) for m, line in out if m == "ptdsl" or m.startswith("ptdsl.")]


def upward_imports() -> list[str]:
    found = []
    for path in sorted(PKG.rglob("*.py")):
        here = _unit(_module_of(path)[0])
        for target, line in imports(path):
            there = _unit(target)
            if there != here and LAYER[there] >= LAYER[here]:
                found.append(f"{path.relative_to(PKG.parent)}:{line}: {here} imports {target} "
                             f"({there} is {'a sibling' if LAYER[there] == LAYER[here] else 'above'})")
    return found


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").exists()}
    assert units | {"ptdsl"} <= set(LAYER), f"give these a layer in tests/test_layers.py: {units - set(LAYER)}"


def test_layers_point_down():
    assert upward_imports() == []


def test_an_upward_import_is_found(tmp_path, monkeypatch):
    """The check itself: an import of passes/ from ir/, or of the package from the runtime, is caught."""
    fake = tmp_path / "ptdsl"
    (fake / "ir").mkdir(parents=True)
    (fake / "passes").mkdir()
    (fake / "runtime").mkdir()
    for d in ("", "ir", "passes", "runtime"):
        (fake / d / "__init__.py").write_text("")
    (fake / "passes" / "params.py").write_text("")
    (fake / "ir" / "lower.py").write_text("def f():\n    from ptdsl.passes.params import const_eval\n")
    (fake / "runtime" / "loop.py").write_text("import ptdsl\nfrom .. import passes\nfrom ptdsl.ir import lower\n")
    monkeypatch.setattr(__import__(__name__), "PKG", fake)
    assert upward_imports() == [
        "ptdsl/ir/lower.py:2: ir imports ptdsl.passes.params (passes is above)",
        "ptdsl/runtime/loop.py:1: runtime imports ptdsl (ptdsl is above)"]
