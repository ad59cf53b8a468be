"""The house rules of the layout: imports point one way (command line -> parity, FVD,
export, benchmarks -> twins -> the recipe (the training loop, its data and checkpoints, with a
backend per twin) -> video -> core), no module imports itself back through a cycle, and the
numpy core loads without any framework."""
import ast
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each package may import its own level or lower ones; benchmarks also use the parity suite's
# reference loader, the FVD extractor and the exporters.
LEVEL = {"convert": 0, "i3d_video": 1, "recipe": 2, "i3d_torch": 3, "i3d_ms": 3,
         "parity_tests": 4, "benchmarks": 4, "fvd": 4, "export": 4, "i3d_cli": 5}
SIDEWAYS = {("benchmarks", "parity_tests"), ("benchmarks", "fvd"), ("benchmarks", "export")}


def _modules():
    """{dotted module name: path} of every project module."""
    out = {}
    for pkg in LEVEL:
        for folder, _, files in os.walk(os.path.join(REPO, pkg)):
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, f), REPO)[:-3].split(os.sep)
                    out[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = \
                        os.path.join(folder, f)
    return out


def _imports(name, path, modules):
    """Project modules that `name` imports anywhere (module level or inside functions)."""
    is_pkg = path.endswith("__init__.py")
    base = name if is_pkg else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                parts = base.split(".")
                parent = ".".join(parts[:len(parts) - node.level + 1])
                mod = f"{parent}.{mod}" if mod else parent
            targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod
                       for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def test_imports_point_down_the_layers_and_form_no_cycle():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    wrong = [(m, t) for m, ts in graph.items() for t in ts
             if (m.split(".")[0], t.split(".")[0]) not in SIDEWAYS
             and m.split(".")[0] != t.split(".")[0]
             and LEVEL[t.split(".")[0]] >= LEVEL[m.split(".")[0]]]
    assert not wrong, wrong
    state, cycles = {}, []

    def visit(m, stack):
        state[m] = "open"
        for t in sorted(graph[m]):
            if state.get(t) == "open":
                cycles.append(stack[stack.index(t):] + [t])
            elif t not in state:
                visit(t, stack + [t])
        state[m] = "done"

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, cycles
    assert len(graph) > 40 and graph["i3d_cli.main"]  # the walk saw the whole project


def _loaded(package: str) -> set:
    """The top-level modules loaded by importing every module of `package` in a new process."""
    mods = sorted(m for m in _modules() if m.split(".")[0] == package)
    code = ("import sys\n" + "".join(f"import {m}\n" for m in mods) +
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    return set(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.split())


def test_convert_imports_only_numpy():
    loaded = _loaded("convert")
    assert "numpy" in loaded and "convert" in loaded
    foreign = {"torch", "mindspore", "jax", "flax", "PIL", "decord", "yaml", "safetensors",
               "matplotlib", *LEVEL} - {"convert"}
    assert not loaded & foreign, loaded & foreign


def test_the_recipe_imports_no_framework():
    """The training loop and what both loops share run under either framework alone: importing
    every recipe module loads neither torch nor MindSpore (nor JAX)."""
    loaded = _loaded("recipe")
    assert "recipe" in loaded and "numpy" in loaded
    assert not loaded & {"torch", "mindspore", "jax", "i3d_ms", "i3d_torch"}, loaded
