"""LSTSD's semantics pinned on a tiny dataset with recorded shuffles (Algorithm 1, Eq. 1, Table 3 variants)."""
import logging
from collections import Counter

import pytest
import torch

from lstsd.methods.banks import SampleBank
from lstsd.methods.losses import teacher_probs
from lstsd.methods.lstsd import LSTSD, LSTSDSingle
from lstsd.training.run import run
from helpers import read_metrics

E = 2  # epochs per mini-generation
TINY_LSTSD = ("method=lstsd", f"method.minigen_epochs={E}", "trainer.epochs=6", "dataset.num_train=10",
              "dataset.batch_size=4")


@pytest.fixture
def recorder(monkeypatch):
    """Record, per (epoch, sample), the training-pass logits and every teacher row the loss reads."""
    preds, reads = {}, []
    orig_after, orig_teacher = LSTSD.after_step, LSTSD.teacher

    def after_step(self, batch, logits):
        for i, row in zip(batch.index.tolist(), logits.detach().clone()):
            preds[(self.epoch, i)] = row
        return orig_after(self, batch, logits)

    def teacher(self, kind, batch):
        rows = orig_teacher(self, kind, batch)
        reads.extend((self.epoch, kind, i, row.clone()) for i, row in zip(batch.index.tolist(), rows))
        return rows

    monkeypatch.setattr(LSTSD, "after_step", after_step)
    monkeypatch.setattr(LSTSD, "teacher", teacher)
    return preds, reads


def test_short_and_long_targets_follow_algorithm_1(tiny_cfg, tmp_path, recorder):
    preds, reads = recorder
    run(tiny_cfg(*TINY_LSTSD), tmp_path)
    assert {e for e, *_ in reads} == {2, 3, 4, 5}  # no teacher at all in the first mini-generation
    count = Counter((e, kind) for e, kind, _, _ in reads)
    assert set(count.values()) == {10}  # every sample read exactly once per epoch and teacher
    long_seen = {}
    for epoch, kind, i, row in reads:
        if kind == "short":  # the prediction recorded for i during the previous epoch
            assert torch.equal(row, preds[(epoch - 1, i)])
        else:  # the prediction recorded for i in the last epoch of the previous mini-generation
            last_of_previous = E * (epoch // E) - 1
            assert torch.equal(row, preds[(last_of_previous, i)])
            long_seen.setdefault((epoch // E, i), row)
            assert torch.equal(row, long_seen[(epoch // E, i)])  # fixed within the mini-generation
    # predictions differ between epochs, so the checks above could fail
    assert not torch.equal(preds[(1, 0)], preds[(2, 0)])


def test_no_kd_term_in_first_minigeneration(tiny_cfg, tmp_path):
    run(tiny_cfg(*TINY_LSTSD), tmp_path)
    rows = read_metrics(tmp_path)
    for row in rows[:E]:
        assert "loss_kd_long" not in row
        assert "loss_kd_short" not in row
        assert row["train_loss"] == pytest.approx(row["loss_ce"])
    for row in rows[E:]:
        assert row["loss_kd_long"] > 0
        assert row["loss_kd_short"] > 0
        assert row["train_loss"] == pytest.approx(row["loss_ce"] + 2.4 * row["loss_kd_long"] + 4.0 * row["loss_kd_short"],
                                                  rel=1e-5)


def test_zero_weights_reproduce_vanilla_bit_for_bit(tiny_cfg, tmp_path):
    run(tiny_cfg("method=vanilla", "trainer.epochs=4"), tmp_path / "vanilla")
    run(tiny_cfg("method=lstsd", "method.minigen_epochs=1", "method.lambda_long=0", "method.lambda_short=0",
                 "trainer.epochs=4"), tmp_path / "zero")
    run(tiny_cfg("method=lstsd", "method.minigen_epochs=1", "trainer.epochs=4"), tmp_path / "lstsd")
    weights = {k: torch.load(tmp_path / k / "last.pt", weights_only=False)["model"] for k in ("vanilla", "zero", "lstsd")}
    assert all(torch.equal(weights["vanilla"][k], weights["zero"][k]) for k in weights["vanilla"])
    assert not all(torch.equal(weights["vanilla"][k], weights["lstsd"][k]) for k in weights["vanilla"])
    assert read_metrics(tmp_path / "vanilla") == read_metrics(tmp_path / "zero")


@pytest.mark.parametrize("variant,banks", [("lstsd_wo_long", {"short"}), ("lstsd_wo_short", {"long"})])
def test_ablations_allocate_and_apply_only_their_teacher(tiny_cfg, tmp_path, recorder, variant, banks):
    _, reads = recorder
    res = run(tiny_cfg(*TINY_LSTSD, f"method={variant}"), tmp_path)
    assert {kind for _, kind, _, _ in reads} == banks
    assert res["method"] == variant
    assert res["bank_bytes"] == 10 * 4 * 4  # one 10 x 4 float32 bank


def test_probability_banks_store_the_tempered_teacher(tiny_cfg, tmp_path, recorder):
    preds, reads = recorder
    run(tiny_cfg(*TINY_LSTSD, "method.bank_store=probs", "method.temperature=3"), tmp_path)
    for epoch, kind, i, row in reads:
        source = epoch - 1 if kind == "short" else E * (epoch // E) - 1
        assert torch.allclose(row, teacher_probs(preds[(source, i)][None], 3.0)[0], atol=1e-6)


def test_post_update_banks_hold_the_prediction_after_the_step(tiny_cfg, tmp_path, monkeypatch):
    checked = []
    orig = LSTSD.after_step

    def after_step(self, batch, logits):
        orig(self, batch, logits)
        self.model.eval()
        with torch.no_grad():
            expected = self.model(batch.x)
        self.model.train()
        stored = self.banks["short"].read(batch.index)
        assert torch.allclose(stored, expected, atol=1e-6)
        assert not torch.allclose(stored, logits, atol=1e-3)
        checked.append(len(batch.index))

    monkeypatch.setattr(LSTSD, "after_step", after_step)
    run(tiny_cfg(*TINY_LSTSD, "method.bank_source=post_update", "trainer.epochs=2"), tmp_path)
    assert sum(checked) == 20


def test_single_teachers_are_frozen_snapshots(tiny_cfg, tmp_path, monkeypatch):
    at_end, checks = {}, []
    orig_end, orig_start = LSTSDSingle.on_epoch_end, LSTSDSingle.on_epoch_start

    def on_epoch_end(self, epoch):
        at_end[epoch] = {k: v.clone() for k, v in self.model.state_dict().items()}
        orig_end(self, epoch)

    def on_epoch_start(self, epoch):
        orig_start(self, epoch)
        if epoch >= E:
            for kind, source in (("short", epoch - 1), ("long", E * (epoch // E) - 1)):
                snap = self.snapshots[kind]
                assert not any(p.requires_grad for p in snap.parameters())  # run in train mode (snapshot_mode)
                # weights and running statistics as they were (batch-norm momentum 0); the batch count aside
                assert all(torch.equal(v, at_end[source][k]) for k, v in snap.state_dict().items()
                           if not k.endswith("num_batches_tracked"))
                checks.append((epoch, kind))

    monkeypatch.setattr(LSTSDSingle, "on_epoch_end", on_epoch_end)
    monkeypatch.setattr(LSTSDSingle, "on_epoch_start", on_epoch_start)
    res = run(tiny_cfg(*TINY_LSTSD, "method=lstsd_single"), tmp_path)
    assert len(checks) == 8
    assert res["bank_bytes"] == 0
    assert res["method"] == "lstsd_single"


def test_bank_memory_and_round_trip():
    assert SampleBank(50_000, 100, "float16").nbytes == 10_000_000  # 10 MB
    assert SampleBank(50_000, 100, "bfloat16").nbytes == 10_000_000
    assert SampleBank(50_000, 100, "float32").nbytes == 20_000_000
    for dtype in ("float32", "float16", "bfloat16"):
        bank = SampleBank(6, 3, dtype)
        rows = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.25, -1.0]])
        bank.write(torch.tensor([4, 1]), rows)
        assert torch.equal(bank.read(torch.tensor([4, 1])), rows)  # exactly representable in every dtype
        assert bank.filled.tolist() == [False, True, False, False, True, False]
        other = SampleBank(6, 3, dtype)
        other.load_state_dict(bank.state_dict())
        assert torch.equal(other.values, bank.values)


def test_padded_duplicates_keep_their_last_row():
    """DDP pads the last global batch with repeated samples; a gathered write keeps each id's last row, whatever
    the device's scatter order (ids 3 and 1 occur twice: rows 2 and 4 win)."""
    from lstsd.methods.banks import last_of_each

    rows = torch.arange(10.0).view(5, 2)
    index, kept = last_of_each(torch.tensor([3, 1, 3, 2, 1]), rows)
    assert index.tolist() == [1, 2, 3]
    assert torch.equal(kept, rows[[4, 3, 2]])
    ids = torch.randint(0, 500, (4096,), generator=torch.Generator().manual_seed(0))
    index, kept = last_of_each(ids, torch.arange(4096.0)[:, None])
    assert all(ids[int(k)] == i and not (ids[int(k) + 1:] == i).any() for i, k in zip(index, kept))


def test_top_k_bank_keeps_the_k_largest_and_spreads_the_rest():
    """C = 10, k = 3: the top three probabilities come back exactly at their classes, the remaining mass
    0.2 is spread over the 7 other classes (0.2 / 7 each), every row sums to 1."""
    row = torch.tensor([0.05, 0.5, 0.01, 0.2, 0.04, 0.1, 0.03, 0.05, 0.01, 0.01])
    for dtype, tol in (("float32", 1e-7), ("float16", 1e-3), ("bfloat16", 4e-3)):
        bank = SampleBank(5, 10, dtype, topk=3)
        bank.write(torch.tensor([2, 0]), torch.stack([row, row.flip(0)]))
        got = bank.read(torch.tensor([2, 0]))
        for r, source in zip(got, (row, row.flip(0))):
            top = source.topk(3).indices
            assert torch.equal(r[top], source[top].to(bank.values.dtype).float())  # exact, to the bank's dtype
            rest = torch.ones(10, dtype=torch.bool).index_fill(0, top, False)
            assert torch.allclose(r[rest], torch.full((7,), 0.2 / 7), atol=tol)
            assert abs(r.sum().item() - 1.0) < tol
        assert bank.filled.tolist() == [True, False, True, False, False]
        other = SampleBank(5, 10, dtype, topk=3)
        other.load_state_dict(bank.state_dict())
        assert torch.equal(other.read(torch.tensor([0, 2])), bank.read(torch.tensor([0, 2])))
    assert SampleBank(1_281_167, 1000, "float16", topk=5).nbytes == 1_281_167 * 5 * (2 + 2)  # 25.6 MB
    assert SampleBank(4, 40_000, "float32", topk=2).classes.dtype == torch.int32  # ids beyond int16's range
    with pytest.raises(ValueError):
        SampleBank(4, 10, topk=10)


def test_lstsd_with_a_top_k_bank(tiny_cfg, tmp_path):
    """k = C - 1 loses nothing (the one class left gets the rest): the dense probability bank's run."""
    dense = run(tiny_cfg(*TINY_LSTSD, "method.bank_store=probs"), tmp_path / "dense")
    top = run(tiny_cfg(*TINY_LSTSD, "method.bank_store=probs", "method.bank_topk=3"), tmp_path / "top")
    assert abs(dense["train_loss_final"] - top["train_loss_final"]) < 1e-5
    assert top["bank_bytes"] == 2 * 10 * 3 * (4 + 2)  # two banks of 10 samples x 3 (float32 value, int16 id)


def test_warns_when_it_would_never_distil(tiny_cfg, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        run(tiny_cfg("method=lstsd", "method.minigen_epochs=3", "trainer.epochs=3"), tmp_path)
    assert "never distils" in caplog.text
