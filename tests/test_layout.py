"""The package's layout rules, checked on its source with `ast` (nothing is imported):

* the import graph of aya_jax modules has no cycle (imports inside functions included, so none can hide one);
* no import of an aya_jax module is placed inside a function;
* nothing outside aya_jax/jobs/ imports a job (main.py reaches them through the registry by name), and no job
  imports another job;
* no training objective imports another objective;
* models know nothing of meshes, data, configs or training;
* the README's Layout block names every module and package of the tree;
* no two test modules share a file name (the test folders are not packages).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "aya_jax"
OBJECTIVES = {f"aya_jax.training.{name}" for name in ("sft", "reward", "dpo", "rloo")}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(path: pathlib.Path) -> list[tuple[str, int, bool]]:
    """(aya_jax module imported, line, inside a function) for every import statement of the file. `from pkg
    import name` is an import of `pkg.name` when that is a module, else of `pkg`."""
    tree = ast.parse(path.read_text(), str(path))
    out: list[tuple[str, int, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend(
                    (a.name, child.lineno, in_function) for a in child.names if a.name.startswith("aya_jax")
                )
            elif isinstance(child, ast.ImportFrom) and child.module and child.module.startswith("aya_jax"):
                for a in child.names:
                    sub = f"{child.module}.{a.name}"
                    out.append((sub if sub in MODULES else child.module, child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return out


GRAPH = {name: _imports(path) for name, path in MODULES.items()}


def test_the_layout_is_what_the_test_expects():
    for name in (
        "aya_jax.main",
        "aya_jax.jobs",
        "aya_jax.training.loop",
        *OBJECTIVES,
        "aya_jax.models.families",
    ):
        assert name in MODULES, name


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target, _, _ in GRAPH.get(node, ()):
            if target not in MODULES:
                continue
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[node] = 2

    for module in MODULES:
        if module not in state:
            visit(module)


def test_no_aya_jax_import_inside_a_function():
    hidden = [f"{MODULES[m].relative_to(REPO)}:{line} imports {t}" for m, imps in GRAPH.items()
              for t, line, inside in imps if inside]  # fmt: skip
    assert not hidden, "imports placed inside functions:\n" + "\n".join(hidden)


def test_nothing_imports_a_job_and_jobs_do_not_import_each_other():
    bad = []
    for module, imps in GRAPH.items():
        for target, line, _ in imps:
            if not target.startswith("aya_jax.jobs.") or target == module:
                continue
            bad.append(f"{MODULES[module].relative_to(REPO)}:{line} imports the job {target}")
    assert not bad, "\n".join(bad)
    # Only the entry point uses the registry.
    users = [
        m
        for m, imps in GRAPH.items()
        for t, _, _ in imps
        if t == "aya_jax.jobs" and not m.startswith("aya_jax.jobs")
    ]
    assert users == ["aya_jax.main"], users


def test_no_objective_imports_another():
    bad = [f"{m} imports {t}" for m in OBJECTIVES for t, _, _ in GRAPH[m] if t in OBJECTIVES and t != m]
    assert not bad, bad


def test_models_know_nothing_of_meshes_data_configs_or_training():
    forbidden = ("aya_jax.sharding", "aya_jax.data", "aya_jax.defaults", "aya_jax.training", "aya_jax.jobs",
                 "aya_jax.pretrained", "aya_jax.checkpoint")  # fmt: skip
    bad = [f"{m} imports {t}" for m, imps in GRAPH.items() if m.startswith("aya_jax.models")
           for t, _, _ in imps if t.startswith(forbidden)]  # fmt: skip
    assert not bad, bad


def test_readme_layout_names_every_module():
    readme = (REPO / "README.md").read_text()
    block = readme.split("## Layout", 1)[1].split("```", 2)[1]
    missing = []
    for path in MODULES.values():
        rel = path.relative_to(REPO)
        if rel.name == "__init__.py" and path.parent != PACKAGE:
            name = f"{rel.parent}/"
            if name not in block:
                missing.append(name)
        elif rel.name != "__init__.py":
            # A module is named in its folder's entry (`aya_jax/training/`, then `loop.py, ...`) or in full.
            if rel.name not in block and str(rel) not in block:
                missing.append(str(rel))
    assert not missing, f"README Layout misses: {missing}"


def test_no_two_test_modules_share_a_file_name():
    # tests/ folders are not packages: pytest's default import mode imports each test module by its bare file name,
    # so two `test_x.py` in different folders fail to collect when one worker meets both.
    by_name: dict[str, list[str]] = {}
    for path in sorted((REPO / "tests").rglob("*.py")):
        if path.name != "conftest.py" and "__pycache__" not in path.parts:
            by_name.setdefault(path.name, []).append(str(path.relative_to(REPO)))
    assert not {n: p for n, p in by_name.items() if len(p) > 1}
