"""Writing a file whole or not at all (a leaf: imports nothing of lstsd)."""
from __future__ import annotations

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
