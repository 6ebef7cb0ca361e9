"""The layer rule: imports run only downward, inside functions too (docs/architecture.md).

    aesformer_processing  <-  modeling_aesformer  <-  aesformer_training  <-  aesformer_cli

Every module of the four packages is parsed and every `import` / `from ... import` statement in it (module level,
function bodies, `if TYPE_CHECKING:` blocks, relative imports resolved) is checked against the module's own layer.

No import cycles between the modules of one package (function bodies count).

And the shipped-files rule: the files a Hub folder ships as remote code import only the standard library, torch,
numpy, PIL, transformers and each other, and hold no module-level mutable state.
"""

import ast
import pathlib
import tomllib

import pytest

from _helpers import SHIPPED_SOURCES, shipped_file_problems

REPO = pathlib.Path(__file__).resolve().parent.parent
LAYERS = ["aesformer_processing", "modeling_aesformer", "aesformer_training", "aesformer_cli"]


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


def _module_of(name: str, known: set) -> str | None:
    """The module of ours an imported name refers to: `pkg.mod` itself, or `pkg.mod` for `from pkg.mod import X`
    (the longest known prefix); None for anything else."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def import_cycles(modules):
    """Each cycle of imports between the modules of ONE package (imports in function bodies count), as
    'a -> b -> a'. A package's `__init__` is left out: importing `pkg.mod` runs it first anyway, so `pkg.mod`
    importing `pkg` is the usual re-export, not a loop of its own."""
    known = {module for module, _ in modules}
    edges = {}
    for module, path in modules:
        if "." not in module:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets = set()
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom):
                base = next(name for line, name in _imported(module, path, ast.Module(body=[node], type_ignores=[])))
                names = [f"{base}.{alias.name}" for alias in node.names] + [base]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            for name in names:
                target = _module_of(name, known)
                if target and target != module and "." in target and target.split(".")[0] == module.split(".")[0]:
                    targets.add(target)
        edges[module] = targets
    cycles, seen = [], set()

    def visit(module, trail):
        for target in sorted(edges.get(module, ())):
            if target in trail:
                cycle = trail[trail.index(target):]
                key = frozenset(cycle)
                if key not in seen:
                    seen.add(key)
                    cycles.append(" -> ".join(cycle + [target]))
            elif target not in done:
                visit(target, trail + [target])
        done.add(module)

    done = set()
    for module in sorted(edges):
        if module not in done:
            visit(module, [module])
    return cycles


def test_no_import_cycle_between_the_modules_of_a_package():
    """`a` imports `b` and `b` imports `a` (directly or through others of the package, in function bodies too): the
    two are one unit split in two files, and which one loads first decides what works."""
    assert import_cycles(_modules()) == []


def test_the_cycle_check_sees_a_cycle_through_a_function_body(tmp_path):
    files = {"pkg.a": "from pkg.b import x\n", "pkg.b": "def f():\n    from . import c\n",
             "pkg.c": "def g():\n    from .a import y\n", "pkg.d": "import pkg\nfrom pkg.a import z\n",
             "pkg": "from pkg.a import z\n"}
    modules = []
    for name, source in files.items():
        path = tmp_path / (name.replace(".", "_") + ".py")
        path.write_text(source)
        modules.append((name, path))
    assert import_cycles(modules) == ["pkg.a -> pkg.b -> pkg.c -> pkg.a"]


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


def test_shipped_files_import_only_stdlib_torch_numpy_pil_transformers_and_each_other():
    """Flat remote code: stdlib, torch, numpy, PIL, transformers and `from .sibling import X` (a shipped file of the
    same folder) only; no dynamic import, eval/exec, processes or torch.load."""
    assert shipped_file_problems(SHIPPED_SOURCES) == []


@pytest.mark.parametrize("source, expected", [
    ("import requests\n", "import requests"),
    ("def f():\n    import pickle\n", "import pickle"),  # a denied stdlib module, in a function body
    ("from .processing_aesformer import X\n", "from .processing_aesformer import"),  # not a sibling in its folder
    ("import importlib\nimportlib.import_module('x')\n", "import importlib"),
    ("from .configuration_aesformer import AesformerConfig\nimport torch, numpy\n", None),
])
def test_the_shipped_files_check_sees_bad_imports(tmp_path, source, expected):
    folder = tmp_path / "modeling_aesformer"
    folder.mkdir()
    (folder / "configuration_aesformer.py").write_text("")
    (folder / "modeling_aesformer.py").write_text(source)
    found = shipped_file_problems({name: folder / name for name in ("configuration_aesformer.py",
                                                                    "modeling_aesformer.py")})
    assert (found == []) if expected is None else any(expected in problem for problem in found), found


_MUTABLE_CALLS = {"dict", "list", "set", "defaultdict", "OrderedDict", "WeakKeyDictionary", "WeakValueDictionary",
                  "deque", "Counter"}
# Synchronisation objects (threading, _thread, multiprocessing): one at module or class level is state shared by every
# instance, as a cache is.
_LOCK_CALLS = {"Lock", "RLock", "Condition", "Semaphore", "BoundedSemaphore", "Event", "Barrier", "allocate_lock"}
_LOCK_MODULES = {"threading", "_thread", "multiprocessing"}


def _shared_statements(body, in_class=False):
    """(statement, in_class) for every statement run once per process: the module body and class bodies, with the
    blocks (if/try/with/for) inside them; never function bodies."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        yield node, in_class
        if isinstance(node, ast.ClassDef):
            yield from _shared_statements(node.body, True)
            continue
        for field in ("body", "orelse", "finalbody"):
            yield from _shared_statements(getattr(node, field, None) or [], in_class)
        for handler in getattr(node, "handlers", None) or []:
            yield from _shared_statements(handler.body, in_class)


def _lock_calls(value, lock_names):
    """Calls in the expression `value` (lambdas left out: they run later, per call) that build a lock."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Lambda):
            continue
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in _LOCK_CALLS:
                yield func.attr
            elif isinstance(func, ast.Name) and func.id in lock_names:
                yield lock_names[func.id]
        stack.extend(ast.iter_child_nodes(node))


def _module_level_mutables(path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    lock_names = {  # local name -> lock class, for `from threading import RLock [as X]`
        alias.asname or alias.name: alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in _LOCK_MODULES
        for alias in node.names
        if alias.name in _LOCK_CALLS
    }
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if names == ["__all__"]:
                continue
            value = node.value
            mutable = isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp))
            if isinstance(value, ast.Call):
                func = value.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                mutable = name in _MUTABLE_CALLS
            if mutable:
                found.append(f"{path.name}:{node.lineno} {names}")
        elif isinstance(node, ast.Global):
            found.append(f"{path.name}:{node.lineno} global")
    for node, in_class in _shared_statements(tree.body):
        value = getattr(node, "value", None)
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.Expr)) and value is not None:
            for lock in _lock_calls(value, lock_names):
                found.append(f"{path.name}:{node.lineno} {'class-level' if in_class else 'module-level'} {lock}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            found.append(f"{path.name}:{node.lineno} global {node.names}")
    return found


@pytest.mark.parametrize("source, expected", [
    ("_CACHE = {}\n", "['_CACHE']"),
    ("import weakref\n_DERIVED = weakref.WeakKeyDictionary()\n", "['_DERIVED']"),
    ("import threading\n_LOCK = threading.RLock()\n", "module-level RLock"),
    ("from threading import RLock\n_LOCK = RLock()\n", "module-level RLock"),
    ("from threading import Lock as Mutex\nlock: object = Mutex()\n", "module-level Lock"),
    ("import threading as t\nclass A:\n    ready = t.Condition()\n", "class-level Condition"),
    ("import threading\ntry:\n    GATE = (threading.Semaphore(2),)\nexcept ImportError:\n    pass\n",
     "module-level Semaphore"),
    ("import threading\nclass A:\n    def __init__(self):\n        self.lock = threading.RLock()\n", None),
    ("import threading\ndef make():\n    return threading.Lock()\nMAKE = lambda: threading.Lock()\n", None),
    ("SIZES = (1, 2)\nclass A:\n    __slots__ = ('entries',)\n", None),
])
def test_the_shipped_state_check_sees_caches_and_locks(tmp_path, source, expected):
    """The checker itself: module-level caches and locks (module or class level, however imported) are reported;
    per-instance locks and locks made per call are not."""
    path = tmp_path / "shipped.py"
    path.write_text(source)
    found = _module_level_mutables(path)
    assert (found == []) if expected is None else any(expected in item for item in found), found


def test_shipped_files_hold_no_module_level_mutable_state():
    found = [item for path in SHIPPED_SOURCES.values() for item in _module_level_mutables(path)]
    assert found == []
