"""lstsd-eval (a run's scores from its checkpoint, with the models its method evaluates) and lstsd relaunch (a job
folder relaunched by its own command line, whatever its name holds)."""
import json
import sys

import pytest
import torch

from helpers import TINY, tiny
from lstsd.cli import evaluate_main, main
from lstsd.training.run import run


def test_eval_gives_the_run_s_final_scores_and_its_ema_teacher_s(tmp_path, capsys):
    res = run(tiny("method=mean_teacher", "method.rampup_epochs=0", "dataset.val_fraction=0.25",
                   "trainer.save_best=true"), tmp_path)
    evaluate_main([str(tmp_path), "--json"])
    scores = json.loads(capsys.readouterr().out)
    assert scores["epoch"] == 3
    assert scores["test_acc"] == res["test_acc_final"]
    assert scores["val_acc"] == res["val_acc_final"]
    assert scores["ema_test_acc"] == res["ema_test_acc_final"]
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    evaluate_main([str(tmp_path / "best.pt"), "--json"])
    scores = json.loads(capsys.readouterr().out)
    assert scores["epoch"] == best["epoch"]
    assert scores["val_acc"] == best["value"]
    assert not any(k.startswith("ema_") for k in scores)  # best.pt holds the model only: no EMA teacher to score


@pytest.mark.parametrize("make, message", [
    (lambda d: None, "no such file or folder"),
    (lambda d: d.mkdir(), "not a run folder (no .hydra/config.yaml)"),
])
def test_eval_of_a_folder_without_a_run_is_one_line(tmp_path, capsys, make, message):
    make(tmp_path / "x")
    with pytest.raises(SystemExit) as e:
        evaluate_main([str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and message in err and "Traceback" not in err


def test_eval_of_a_run_without_its_checkpoint_or_of_another_version_s_is_one_line(tmp_path, capsys):
    run(tiny("trainer.epochs=1"), tmp_path)
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    state["model"] = {"another.layout": torch.zeros(1)}
    state["provenance"]["lstsd"] = "0.0.1"
    torch.save(state, tmp_path / "old.pt")
    with pytest.raises(SystemExit) as e:
        evaluate_main([str(tmp_path / "old.pt")])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "it was written by lstsd 0.0.1" in err
    (tmp_path / "last.pt").unlink()
    with pytest.raises(SystemExit) as e:
        evaluate_main([str(tmp_path)])
    assert e.value.code == 2 and "no such checkpoint" in capsys.readouterr().err


def test_relaunch_a_sweep_job_folder_whose_name_holds_equals_and_commas(tmp_path, monkeypatch):
    """A job folder of a sweep (method=lstsd,seed=0): relaunched by its own overrides with one more epoch, it
    extends in place, a single run."""
    job = tmp_path / "method=lstsd,seed=0"
    args = ("method=lstsd", "seed=0", "trainer.epochs=2", "schedule=constant")  # extended: its rates so far kept
    run(tiny(*args), job, overrides=[*TINY, *args])
    monkeypatch.setattr(sys, "argv", ["lstsd", "relaunch", str(job), "trainer.epochs=3"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    main()
    assert json.loads((job / "results.json").read_text())["epochs"] == 3
    assert [p.name for p in tmp_path.iterdir()] == [job.name]  # nothing written elsewhere


def test_relaunch_of_a_folder_that_holds_no_run_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["lstsd", "relaunch", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2 and "not a run folder (no .hydra/overrides.yaml)" in capsys.readouterr().err
