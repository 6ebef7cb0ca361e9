"""Files the user's umask lets others read, and folders written atomically.

transformers writes `model.safetensors` through a private temporary file (mode 0600) and `tempfile.mkdtemp` makes
0700 folders: a model folder, checkpoint or exported Hub folder written that way is unreadable by another user or a
serving account, whatever the umask says. `follow_umask` gives such a tree the modes a plain `open()` / `mkdir()`
would have given it (0666 / 0777 minus the umask); it never adds execute bits to files.

`write_folder_atomically` is the one way a folder (a saved model, an adapter, an exported Hub or Space folder, a
training checkpoint through `replace_folder`) is written: into a temporary sibling, flushed to disk, then renamed
into place, so that a reader never sees half a folder and an error or a kill leaves the previous one.
"""

import os
import shutil
from pathlib import Path
from typing import Callable, Union


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


def _fsync(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not every platform can open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_folder(folder: Union[str, os.PathLike]) -> None:
    """Flush a folder's files and entries (its subfolders' too) to disk, so that a rename is not reordered before
    the data it publishes on a power loss. Best effort."""
    root = Path(folder)
    entries = [p for p in root.rglob("*") if not p.is_symlink()]
    for path in [p for p in entries if p.is_file()] + [p for p in entries if p.is_dir()] + [root]:
        _fsync(path)


def _aside(target: Path) -> Path:
    return target.with_name(f".old_{target.name}")


def _recover(target: Path) -> None:
    """A kill between the two renames of an earlier swap left the previous folder aside: put it back."""
    if not target.exists() and _aside(target).exists():
        os.replace(_aside(target), target)


def replace_folder(finished: Union[str, os.PathLike], target: Union[str, os.PathLike]) -> Path:
    """Put the complete folder `finished` (a sibling of `target`) in place of `target`, after flushing it to disk.
    The swap is two renames: a kill between them leaves the previous folder at `.old_<name>`, which the next write
    puts back first; a failed second rename puts it back at once. Returns `target`."""
    finished, target = Path(finished), Path(target)
    old = _aside(target)
    _recover(target)
    fsync_folder(finished)
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    try:
        os.replace(finished, target)
    except BaseException:
        _recover(target)
        raise
    _fsync(target.parent)
    shutil.rmtree(old, ignore_errors=True)
    return target


def write_folder_atomically(write: Callable[[Path], object], target: Union[str, os.PathLike]) -> Path:
    """`write(tmp)` fills `tmp`, a new empty folder `.tmp_<name>` beside `target`; then `replace_folder(tmp,
    target)`. An error or a kill during `write` leaves `target` as it was (the temporary folder is removed on an
    error, and by the next write after a kill). Returns `target`."""
    target = Path(target)
    tmp = target.with_name(f".tmp_{target.name}")
    _recover(target)
    shutil.rmtree(tmp, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp.mkdir()
    try:
        write(tmp)
        return replace_folder(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


__all__ = ["current_umask", "follow_umask", "fsync_folder", "replace_folder", "write_folder_atomically"]
