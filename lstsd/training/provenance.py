"""Where a run came from, recorded in its results.json and last.pt (``provenance``): the lstsd version and, when it
runs from a git checkout, the commit and whether the tree had uncommitted changes; Python, torch, CUDA and cuDNN
versions; the device's name and the CPU threads; the host; the command line. ``lstsd-report`` lists them and warns where one row
mixes lstsd or torch versions or devices (its runs would not be one experiment)."""
from __future__ import annotations

import platform
import socket
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Optional

import torch

PACKAGE = Path(__file__).resolve().parents[1]


@lru_cache(maxsize=1)
def git_state() -> tuple[Optional[str], Optional[bool]]:
    """(commit, dirty) of the checkout lstsd runs from, or (None, None) outside a git repository."""
    def git(*args: str) -> Optional[str]:
        try:
            out = subprocess.run(["git", "-C", str(PACKAGE), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, bool(status)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model() or platform.processor() or platform.machine() or 'unknown'})"


@lru_cache(maxsize=1)
def cpu_model() -> Optional[str]:
    """The CPU's model name as Linux reports it (None elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return None


def provenance(device: torch.device) -> dict:
    commit, dirty = git_state()
    try:
        version = metadata.version("lstsd")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        version = None
    return {"lstsd": version, "git_commit": commit, "git_dirty": dirty, "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "device": device_name(device), "threads": torch.get_num_threads(), "host": socket.gethostname(),
            "argv": list(sys.argv)}
