"""The layer rule: imports run only downward, inside functions too (docs/architecture.md).

    aesformer_processing  <-  modeling_aesformer  <-  aesformer_training  <-  aesformer_cli

Every module of the four packages is parsed and every `import` / `from ... import` statement in it (module level,
function bodies, `if TYPE_CHECKING:` blocks, relative imports resolved) is checked against the module's own layer.
"""

import ast
import pathlib
import tomllib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
LAYERS = ["aesformer_processing", "modeling_aesformer", "aesformer_training", "aesformer_cli"]
# The two files the README runs as `accelerate launch training/pretrain.py` / `training/adapt.py`: they live in the
# training folder (the user fixed the layout) but are launch scripts of the command line (they only call
# `aesformer_cli.train`), so they belong to the top layer.
LAUNCH_SCRIPTS = {"aesformer_training.pretrain", "aesformer_training.adapt"}


def _package_dirs():
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["setuptools"]["package-dir"]


def _modules():
    """(module name, path) of every Python file of the four packages, as pyproject maps them."""
    found = []
    for package, folder in _package_dirs().items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = path.relative_to(REPO / folder).with_suffix("").parts
            name = ".".join((package,) + parts)
            found.append((name.removesuffix(".__init__"), path))
    return found


def _imported(module: str, path: pathlib.Path, tree: ast.AST):
    """(line, imported module name) for every import statement anywhere in `tree`."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                yield node.lineno, ".".join(base + ([node.module] if node.module else []))
            else:
                yield node.lineno, node.module


def _layer(module: str) -> int:
    if module in LAUNCH_SCRIPTS:
        return len(LAYERS) - 1
    return LAYERS.index(module.split(".")[0])


def upward_imports(modules):
    """'path:line: module imports name (layer a -> b)' for each import that runs up a layer."""
    found = []
    for module, path in modules:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, name in _imported(module, path, tree):
            top = name.split(".")[0]
            if top in LAYERS and LAYERS.index(top) > _layer(module):
                found.append(f"{path}:{line}: {module} imports {name} "
                             f"({LAYERS[_layer(module)]} -> {top})")
    return found


def test_pyproject_declares_the_four_layers():
    assert set(_package_dirs()) == set(LAYERS)


def test_every_import_runs_down_a_layer():
    modules = _modules()
    assert len(modules) > 40 and {m.split(".")[0] for m, _ in modules} == set(LAYERS)
    assert upward_imports(modules) == []


def test_launch_scripts_only_launch():
    """The exception above stays narrow: the launch scripts import the command line and nothing else of ours."""
    for module, path in _modules():
        if module in LAUNCH_SCRIPTS:
            names = {name.split(".")[0] for _, name in _imported(module, path, ast.parse(path.read_text()))}
            assert names <= {"sys", "aesformer_cli"}, (module, names)


@pytest.mark.parametrize("source, expected", [
    ("def f():\n    from aesformer_training.loop import train\n", "aesformer_training.loop"),  # function body
    ("def f():\n    from aesformer_processing import AesformerProcessor\n", None),  # downward: fine
    ("if True:\n    import aesformer_cli.main as m\n", "aesformer_cli.main"),
])
def test_the_check_sees_imports_in_bodies(tmp_path, source, expected):
    """The walker itself: an upward import hidden in a function body or a block is reported."""
    path = tmp_path / "x.py"
    path.write_text(source)
    found = upward_imports([("modeling_aesformer.x", path)]) if expected else []
    if expected:
        assert len(found) == 1 and expected in found[0]
    else:
        assert found == []
