"""logger=wandb for real, in offline mode: one run per job with config, group (the experiment and the sweep
folder), job type, history, summary and exit code, read back from the .wandb files it writes."""
import json
import struct
from pathlib import Path

from helpers import run_cli


def wandb_records(path: Path):
    """The protobuf records of a .wandb file (a LevelDB-style log of 32 KiB blocks after a 7-byte header)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, buf, block = path.read_bytes(), 7, b"", 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and length == 0:
            break
        buf, pos = buf + data[pos:pos + length], pos + length
        if kind in (1, 4):  # a full record, or the last fragment of one
            record = pb.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def read_run(job_dir: Path) -> dict:
    (run_file,) = job_dir.glob("wandb/offline-run-*/run-*.wandb")  # exactly one run per job
    out = {"history": [], "summary": {}}
    for r in wandb_records(run_file):
        kind = r.WhichOneof("record_type")
        key = lambda item: item.key or "/".join(item.nested_key)  # noqa: E731
        if kind == "run":
            out |= {"group": r.run.run_group, "job_type": r.run.job_type,
                    "config": {i.key: i.value_json for i in r.run.config.update}}
        elif kind == "history":
            out["history"].append({key(i): i.value_json for i in r.history.item})
        elif kind == "summary":
            out["summary"] |= {key(i): i.value_json for i in r.summary.update}
        elif kind == "exit":
            out["exit_code"] = r.exit.exit_code
    return out


def test_wandb_offline_one_run_per_job(tmp_path):
    r = run_cli("-m", "logger=wandb", "method=vanilla,lstsd", "trainer.epochs=2", "name=wbtest",
                f"hydra.sweep.dir={tmp_path}", WANDB_MODE="offline")
    assert r.returncode == 0, r.stderr
    for method in ("vanilla", "lstsd"):
        run = read_run(tmp_path / f"method={method},trainer.epochs=2")
        assert run["group"] == f"wbtest/{tmp_path.name}"  # the sweep's group: this sweep's jobs only
        assert run["job_type"] == method
        assert run["exit_code"] == 0
        assert json.loads(run["config"]["method"])["name"] == method  # the resolved config
        assert json.loads(run["config"]["trainer"])["epochs"] == 2
        steps = [h for h in run["history"] if "test_acc" in h]
        assert [h["_step"] for h in steps] == ["1", "2"]
        assert run["summary"]["status"] == '"completed"'
        assert "test_acc_final" in run["summary"]


def test_wandb_run_is_finished_when_the_job_fails(tmp_path):
    r = run_cli("logger=wandb", "optim.lr=1e30", "trainer.epochs=2", f"hydra.run.dir={tmp_path}",
                WANDB_MODE="offline")
    assert r.returncode == 1
    assert "non-finite loss at step" in r.stderr
    run = read_run(tmp_path)
    assert run["exit_code"] == 1
    assert run["group"] == f"default/{tmp_path.name}"  # a single run: its folder


def test_wandb_disabled_writes_nothing(tmp_path):
    r = run_cli("logger=wandb", "trainer.epochs=1", f"hydra.run.dir={tmp_path}", WANDB_MODE="disabled")
    assert r.returncode == 0
    assert not list(tmp_path.glob("wandb/*run-*"))
