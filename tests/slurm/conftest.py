"""The SLURM tests run only with ``LSTSD_SLURM_TESTS=1`` (``make test-slurm``): the default ``make test`` never
collects them. A session fixture starts a throwaway single-node cluster (``tools/slurm/cluster.sh``: installs
slurm-wlm and munge where it runs as root and they are missing) and stops it at the end; where SLURM cannot be
started every test is skipped with the reason (``LSTSD_SLURM_REQUIRE=1`` makes that a failure instead)."""
import os
import re
import subprocess
import time
from pathlib import Path

import pytest

ENABLED = os.environ.get("LSTSD_SLURM_TESTS") == "1"
if not ENABLED:
    collect_ignore_glob = ["test_*.py"]

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "slurm" / "cluster.sh"
STARTUP: dict = {}  # what the terminal summary reports: seconds, the script's line, or why it could not start
WALL: dict = {}  # test -> seconds of setup + call + teardown (a module fixture's sweep counts for its first user)


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: needs the throwaway SLURM cluster (make test-slurm)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.slurm)


@pytest.fixture(scope="session")
def slurm():
    """The running cluster: the environment its commands need (``SLURM_CONF``, ``LSTSD_SLURM_DIR``)."""
    # the node declares at least 4 CPUs (the real ones may be fewer): with 1-CPU jobs, a 2-CPU node alone would
    # keep an array to 2 jobs at a time, and array_parallelism=2 would go untested
    env = {**os.environ, "LSTSD_SLURM_CPUS": os.environ.get("LSTSD_SLURM_CPUS", str(max(4, os.cpu_count() or 1)))}
    t0 = time.monotonic()
    try:
        r = subprocess.run(["bash", str(SCRIPT), "start", "--owner-pid", str(os.getpid())], env=env,
                           capture_output=True, text=True, timeout=900)
    except subprocess.TimeoutExpired:
        r = subprocess.CompletedProcess([], 1, "", "tools/slurm/cluster.sh start ran for more than 15 minutes")
    STARTUP["seconds"] = time.monotonic() - t0
    if r.returncode != 0:
        reason = " ".join(line for line in r.stderr.strip().splitlines()[-12:])
        STARTUP["failed"] = f"SLURM could not be started (exit {r.returncode}): {reason}"
        if os.environ.get("LSTSD_SLURM_REQUIRE") == "1":
            pytest.fail(STARTUP["failed"])
        pytest.skip(STARTUP["failed"])
    STARTUP["line"] = " ".join(line.split(": ", 1)[-1] for line in r.stderr.splitlines()
                               if "cluster up" in line or "installed slurm-wlm" in line)
    cluster = dict(re.findall(r"^export (\w+)=(.*)$", r.stdout, re.M))
    yield cluster
    keep = ["--keep"] if os.environ.get("LSTSD_SLURM_KEEP") == "1" else []
    subprocess.run(["bash", str(SCRIPT), "stop", *keep, cluster["LSTSD_SLURM_DIR"]], env=env, timeout=120)


def pytest_runtest_logreport(report):
    if ENABLED and "slurm" in report.keywords:
        WALL[report.nodeid.split("::")[-1]] = WALL.get(report.nodeid.split("::")[-1], 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if not ENABLED or "seconds" not in STARTUP:
        return
    if WALL and "failed" not in STARTUP:
        terminalreporter.write_line("SLURM tests, wall time (setup + call + teardown; the cluster's start counts "
                                    "for the first test, its stop for the last):")
        for name, seconds in WALL.items():
            terminalreporter.write_line(f"  {seconds:7.1f}s  {name}")
        terminalreporter.write_line(f"  {sum(WALL.values()):7.1f}s  in all")
    if "failed" in STARTUP:
        terminalreporter.write_line(f"SLURM test cluster: {STARTUP['failed']}")
    else:
        terminalreporter.write_line(f"SLURM test cluster: started in {STARTUP['seconds']:.1f}s ({STARTUP['line']})")
