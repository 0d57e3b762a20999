"""Output files replaced atomically, and only when their bytes change.

A temporary file in the same folder, written, fsynced, given the old file's mode (or the requested one), renamed
over the old one, and the folder fsynced. A file whose bytes would not change is not touched at all. A reader never
sees a partial or empty file. A symbolic link is followed (its target is replaced, the link kept); a target that is
not a regular file (``/dev/stdout``, a FIFO) is written to, never replaced.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from manifest_runner.errors import OutputError

DEFAULT_MODE = 0o600
"""New output files may hold secrets (a database URL with its password): readable by their owner only, unless the
manifest says otherwise (``outputs.mode``). An existing file keeps its mode."""


def write_atomic(
    path: str | Path, data: str | bytes, mode: int | None = None, *, follow_any_link: bool = False
) -> bool:
    """Replace ``path`` with ``data`` atomically; return False (and touch nothing) when the bytes are the same.

    A symbolic link at ``path`` is followed (its target is replaced, the link kept) only when it leads to an
    existing file inside the folder the path names; a dangling link, or one leading elsewhere, is refused unless
    ``follow_any_link`` (an explicit ``--output``, or ``outputs.follow_symlinks``). Raises :class:`OutputError`
    when it cannot write; the previous file is then intact.
    """
    target = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    if target.is_symlink():
        target = _through_link(target, follow_any_link)
    try:
        kind = target.stat().st_mode
    except FileNotFoundError:
        kind = None
    except OSError as err:
        raise OutputError(f"cannot read {target}: {err.strerror or err}") from None
    if kind is not None and not stat.S_ISREG(kind):
        return _write_through(target, payload)  # /dev/stdout, a FIFO: never replaced by a regular file
    try:
        if target.read_bytes() == payload:
            return False
    except FileNotFoundError:
        pass
    except OSError as err:
        raise OutputError(f"cannot read {target}: {err.strerror or err}") from None
    folder = target.parent if str(target.parent) else Path()
    try:
        existing_mode = stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        existing_mode = None
    import tempfile

    tmp_name: str | None = None
    try:
        handle, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        final_mode = existing_mode if existing_mode is not None else mode if mode is not None else DEFAULT_MODE
        Path(tmp_name).chmod(final_mode)
        Path(tmp_name).replace(target)
        tmp_name = None
        _fsync_folder(folder)
    except OSError as err:
        raise OutputError(f"cannot write {target}: {err.strerror or err}; the previous file is unchanged") from None
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                Path(tmp_name).unlink()
    return True


def _through_link(link: Path, follow_any_link: bool) -> Path:
    real = Path(os.path.realpath(link))
    if follow_any_link:
        return real
    if not real.exists():
        raise OutputError(
            f"{link} is a symbolic link to {real}, which does not exist: not followed (a secret could land anywhere); "
            "remove the link, or set outputs.follow_symlinks"
        )
    folder = Path(os.path.realpath(link.parent if str(link.parent) else "."))
    if not real.is_relative_to(folder):
        raise OutputError(
            f"{link} is a symbolic link leading outside {folder} (to {real}): not followed; "
            "remove the link, or set outputs.follow_symlinks"
        )
    return real


def _write_through(target: Path, payload: bytes) -> bool:
    try:
        with target.open("wb") as stream:
            stream.write(payload)
    except OSError as err:
        raise OutputError(f"cannot write {target}: {err.strerror or err}") from None
    return True


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
