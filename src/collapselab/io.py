"""Files and databases, the way every part of collapselab touches them.

- :func:`write_atomic`: a temporary name beside the target, then a rename, so a reader sees the old file or the
  new one and never half of one; the temporary file is removed if writing fails (a full disk, say).
- :func:`check_input_file`: the one size limit and the checks every user-supplied file passes before it is read
  (a regular file, not a FIFO or a device, not larger than ``COLLAPSELAB_MAX_INPUT_MB``).
- :func:`connect_sqlite`: SQLite with a busy timeout, read-only when asked (a read-only workspace can still be
  listed), and its errors as one-line :class:`InputError` messages.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .errors import InputError

# files a user hands collapselab (specs' data files, audit inputs, ledger imports): larger ones are refused
DEFAULT_MAX_INPUT_MB = 256
TMP_MARK = ".tmp-"


def max_input_bytes() -> int:
    raw = os.environ.get("COLLAPSELAB_MAX_INPUT_MB", "")
    try:
        mb = float(raw) if raw else DEFAULT_MAX_INPUT_MB
    except ValueError:
        raise InputError(f"COLLAPSELAB_MAX_INPUT_MB = {raw!r}: expected a number of megabytes") from None
    return int(mb * 2**20)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file that appears at ``path`` only once it is complete: written under a temporary name
    (``.NAME.tmp-PID``), renamed into place on success, removed on any error."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | Path, content: str | bytes) -> None:
    with atomic_file(path) as fh:
        fh.write(content.encode("utf-8") if isinstance(content, str) else content)


def remove_stale_tmp(folder: Path) -> None:
    """Remove the temporary files a killed writer left behind (``.NAME.tmp-PID``), not any other file."""
    if not folder.is_dir():
        return
    for p in folder.iterdir():
        if p.name.startswith(".") and TMP_MARK in p.name and not p.is_dir():
            p.unlink(missing_ok=True)


def is_regular_file(path: Path) -> bool:
    """A plain file, not a link, a FIFO or a device (reading those can block forever or never end)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def check_input_file(path: str | Path, where: str, limit: int | None = None) -> Path:
    """``path`` if it is a readable regular file within the size limit; else a one-line InputError naming ``where``."""
    p = Path(path).expanduser()
    try:
        st = os.stat(p)  # follows links: a link to a regular file is fine, to /dev/zero is not
    except FileNotFoundError:
        raise InputError(f"{where}: file not found: {p}") from None
    except OSError as e:
        raise InputError(f"{where}: cannot read {p} ({e.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file (a FIFO, device or socket)"
        raise InputError(f"{where}: {p} is {kind}")
    limit = max_input_bytes() if limit is None else limit
    if st.st_size > limit:
        raise InputError(
            f"{where}: {p} is {human_size(st.st_size)}, over the {human_size(limit)} limit "
            "(set COLLAPSELAB_MAX_INPUT_MB to raise it)"
        )
    if not os.access(p, os.R_OK):
        raise InputError(f"{where}: cannot read {p} (permission denied)")
    return p


def sqlite_timeout() -> float:
    """Seconds a writer waits for another's lock (``COLLAPSELAB_SQLITE_TIMEOUT_S``, default 30)."""
    try:
        return float(os.environ.get("COLLAPSELAB_SQLITE_TIMEOUT_S", "30"))
    except ValueError:
        return 30.0


def human_size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:.3g} GiB"


def connect_sqlite(path: Path, *, readonly: bool = False, what: str = "database") -> sqlite3.Connection:
    """A connection with a busy timeout; ``readonly`` opens without creating or writing anything."""
    timeout = sqlite_timeout()
    try:
        if readonly:
            try:
                con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout)
                con.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
            except sqlite3.OperationalError as e:
                if "locked" in str(e) or "busy" in str(e):
                    raise
                # a WAL database in a read-only folder cannot create its -shm file: read it as immutable
                con = sqlite3.connect(f"file:{path}?immutable=1", uri=True, timeout=timeout)
        else:
            con = sqlite3.connect(path, timeout=timeout)
        con.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        return con
    except sqlite3.Error as e:
        raise sqlite_error(e, path, what) from None


def sqlite_error(e: Exception, path: Path, what: str) -> InputError:
    text = str(e)
    if "locked" in text or "busy" in text:
        return InputError(
            f"{what} {path}: locked by another process for over {sqlite_timeout():g} s ({text}); try again"
        )
    if "not a database" in text or "malformed" in text:
        return InputError(f"{what} {path}: not a valid SQLite file ({text}); move it aside to start a new one")
    if "readonly" in text or "read-only" in text or "unable to open" in text:
        return InputError(f"{what} {path}: cannot be written here ({text})")
    return InputError(f"{what} {path}: {text}")
