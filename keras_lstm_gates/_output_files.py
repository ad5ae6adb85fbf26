"""The files and directories an export writes: checked, then written atomically.

`check_target` says before anything is written whether a path may be
written (its folder exists; `overwrite` replaces only what an export wrote);
`atomic_target` writes beside the path and moves the result into place, so
a failed export leaves nothing half-written. The command line uses both.
"""

import contextlib
import os
import shutil
import tempfile

# What an exported SavedModel directory holds; overwriting replaces these only.
_SAVED_MODEL_ENTRIES = frozenset(
    {"saved_model.pb", "saved_model.pbtxt", "variables", "assets", "fingerprint.pb"}
)


def check_target(function, path, overwrite, directory):
    """The absolute `path` to write, once checked.

    `overwrite` replaces a file, or a directory holding an earlier SavedModel
    (or nothing): never a directory of other files, which a file export or
    a SavedModel export would delete.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(
            f"{function}: path must be a str or os.PathLike, got {type(path).__name__}"
        )
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        exists = os.path.exists(parent)
        error = NotADirectoryError if exists else FileNotFoundError
        problem = "is not a directory" if exists else "does not exist"
        raise error(f"{function}: the directory {parent!r} of path {path!r} {problem}")
    if not os.path.lexists(path):
        return path
    if not overwrite:
        raise FileExistsError(
            f"{function}: path {path!r} already exists; pass overwrite=True "
            "to replace it"
        )
    is_directory = os.path.isdir(path) and not os.path.islink(path)
    if directory and not is_directory:
        raise NotADirectoryError(
            f"{function}: path {path!r} is not a directory (a file or a link); "
            "overwriting never replaces one with a SavedModel directory"
        )
    if not directory and is_directory:
        raise IsADirectoryError(
            f"{function}: path {path!r} is a directory; give the path of the "
            "file to write (overwriting never replaces a directory)"
        )
    if is_directory:
        names = sorted(os.listdir(path))
        if names and "saved_model.pb" not in names:
            shown = ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")
            raise FileExistsError(
                f"{function}: path {path!r} holds files that are not a SavedModel "
                f"({shown}); overwriting replaces only an earlier SavedModel "
                "or an empty directory"
            )
        others = [name for name in names if name not in _SAVED_MODEL_ENTRIES]
        if others:
            raise FileExistsError(
                f"{function}: the SavedModel directory {path!r} also holds "
                f"{', '.join(others)}, which overwriting would delete; move "
                "them out first, or export to another directory"
            )
    return path


@contextlib.contextmanager
def atomic_target(path, directory):
    """Yields a staging path beside `path`; moves it onto `path` on success.

    On any error the staging file or directory is removed and `path` is left
    as it was, so a failed export never leaves a half-written result.
    """
    parent, name = os.path.split(path)
    staging = tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=parent)
    target = os.path.join(staging, name)
    try:
        if directory:
            # Made with the umask's mode, not mkdtemp's 0700: a SavedModel
            # is read by servers running as other users.
            os.mkdir(target)
        yield target
        if os.path.isdir(path) and not os.path.islink(path):
            # A directory cannot be replaced in one rename: move the old one
            # aside first, then remove it once the new one is in place.
            old = tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=parent)
            os.replace(path, os.path.join(old, name))
            os.replace(target, path)
            shutil.rmtree(old)
        else:
            os.replace(target, path)
    finally:
        if os.path.exists(staging):
            shutil.rmtree(staging)
