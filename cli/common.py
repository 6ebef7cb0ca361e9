"""The conventions every `aesformer` command follows, and the helpers that implement them.

**Parsers.** Every command's parser is an `ArgumentParser` from this module (the top-level `aesformer` parser is
one, so its subcommands are too; `pretrain`/`adapt`/`eval` build their own): long flags in kebab-case
(``--batch-size``) that also accept the snake_case spelling (``--batch_size``).

**Errors.** A command reports a problem by raising: `CommandError` with a
message that names the flag or file to fix, or a ``ValueError`` (e.g. ``modeling_aesformer.export.ExportError``,
``modeling_aesformer.scoring.ScoringError``),
``OSError`` or ``ImportError`` from the code it calls. It never prints ``error: ...`` itself. A command's
``run(args)`` is wrapped in `command_entry`, and ``aesformer`` itself runs in `run_command`: each prints the one line
``aesformer: error: ...`` on stderr (no traceback; ``--debug`` anywhere on the command line re-raises instead, with
the full traceback).

**Exit status.** 0: done. 1: the command ran but not everything succeeded (``score``: some images could not be
scored; their rows carry the reason), or an unexpected error (a bug: the message adds "run again with --debug").
2: the command stopped on a problem it reported (a bad flag or input, a model folder that cannot be loaded, a
refused conversion or export), before doing its work; argparse's own usage errors are 2 as well. 130: Ctrl-C.

Flags, two ways to use them:

```python
import argparse
from aesformer_cli.common import ArgumentParser, add_argument

parser = ArgumentParser()                          # every long flag accepts both spellings
parser.add_argument("--batch-size", type=int, default=16)
group = parser.add_argument_group("optimiser")     # groups and subcommands too
group.add_argument("--learning-rate", type=float)

plain = argparse.ArgumentParser()                  # or any parser / group, flag by flag
add_argument(plain, "--batch-size", type=int)      # registers --batch-size and the alias --batch_size
```

`ArgumentParser` rewrites ``--snake_case`` command-line tokens (and ``--snake_case=value``) to the kebab-case flag
before parsing, so the help lists only the kebab-case spelling. `add_argument` registers the snake_case spelling as a
real alias (``dest`` is the usual ``batch_size`` either way); `KebabHelpFormatter` hides such aliases in the help.
"""

from __future__ import annotations

import argparse
import contextvars
import functools
from collections.abc import Sequence


def kebab_flag(flag: str) -> str:
    """``--batch_size`` -> ``--batch-size``; short flags and positional names are returned unchanged."""
    if flag.startswith("--") and len(flag) > 2:
        return "--" + flag[2:].replace("_", "-")
    return flag


def snake_flag(flag: str) -> str:
    """``--batch-size`` -> ``--batch_size``; short flags and positional names are returned unchanged."""
    if flag.startswith("--") and len(flag) > 2:
        return "--" + flag[2:].replace("-", "_")
    return flag


def add_argument(container, *flags: str, **kwargs) -> argparse.Action:
    """
    Adds an option to `container` (a parser, an argument group or a mutually exclusive group) under its kebab-case
    long flag(s), plus the snake_case spelling of each as an alias. Flags may be given in either spelling; the
    kebab-case one comes first, so ``dest`` is derived from it as usual (``--batch-size`` -> ``batch_size``).

    Returns:
        The `argparse.Action`, as ``container.add_argument`` does.
    """
    names: list[str] = []
    for flag in flags:
        for name in (kebab_flag(flag), snake_flag(flag)):
            if name not in names:
                names.append(name)
    return container.add_argument(*names, **kwargs)


class KebabHelpFormatter(argparse.HelpFormatter):
    """Shows an option's snake_case alias only when it has no kebab-case twin."""

    def _format_action_invocation(self, action):
        if action.option_strings:
            shown = [
                s for s in action.option_strings if not (s != kebab_flag(s) and kebab_flag(s) in action.option_strings)
            ]
            action = argparse.Action(shown, action.dest, nargs=action.nargs, metavar=action.metavar)
        return super()._format_action_invocation(action)


class ArgumentParser(argparse.ArgumentParser):
    """
    An `argparse.ArgumentParser` that accepts ``--snake_case`` for every ``--kebab-case`` option (and the reverse
    for options registered in snake_case), in the parser itself, its argument groups and its subcommands
    (subparsers are created with this class by default). Tokens after a bare ``--`` are left alone. Its own
    `add_argument` registers long flags in kebab-case even when they are written in snake_case (argument groups
    register them as written; both spellings work either way).
    """

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", KebabHelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *flags, **kwargs):
        """Like `argparse.ArgumentParser.add_argument`, with long flags registered in kebab-case (``dest`` keeps
        underscores); both spellings are accepted on the command line."""
        return super().add_argument(*(kebab_flag(flag) for flag in flags), **kwargs)

    def _normalise(self, args: Sequence[str]) -> list[str]:
        known = self._option_string_actions
        out: list[str] = []
        passthrough = False
        for token in args:
            if passthrough or not isinstance(token, str) or not token.startswith("--") or token == "--":
                passthrough = passthrough or token == "--"
                out.append(token)
                continue
            flag, sep, value = token.partition("=")
            if flag not in known:
                for other in (kebab_flag(flag), snake_flag(flag)):
                    if other in known:
                        flag = other
                        break
                else:
                    flag = kebab_flag(flag)  # unknown: let argparse abbreviate or report it in kebab-case
            out.append(flag + sep + value)
        return out

    def parse_known_args(self, args=None, namespace=None):
        if args is None:
            import sys

            args = sys.argv[1:]
        return super().parse_known_args(self._normalise(list(args)), namespace)


class CommandError(Exception):
    """An input problem a command found before (or instead of) doing its work; the message names the flag to fix.
    `run_command` and `command_entry` print it without a traceback and exit with status 2."""


DEBUG_FLAG = "--debug"
DEBUG_HELP = "on an error, show the full Python traceback instead of the message alone"
# Reported errors: one line, exit status 2. Anything else is a bug: status 1 and a hint to run with --debug.
REPORTED_ERRORS = (CommandError, ValueError, OSError, ImportError)
_debug = contextvars.ContextVar("aesformer_debug", default=False)  # set by run_command while --debug is given


def error_message(error: BaseException) -> str:
    """The one message `run_command` prints for `error`: the text of an input error as it is, the type first for
    anything else. A `DatasetLoadError` gets the command line's flag (``--on-bad-rows skip``) as its advice."""
    from aesformer_training.reports import ON_BAD_ROWS_ADVICE, DatasetLoadError  # cheap, no torch

    if isinstance(error, DatasetLoadError):
        return f"{error.details}\n{ON_BAD_ROWS_ADVICE}"
    text = str(error).strip()
    if isinstance(error, (CommandError, ValueError, OSError, ImportError)) and text:
        return text
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_command(main, argv: Sequence[str] | None = None, prog: str = "aesformer") -> int:
    """
    Runs ``main(argv)`` and turns an exception into one message on stderr (``<prog>: error: ...``) and an exit
    status: 2 for input errors (`CommandError`, ``ValueError``, ``OSError``), 1 for anything else, 130 for Ctrl-C.
    ``--debug`` anywhere before a bare ``--`` is removed from `argv` and re-raises the exception instead (the full
    traceback).
    """
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    end = argv.index("--") if "--" in argv else len(argv)
    debug = DEBUG_FLAG in argv[:end]
    argv = [token for i, token in enumerate(argv) if not (i < end and token == DEBUG_FLAG)]
    token = _debug.set(debug)
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001 - every error becomes a message; --debug shows the traceback
        if debug:
            raise
        return report_error(error, prog)
    finally:
        _debug.reset(token)


def report_error(error: BaseException, prog: str = "aesformer") -> int:
    """Prints `error` as the one line ``<prog>: error: ...`` on stderr (plus a hint to run with ``--debug`` when it
    is not one of `REPORTED_ERRORS`) and returns the exit status: 2 for a reported error, 1 for anything else."""
    import sys

    print(f"{prog}: error: {error_message(error)}", file=sys.stderr)
    expected = isinstance(error, REPORTED_ERRORS)
    if not expected:
        print(f"{prog}: (run again with {DEBUG_FLAG} to see where it happened)", file=sys.stderr)
    return 2 if expected else 1


def command_entry(run):
    """Wraps a command's ``run(args)``: a reported error (`REPORTED_ERRORS`) becomes the one line
    ``aesformer: error: ...`` and exit status 2 (under ``--debug`` it propagates, with its traceback); anything else
    propagates to `run_command`. The status `run` returns is returned as it is (``None`` is 0)."""

    @functools.wraps(run)
    def entry(args) -> int:
        try:
            return int(run(args) or 0)
        except REPORTED_ERRORS as error:
            if _debug.get():
                raise
            return report_error(error)

    return entry


__all__ = ["REPORTED_ERRORS", "ArgumentParser", "CommandError", "KebabHelpFormatter", "add_argument",
           "command_entry", "error_message", "kebab_flag", "report_error", "run_command", "snake_flag"]
