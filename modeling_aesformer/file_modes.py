"""Files the user's umask lets others read.

transformers writes `model.safetensors` through a private temporary file (mode 0600) and `tempfile.mkdtemp` makes
0700 folders: a model folder, checkpoint or exported Hub folder written that way is unreadable by another user or a
serving account, whatever the umask says. `follow_umask` gives such a tree the modes a plain `open()` / `mkdir()`
would have given it (0666 / 0777 minus the umask); it never adds execute bits to files.
"""

import os
from pathlib import Path
from typing import Union


def current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def follow_umask(path: Union[str, os.PathLike]) -> None:
    """chmod `path` (a file, or a folder and everything under it) to what the umask gives new files and folders.
    Symbolic links are left alone; files keep their execute bits only where they had them."""
    mask = current_umask()
    root = Path(path)
    if root.is_symlink() or not root.exists():
        return
    entries = [root] + ([p for p in root.rglob("*") if not p.is_symlink()] if root.is_dir() else [])
    for entry in entries:
        if entry.is_dir():
            os.chmod(entry, 0o777 & ~mask)
        else:
            executable = os.stat(entry).st_mode & 0o111
            os.chmod(entry, (0o666 | executable) & ~mask)


__all__ = ["current_umask", "follow_umask"]
