"""The `aesformer` console script.

`modeling_aesformer/__init__.py` registers the Aesformer classes with transformers' Auto classes, which imports
transformers and torch (seconds). The command line does not need them to parse its arguments or print `--help`, so
this launcher imports `modeling_aesformer.cli` with the package's `__init__` deferred: the package module exists (its
submodules import normally) but its `__init__` runs only after parsing, when a command is about to run
(`modeling_aesformer.cli._finish_package_import`). `python -m modeling_aesformer.cli` runs the same command line
without the deferral.
"""

import importlib.util
import sys

PACKAGE = "modeling_aesformer"


def _import_package_deferred():
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module

    def finish():
        del module._aesformer_deferred_init
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(PACKAGE, None)
            raise

    module._aesformer_deferred_init = finish


def main(argv=None) -> int:
    _import_package_deferred()
    from modeling_aesformer.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
