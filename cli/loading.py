"""Where a `--model` argument points: an existing model folder or a well-formed Hugging Face Hub id. Checked before a
command loads anything, so a mistyped folder gets "no model folder at ..." instead of the Hub's repo-id error."""

from __future__ import annotations

import os
import re

# owner/name or name: letters, digits, "-", "_", "."; no "--" or ".."; at most 96 characters (the Hub's own rule).
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_hub_id(reference: str) -> bool:
    """True when `reference` is a well-formed Hub model id (``name`` or ``owner/name``)."""
    return (bool(_HUB_ID.match(reference)) and len(reference) <= 96 and "--" not in reference
            and ".." not in reference and not reference.endswith((".", "-")))


def check_model_source(reference: str | os.PathLike, flag: str = "--model", require_config: bool = True) -> str:
    """
    Returns `reference` when it is an existing folder (with a ``config.json`` unless `require_config` is false, e.g.
    for a tokenizer folder) or a well-formed Hub id.

    Raises:
        FileNotFoundError: neither (``"--model runs/s1/modle: no model folder at /abs/runs/s1/modle"``), or a folder
            without ``config.json``.
    """
    reference = os.fspath(reference)
    if os.path.isdir(reference):
        if require_config and not os.path.isfile(os.path.join(reference, "config.json")):
            raise FileNotFoundError(f"{flag} {reference}: the folder holds no config.json, so it is not a saved model "
                                    "(a stage-1 run saves its model to <output-dir>/model)")
        return reference
    if os.path.exists(reference) or not is_hub_id(reference):
        what = "model" if require_config else "tokenizer" if "token" in flag else ""
        raise FileNotFoundError(f"{flag} {reference}: no {what + ' ' if what else ''}folder at "
                                f"{os.path.abspath(reference)} (and it is not a Hugging Face Hub id)")
    return reference


def describe_load_error(reference: str, error: BaseException, flag: str = "--model") -> str:
    """The message for a model that could not be loaded from `reference` (a Hub id that is not cached or reachable)."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if os.path.isdir(reference):
        return f"{flag} {reference}: cannot load the model from this folder: {first_line}"
    return (f"{flag} {reference}: no model folder at {os.path.abspath(reference)}, and the Hub model {reference!r} "
            f"could not be loaded ({first_line})")


__all__ = ["check_model_source", "describe_load_error", "is_hub_id"]
