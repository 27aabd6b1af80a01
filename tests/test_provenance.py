"""Where a run came from: results.json and last.pt record it, and the report lists it and warns where a row mixes
versions or devices."""
import json
import platform

import torch

from helpers import tiny
from lstsd.report import main
from lstsd.training.run import run
from test_claims import fake

KEYS = {"lstsd", "git_commit", "git_dirty", "python", "torch", "cuda", "cudnn", "device", "threads", "host", "argv"}


def test_results_and_checkpoint_record_the_provenance(tmp_path):
    res = run(tiny("trainer.epochs=1"), tmp_path)
    p = res["provenance"]
    assert set(p) == KEYS
    assert p["torch"] == torch.__version__
    assert p["python"] == platform.python_version()
    assert p["device"].startswith("cpu")
    assert p["threads"] == 1  # a CPU run's default: the same numbers on any machine, whatever its load
    assert p["lstsd"] == "0.1.0"
    assert len(p["git_commit"]) == 40 and isinstance(p["git_dirty"], bool)  # the tests run from the checkout
    assert torch.load(tmp_path / "last.pt", weights_only=False)["provenance"] == p
    assert json.loads((tmp_path / "results.json").read_text())["provenance"] == p


def test_a_row_of_runs_from_two_torch_versions_is_flagged(tmp_path, capsys):
    for seed, version in enumerate(["2.14.1", "2.14.1", "2.9.1"]):
        d = tmp_path / f"r{seed}"
        fake(d, "vanilla", seed, 90.0 + seed)
        record = json.loads((d / "results.json").read_text())
        record["provenance"] = {"lstsd": "0.1.0", "git_commit": "a" * 40, "git_dirty": False, "torch": version,
                                "device": "NVIDIA H100"}
        (d / "results.json").write_text(json.dumps(record))
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert ("Provenance of the runs: lstsd 0.1.0 aaaaaaaa, torch 2.14.1, NVIDIA H100; lstsd 0.1.0 aaaaaaaa, "
            "torch 2.9.1, NVIDIA H100") in out
    assert "Warning: the row vanilla - (mnist1d_cnn) mixes runs of 2 origins" in out
