"""Lazy registration of `pipeline("image-aesthetics")` (package only, not shipped to the Hub).

`import modeling_aesformer` must make `transformers.pipeline("image-aesthetics", ...)` work, yet must not import
`transformers.pipelines` (heavy: it pulls in every pipeline module). transformers has no lazy hook for third-party
tasks: `PIPELINE_REGISTRY` lives in `transformers.pipelines` itself. So `install()` puts a small post-import hook on
`sys.meta_path`: it does nothing until `transformers.pipelines` is imported (by `from transformers import pipeline`,
`transformers.pipeline(...)`, or anything else); right after that module has finished executing, it registers the
task. If `transformers.pipelines` is already imported, it registers at once (it costs nothing then).

The hook also watches `modeling_aesformer.pipeline_aesformer`: importing that module imports `transformers.pipelines`
first, at a moment when the pipeline class does not exist yet; registration then happens when the module is done.
Once registered, the hook removes itself. `register_pipeline()` registers explicitly (idempotent).
"""

import importlib
import importlib.abc
import sys
import threading

PIPELINES_MODULE = "transformers.pipelines"
PIPELINE_MODULE = __name__.rpartition(".")[0] + ".pipeline_aesformer"

_lock = threading.RLock()


def register_pipeline():
    """Register `AesformerAestheticsPipeline` for the "image-aesthetics" task now; returns the class."""
    with _lock:
        module = importlib.import_module(PIPELINE_MODULE)
        cls = module.register_pipeline()
        uninstall()
        return cls


def _module_ready(name: str) -> bool:
    module = sys.modules.get(name)
    if module is None:
        return False
    spec = getattr(module, "__spec__", None)
    return not getattr(spec, "_initializing", False)


def _after_import(name: str) -> None:
    try:
        if name == PIPELINES_MODULE and PIPELINE_MODULE in sys.modules and not _module_ready(PIPELINE_MODULE):
            return  # pipeline_aesformer is importing transformers.pipelines: register when it is done
        register_pipeline()
    except Exception as err:  # never break the user's import because of our registration
        import warnings

        warnings.warn(f"could not register the image-aesthetics pipeline: {type(err).__name__}: {err}",
                      stacklevel=2)


class _LoaderWrapper(importlib.abc.Loader):
    """Runs the real loader, then the registration; everything else is delegated to the real loader."""

    def __init__(self, loader, name: str):
        self._loader = loader
        self._name = name

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _after_import(self._name)

    def __getattr__(self, attr):  # get_source, get_resource_reader, is_package, ...
        return getattr(self._loader, attr)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    watched = (PIPELINES_MODULE, PIPELINE_MODULE)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.watched:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is not None and hasattr(spec.loader, "exec_module"):
            spec.loader = _LoaderWrapper(spec.loader, fullname)
        return spec


_finder = _PostImportFinder()


def install() -> None:
    """Register now if `transformers.pipelines` is already imported, else when it is."""
    with _lock:
        if PIPELINES_MODULE in sys.modules:
            register_pipeline()
            return
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def uninstall() -> None:
    with _lock:
        while _finder in sys.meta_path:
            sys.meta_path.remove(_finder)


__all__ = ["install", "register_pipeline", "uninstall"]
