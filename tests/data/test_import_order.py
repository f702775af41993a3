"""The data package's imports go in one direction (aya_jax/data/__init__.py): a module imports only modules of
an earlier layer, or, if it is a leaf, other leaves (without a cycle); and no module imports an aya_jax module
inside a function, where a circle would hide until that function runs. Read from the source with `ast`."""

import ast
import pathlib

import aya_jax.data

DATA_DIR = pathlib.Path(aya_jax.data.__file__).parent
PACKAGE = "aya_jax.data"

# module -> layer; a module may import modules of lower layers, and a leaf (layer 0) other leaves.
LAYERS = {
    **dict.fromkeys(
        (
            "cache",
            "languages",
            "chat_template",
            "sources",
            "source_files",
            "tfds_builder",
            "vocab",
            "default_data",
            "preference_default",
            "feature_converters",
            "prompt_converters",
        ),
        0,
    ),
    "tasks": 1,
    "catalog": 2,
    "mixtures": 3,
    "registry": 4,
    "pipeline": 5,
}


def _modules() -> dict[str, ast.Module]:
    return {
        path.stem: ast.parse(path.read_text(), filename=str(path))
        for path in sorted(DATA_DIR.glob("*.py"))
        if path.name != "__init__.py"
    }


def _imported(node: ast.Import | ast.ImportFrom) -> list[str]:
    """The absolute names of the modules (or, for `from m import x`, of `m.x`) that an import statement names,
    resolved as if it were in a module of aya_jax.data."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative to aya_jax.data (a module here is at level 1)
        base = ".".join(PACKAGE.split(".")[: len(PACKAGE.split(".")) - (node.level - 1)])
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    return [f"{base}.{alias.name}" for alias in node.names]


def _data_module(name: str) -> str | None:
    """The aya_jax.data module that an imported name belongs to, if any."""
    if not name.startswith(PACKAGE + "."):
        return None
    return name[len(PACKAGE) + 1 :].split(".")[0]


def _imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement of a module, with whether it is inside a function body."""
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append((child, in_function))
            inner = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            visit(child, inner)

    visit(tree, False)
    return found


def _data_imports(tree: ast.Module) -> list[tuple[str, int]]:
    """(imported data module, line) for every import of a data module, at any depth."""
    return [
        (module, node.lineno)
        for node, _ in _imports(tree)
        for name in _imported(node)
        if (module := _data_module(name)) is not None and module in LAYERS
    ]


def test_every_data_module_has_a_layer():
    modules = set(_modules())
    assert not modules - set(LAYERS), f"modules without a layer in LAYERS: {sorted(modules - set(LAYERS))}"
    assert not set(LAYERS) - modules, f"LAYERS names missing modules: {sorted(set(LAYERS) - modules)}"


def test_data_modules_import_only_earlier_layers():
    wrong = []
    for module, tree in _modules().items():
        layer = LAYERS.get(module)
        for imported, line in _data_imports(tree):
            if layer is None or not (LAYERS[imported] < layer or LAYERS[imported] == layer == 0):
                where = f"aya_jax/data/{module}.py:{line}"
                wrong.append(
                    f"{where}: {module} (layer {layer}) imports {imported} (layer {LAYERS[imported]})"
                )
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_leaves_import_each_other_without_a_cycle():
    leaves = {module for module, layer in LAYERS.items() if layer == 0}
    modules = _modules()
    edges = {
        leaf: {imported for imported, _ in _data_imports(modules[leaf]) if imported in leaves}
        for leaf in leaves
        if leaf in modules
    }
    done: set[str] = set()
    while len(done) < len(edges):
        ready = {leaf for leaf, imported in edges.items() if leaf not in done and imported <= done}
        assert ready, f"import cycle among the leaves: {sorted(set(edges) - done)}"
        done |= ready


def test_no_aya_jax_import_inside_a_function():
    wrong = [
        f"aya_jax/data/{module}.py:{node.lineno}: {name}"
        for module, tree in _modules().items()
        for node, in_function in _imports(tree)
        if in_function
        for name in _imported(node)
        if name == "aya_jax" or name.startswith("aya_jax.")
    ]
    assert not wrong, "aya_jax imports inside functions (import them at the top):\n" + "\n".join(wrong)
