"""Writing a file whole or not at all, and a fingerprint of what files hold (a leaf: imports nothing of lstsd)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import uuid
from pathlib import Path
from typing import Callable


def atomic_write(path: Path, write: Callable, binary: bool = False) -> None:
    """``write(file)`` into a temporary file whose name no other process uses (host, process id and a random
    part: the runs of a sweep, on one machine or several sharing the folder, may write the same file at once),
    fsync, then rename it over ``path``: readers never see half a file, and a failed write (a full disk) leaves
    the previous file as it was and no temporary file behind."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


WHOLE_FILE = 1 << 30  # files up to 1 GiB are hashed whole; larger ones by their size, first and last 64 MiB
PART = 64 << 20


def file_digest(path: Path) -> str:
    """sha256 of a file's content (of a file over :data:`WHOLE_FILE`: its size, first and last :data:`PART`; a
    project choice that keeps a relaunch on a 100 GB archive to a second of reading)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= WHOLE_FILE:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        else:
            h.update(str(size).encode() + f.read(PART))
            f.seek(size - PART)
            h.update(f.read(PART))
    return h.hexdigest()


def folder_listing(top: Path) -> list[tuple[str, str, int]]:
    """(folder relative to ``top``, file name, size) of every file under ``top``, sorted; links to folders followed
    as the image readers follow them, each real folder once (a loop ends there; the readers refuse it)."""
    out, seen = [], set()
    for folder, dirs, files in os.walk(top, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        rel = Path(folder).relative_to(top).as_posix()
        for name in files:
            with contextlib.suppress(OSError):  # a file gone meanwhile or unreadable: the reader says so
                out.append((rel, name, (Path(folder) / name).stat().st_size))
    return sorted(out)


def content_fingerprint(paths) -> str:
    """A short hash of what ``paths`` hold, the same for a moved or copied set of the same files: a file by its
    content (:func:`file_digest`), a folder by the names (relative to it) and sizes of the files under it
    (:func:`folder_listing`; a file rewritten at the same size is not seen: folders are listed, not read, 100,000
    files in 0.74 s measured on a 2-core machine); a path that does not exist as ``missing``."""
    h = hashlib.sha256()
    for path in map(Path, paths):
        path = path.expanduser()
        if path.is_file():
            try:
                h.update(b"file " + file_digest(path).encode())
            except OSError:  # unreadable: the reader names it
                h.update(b"unreadable")
        elif path.is_dir():
            h.update(b"folder")
            for rel, name, size in folder_listing(path):
                h.update(f"\n{rel}/{name} {size}".encode())
        else:
            h.update(b"missing")
        h.update(b"\0")
    return h.hexdigest()[:16]
