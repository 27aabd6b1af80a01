"""The run function and trainer: outputs, determinism, exact resume."""
import contextlib
import json

import pytest
import torch

from helpers import Checkpoints, CrashAt, SignalAt, read_metrics as metrics
from lstsd.training.run import run


def strip_time(results: dict) -> dict:
    return {k: v for k, v in results.items() if "second" not in k}  # wall time aside


def test_a_run_writes_results_metrics_and_a_checkpoint(tiny_cfg, tmp_path):
    res = run(tiny_cfg("dataset.val_fraction=0.25"), tmp_path)
    assert json.loads((tmp_path / "results.json").read_text()) == res
    assert res["epochs"] == 3
    assert res["method"] == "vanilla"
    assert res["model"] == "digits_cnn"
    assert 0 <= res["test_acc_final"] <= 100
    assert res["best_epoch"] in (1, 2, 3)
    assert res["test_acc_best"] == max(r["test_acc"] for r in metrics(tmp_path))
    assert "val_acc_final" in res
    assert "test_acc_at_best_val" in res
    assert "val_acc" in metrics(tmp_path)[0]
    assert res["steps_per_second"] > 0
    assert (tmp_path / "last.pt").exists()


def test_the_same_seed_gives_the_same_numbers_and_another_seed_others(tiny_cfg, tmp_path):
    a = run(tiny_cfg("method=lstsd", "method.minigen_epochs=1"), tmp_path / "a")
    b = run(tiny_cfg("method=lstsd", "method.minigen_epochs=1"), tmp_path / "b")
    c = run(tiny_cfg("method=lstsd", "method.minigen_epochs=1", "seed=1"), tmp_path / "c")
    assert strip_time(a) == strip_time(b)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b")
    assert metrics(tmp_path / "a") != metrics(tmp_path / "c")


@pytest.mark.parametrize("method", [["method=vanilla"], ["method=lstsd", "method.minigen_epochs=1"]])
def test_resume_after_a_crash_gives_the_same_results(tiny_cfg, tmp_path, method):
    """A run killed between epochs and relaunched ends as the uninterrupted one (every method's own state
    round trip: tests/test_method_state.py)."""
    overrides = (*method, "trainer.epochs=4", "model.dropout=0.3")  # dropout: the global RNG must resume too
    full = run(tiny_cfg(*overrides), tmp_path / "full")

    with pytest.raises(KeyboardInterrupt):  # killed mid-run, after epoch 2's checkpoint
        run(tiny_cfg(*overrides), tmp_path / "resumed", callbacks=[CrashAt(2)])
    assert len(metrics(tmp_path / "resumed")) == 2
    resumed = run(tiny_cfg(*overrides), tmp_path / "resumed")
    assert strip_time(resumed) == strip_time(full)
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "full")
    a = torch.load(tmp_path / "full" / "last.pt", weights_only=False)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_checkpoint_every_n_epochs_resumes_from_the_last_one_exactly(tiny_cfg, tmp_path):
    """trainer.checkpoint_every=2 over 5 epochs writes after epochs 2, 4 and 5 (the last always); a crash in epoch 4
    resumes from epoch 2's checkpoint, trains epoch 3 again and ends as the uninterrupted run, metrics.jsonl too."""
    overrides = ("method=lstsd", "method.minigen_epochs=1", "trainer.epochs=5", "trainer.checkpoint_every=2")
    saved = Checkpoints()
    full = run(tiny_cfg(*overrides), tmp_path / "full", callbacks=[saved])
    assert saved.epochs == [2, 4, 5]
    with pytest.raises(KeyboardInterrupt):
        run(tiny_cfg(*overrides), tmp_path / "resumed", callbacks=[CrashAt(3)])
    assert len(metrics(tmp_path / "resumed")) == 3  # epoch 3 was logged but not checkpointed
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)["epoch"] == 2
    resumed = run(tiny_cfg(*overrides), tmp_path / "resumed")
    assert strip_time(resumed) == strip_time(full)
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "full")


def test_incompatible_checkpoint_is_a_clear_error(tiny_cfg, tmp_path):
    run(tiny_cfg("trainer.epochs=1"), tmp_path)
    from lstsd.errors import ConfigError, TrainingError

    with pytest.raises(ConfigError, match="holds a run of another configuration .*model.arch: digits_cnn -> "
                                          "cifar_resnet"):
        run(tiny_cfg("trainer.epochs=2", "model=resnet20", "trainer.skip_completed=false"), tmp_path)
    with pytest.raises(TrainingError, match="cannot resume from .*last.pt"):  # forced: the weights do not fit
        run(tiny_cfg("trainer.epochs=2", "model=resnet20", "trainer.skip_completed=false",
                     "trainer.force_resume=true"), tmp_path)


def test_completed_runs_are_skipped_and_failed_runs_marked(tiny_cfg, tmp_path):
    first = run(tiny_cfg(), tmp_path)
    stamp = (tmp_path / "results.json").stat().st_mtime_ns
    again = run(tiny_cfg(), tmp_path)  # a re-launched sweep job: nothing is trained again
    assert again == first
    assert (tmp_path / "results.json").stat().st_mtime_ns == stamp

    with pytest.raises(RuntimeError):
        run(tiny_cfg(), tmp_path / "failed", callbacks=[CrashAt(0, RuntimeError("out of memory"))])
    res = json.loads((tmp_path / "failed" / "results.json").read_text())
    assert res["status"] == "failed"
    assert res["error"] == "RuntimeError: out of memory"
    assert res["method"] == "vanilla"
    assert run(tiny_cfg(), tmp_path / "failed")["status"] == "completed"  # a failed run is run again


@pytest.mark.parametrize("precision,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_mixed_precision_forward_fp32_master_weights_and_exact_resume(tiny_cfg, tmp_path, monkeypatch, precision,
                                                                      dtype):
    from lstsd.methods.base import Method

    seen = []
    original_step = Method.training_step

    def spy(self, batch):
        loss, logits, terms = original_step(self, batch)
        seen.append((logits.dtype, loss.dtype, next(self.model.parameters()).dtype))
        return loss, logits, terms

    monkeypatch.setattr(Method, "training_step", spy)
    overrides = ("method=lstsd", "method.minigen_epochs=1", f"trainer.precision={precision}", "trainer.epochs=4")
    full = run(tiny_cfg(*overrides), tmp_path / "full")
    assert set(seen) == {(dtype, torch.float32, torch.float32)}  # low-precision forward, fp32 loss and weights
    scaler = torch.load(tmp_path / "full" / "last.pt", weights_only=False)["scaler"]
    assert (scaler.get("scale", 0) > 0) == (precision == "fp16")  # fp16 keeps a loss scale, bf16 needs none

    monkeypatch.undo()  # the spy: the resumed run as any
    with pytest.raises(KeyboardInterrupt):
        run(tiny_cfg(*overrides), tmp_path / "resumed", callbacks=[CrashAt(2)])
    assert strip_time(run(tiny_cfg(*overrides), tmp_path / "resumed")) == strip_time(full)


def test_channels_last_model_and_same_predictions(tiny_cfg, tmp_path):
    """channels_last changes the memory layout only: the same run to float tolerance."""
    a = run(tiny_cfg("trainer.epochs=2"), tmp_path / "a")
    b = run(tiny_cfg("trainer.epochs=2", "trainer.channels_last=true"), tmp_path / "b")
    wa = torch.load(tmp_path / "a" / "last.pt", weights_only=False)["model"]
    wb = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["model"]
    assert all(torch.allclose(wa[k].float(), wb[k].float(), atol=1e-4) for k in wa)
    assert abs(a["train_loss_final"] - b["train_loss_final"]) < 1e-4


@pytest.mark.slow
def test_compiled_model_trains_like_the_eager_one(tiny_cfg, tmp_path):
    a = run(tiny_cfg("method=lstsd", "method.minigen_epochs=1", "trainer.epochs=2"), tmp_path / "a")
    b = run(tiny_cfg("method=lstsd", "method.minigen_epochs=1", "trainer.epochs=2", "trainer.compile=true"),
            tmp_path / "b")
    assert abs(a["train_loss_final"] - b["train_loss_final"]) < 1e-3
    wb = torch.load(tmp_path / "b" / "last.pt", weights_only=False)["model"]
    assert not any(k.startswith("_orig_mod") for k in wb)  # checkpoints keep the plain names


def test_torchvision_loader_runs_and_is_reproducible(tiny_cfg, tmp_path):
    overrides = ("method=dlb", "dataset.loader=torchvision", "dataset.num_workers=0")  # DLB re-reads samples
    a = run(tiny_cfg(*overrides), tmp_path / "a")
    b = run(tiny_cfg(*overrides), tmp_path / "b")
    assert a["status"] == "completed"
    assert strip_time(a) == strip_time(b)


@pytest.mark.parametrize("method", [["method=lstsd", "method.minigen_epochs=1"], ["method=dlb"],
                                    ["method=mean_teacher", "method.rampup_epochs=0"]])
def test_stop_signal_inside_an_epoch_checkpoints_and_resumes_exactly(tiny_cfg, tmp_path, method):
    """A SIGTERM/SIGUSR1 in the middle of epoch 2: the step finishes, the checkpoint records the position inside
    the epoch (steps done, running sums, DLB's generator), and the resumed run ends as an uninterrupted one."""
    overrides = (*method, "trainer.epochs=3", "model.dropout=0.3", "dataset.batch_size=8")  # 5 steps an epoch
    full = run(tiny_cfg(*overrides), tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run(tiny_cfg(*overrides), tmp_path / "resumed", callbacks=[SignalAt(7)])
    state = torch.load(tmp_path / "resumed" / "last.pt", weights_only=False)
    assert (state["epoch"], state["global_step"], state["in_epoch"]["step"]) == (1, 7, 2)
    resumed = run(tiny_cfg(*overrides), tmp_path / "resumed")
    assert strip_time(resumed) == strip_time(full)
    assert metrics(tmp_path / "resumed") == metrics(tmp_path / "full")


def test_non_finite_loss_names_the_step_and_keeps_the_last_good_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    from lstsd.errors import TrainingError
    from lstsd.methods.base import Method

    original = Method.loss
    calls = []

    def poisoned(self, batch, logits):
        loss, terms = original(self, batch, logits)
        calls.append(1)
        if len(calls) == 6:  # the 6th step: the 2nd step of epoch 2 (3 steps an epoch)
            terms = {k: v * float("nan") for k, v in terms.items()}
            loss = loss * float("nan")
        return loss, terms

    monkeypatch.setattr(Method, "loss", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 6 \(epoch 2; non-finite terms: loss=nan, "
                                            r"ce=nan\); the last good checkpoint is .*last.pt"):
        run(tiny_cfg("trainer.epochs=3"), tmp_path)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["epoch"] == 1  # epoch 1's, untouched
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


def test_a_failed_checkpoint_write_keeps_the_previous_one(tiny_cfg, tmp_path, monkeypatch):
    from lstsd.errors import TrainingError

    run(tiny_cfg("trainer.epochs=2", "schedule=constant"), tmp_path)
    before = (tmp_path / "last.pt").read_bytes()
    real_save = torch.save

    def failing_save(obj, f):
        real_save(obj, f)
        f.truncate(100)  # half written when the disk fills up
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(TrainingError, match="cannot write the checkpoint .*last.pt: No space left on device"):
        run(tiny_cfg("trainer.epochs=3", "trainer.skip_completed=false", "schedule=constant"), tmp_path)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_checkpoint_is_a_clear_error(tiny_cfg, tmp_path):
    from lstsd.errors import ConfigError

    (tmp_path / "last.pt").write_bytes(b"\x00 not a checkpoint")
    with pytest.raises(ConfigError, match=r".*last.pt: not a readable checkpoint \(.*\) \(delete it, or set "
                                          r"trainer.resume=false to start afresh\)"):
        run(tiny_cfg(), tmp_path)


def test_stop_signal_after_a_non_finite_loss_keeps_the_good_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    """A stop signal arriving after the loss went non-finite in the same epoch must not checkpoint the poisoned
    weights: the run stops with the non-finite error and epoch 1's checkpoint stays."""
    from lstsd.errors import TrainingError
    from lstsd.methods.base import Method

    original_loss = Method.loss

    def poisoned(self, batch, logits):
        loss, terms = original_loss(self, batch, logits)
        return (loss * float("nan"), terms) if self.epoch == 1 else (loss, terms)

    monkeypatch.setattr(Method, "loss", poisoned)
    with pytest.raises(TrainingError, match=r"non-finite loss at step 4 \(epoch 2"):
        run(tiny_cfg("trainer.epochs=3"), tmp_path, callbacks=[SignalAt(5, interrupt=False)])
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert state["epoch"] == 1
    assert state["in_epoch"] is None


def test_step_stats_sums_by_hand_and_resume_from_rows():
    """An epoch's statistics from its kept steps: losses weighted by the steps' sizes, a term that starts at the
    second step counted as 0 before it, the correct count, the first non-finite step; and an epoch resumed from
    the rows of a checkpoint taken after its first step reduces to the same bits as one recorded whole."""
    from lstsd.training.step_stats import StepStats

    logits = [torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]]), torch.tensor([[0.0, 1.0]])]
    labels = [torch.tensor([0, 0, 0]), torch.tensor([1])]
    steps = [(torch.tensor(0.5), {"ce": torch.tensor(0.5)}), (torch.tensor(2.0), {"ce": torch.tensor(1.0),
                                                                               "kd": torch.tensor(1.0)})]

    def record(stats, which):
        for i in which:
            stats.record(steps[i][0], steps[i][1], logits[i], labels[i])

    whole = StepStats(torch.device("cpu"), first_step=10)
    record(whole, (0, 1))
    totals, first_bad = whole.reduce()
    assert {k: v.item() for k, v in totals.items()} == {"loss": 3 * 0.5 + 2.0, "loss_ce": 3 * 0.5 + 1.0,
                                                        "loss_kd": 1.0, "correct": 3.0, "count": 4.0}
    assert first_bad == -1
    first = StepStats(torch.device("cpu"), first_step=10)
    record(first, (0,))
    resumed = StepStats(torch.device("cpu"), first_step=10)
    resumed.load(first.state())
    record(resumed, (1,))
    again = resumed.reduce()[0]
    assert list(again) == list(totals)
    assert all(torch.equal(again[k], totals[k]) for k in totals)
    resumed.record(torch.tensor(float("nan")), {}, logits[1], labels[1])
    assert resumed.reduce()[1] == 13  # the third step after global step 10


def test_best_checkpoint_holds_the_best_validation_epoch(tmp_path):
    """``trainer.save_best=true``: best.pt holds the weights of the epoch with the highest validation accuracy
    (the first of equal ones, as results.json's ``best_val_epoch``): evaluated again they give that epoch's recorded
    score; a run without the option writes no best.pt."""
    from lstsd.config.compose import compose
    from lstsd.data import build_data
    from lstsd.training.evaluation import evaluate
    from lstsd.models import build_model
    from lstsd.training.run import run

    base = ["dataset=digits", "model=digits_cnn", "method=vanilla", "trainer.epochs=4", "trainer.device=cpu",
            "dataset.val_fraction=0.2", "optim.lr=0.5", "trainer.progress=false"]
    res = run(compose([*base, "trainer.save_best=true", f"hydra.run.dir={tmp_path}"]), run_dir=tmp_path)
    history = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    best = torch.load(tmp_path / "best.pt", weights_only=False)
    assert best["metric"] == "val_acc"
    assert best["epoch"] == res["best_val_epoch"]
    assert best["value"] == max(r["val_acc"] for r in history) == history[best["epoch"] - 1]["val_acc"]
    conf = compose(base)
    data = build_data(conf.dataset, conf.seed, torch.device("cpu"))
    model = build_model(conf.model, data.info.num_classes, data.info.input_shape)
    model.load_state_dict(best["model"])
    scores = evaluate(model, data.evals["val"], contextlib.nullcontext, ("acc",))
    assert scores["acc"] == pytest.approx(best["value"], abs=1e-9)
    other = tmp_path / "plain"
    run(compose([*base, f"hydra.run.dir={other}"]), run_dir=other)
    assert not (other / "best.pt").exists()


def test_limit_batches_trains_and_evaluates_that_many_batches(tiny_cfg, tmp_path):
    """trainer.limit_batches=2 (40 samples in batches of 16: 3 an epoch): 2 updates an epoch, the test split's
    first 2 batches of 1000 (all 20 samples here), the schedule over the updates that run."""
    res = run(tiny_cfg("trainer.limit_batches=2", "dataset.eval_batch_size=8"), tmp_path)
    assert torch.load(tmp_path / "last.pt", weights_only=False)["global_step"] == 3 * 2
    assert res["steps_per_second"] > 0
    rows = metrics(tmp_path)
    assert len(rows) == 3


def test_clip_grad_norm_clips_and_a_large_bound_changes_nothing(tiny_cfg, tmp_path):
    plain = run(tiny_cfg("trainer.epochs=1"), tmp_path / "plain")
    loose = run(tiny_cfg("trainer.epochs=1", "trainer.clip_grad_norm=1e9"), tmp_path / "loose")
    tight = run(tiny_cfg("trainer.epochs=1", "trainer.clip_grad_norm=1e-6"), tmp_path / "tight")
    weights = {k: torch.load(tmp_path / k / "last.pt", weights_only=False)["model"] for k in ("plain", "loose", "tight")}
    assert all(torch.equal(weights["plain"][k], weights["loose"][k]) for k in weights["plain"])
    assert (plain["train_loss_final"], plain["test_acc_final"]) == (loose["train_loss_final"], loose["test_acc_final"])
    assert tight["train_loss_final"] != plain["train_loss_final"]
