"""The guards of a loop of one's own: non-finite logits and bank rows never reach a bank, hooks called out of order,
a rank state of the wrong form and an IndexedDataset of the wrong kind are each refused with one clear error,
and the orders the trainer and a resume use still pass."""
import copy
import re

import pytest
import torch
from torch import nn
from torch.utils.data import IterableDataset, TensorDataset

import lstsd
from lstsd.errors import ConfigError
from lstsd.methods.banks import SampleBank

pytestmark = pytest.mark.usefixtures("one_thread")

N, C = 6, 3
Y, INDEX = torch.tensor([0, 1, 2, 0]), torch.tensor([0, 1, 2, 5])


def banks(method) -> dict:
    """Every bank tensor of ``method`` (values and filled), cloned."""
    state = method.state_dict()
    return {f"{k}.{j}": t.clone() for k, b in state.items() if isinstance(b, dict) for j, t in b.items()}


def same_banks(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def step(method, logits=None, index=INDEX):
    method.compute_loss(torch.randn(len(index), C) if logits is None else logits, Y[:len(index)], index)
    method.after_optimizer_step()


def nan_logits() -> torch.Tensor:
    logits = torch.randn(4, C)
    logits[1, 2] = float("nan")
    logits[3, 0] = float("inf")
    return logits


# ------------------------------------------------------------------------------------------ non-finite numbers
def test_one_nan_step_leaves_temporal_ensembling_banks_as_they_were():
    te = lstsd.method("temporal_ensembling", num_samples=N, num_classes=C, epochs=4, rampup_epochs=0)
    te.on_epoch_start(0)
    step(te)
    te.on_epoch_end(0)  # Z holds an epoch
    te.on_epoch_start(1)
    step(te)
    before = banks(te)
    assert before["accumulated.values"].abs().sum() > 0 and before["current.filled"].any()
    message = ("method temporal_ensembling: compute_loss() got non-finite logits at step 1 of epoch 1 (0-based; 1 NaN "
               "and 1 infinite of 12 values): refused before anything was recorded, the banks are as they were. Skip "
               "the step (no optimizer.step() and no after_optimizer_step()), or load_state_dict() an earlier state "
               "and lower the learning rate")
    with pytest.raises(ValueError, match=re.escape(message)):
        te.compute_loss(nan_logits().requires_grad_(), Y, INDEX)
    assert same_banks(banks(te), before)
    with pytest.raises(RuntimeError, match=r"after_optimizer_step\(\) without a compute_loss\(\) before it"):
        te.after_optimizer_step()  # nothing of the refused step to record
    te.on_epoch_end(1)  # the epoch goes on and ends without the bad step
    after = banks(te)
    assert torch.isfinite(after["accumulated.values"]).all() and torch.isfinite(after["current.values"]).all()
    assert torch.equal(after["current.values"], before["current.values"])


def test_a_nan_step_is_refused_before_lstsd_records_or_reads_anything():
    m = lstsd.method("lstsd", num_samples=N, num_classes=C, epochs=4, minigen_epochs=1)
    m.on_epoch_start(0)
    step(m)
    m.on_epoch_end(0)
    m.on_epoch_start(1)
    before = banks(m)
    with pytest.raises(ValueError, match=r"method lstsd: compute_loss\(\) got non-finite logits at step 0 of epoch 1"):
        m.compute_loss(nan_logits(), Y, INDEX)
    assert same_banks(banks(m), before)
    assert m.pending is None and m.steps_done == 0
    step(m)  # the loop skips the bad step and goes on
    assert m.steps_done == 1


def test_a_bank_never_stores_a_non_finite_row():
    for topk in (0, 2):
        bank = SampleBank(N, C, topk=topk)
        good = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])
        bank.write(torch.tensor([1, 4]), good)
        kept = bank.read(torch.tensor([1, 4]))
        bank.write(torch.tensor([1, 4, 2]), torch.tensor([[float("nan"), 0.0, 0.0], [0.1, float("inf"), 0.0],
                                                          [0.6, 0.3, 0.1]]))
        assert torch.equal(bank.read(torch.tensor([1, 4])), kept)  # the earlier rows
        assert bank.filled.tolist() == [False, True, True, False, True, False]  # the finite row was written
        assert bank.refused.item()
        bank.clear_refused()
        assert not bank.refused.item() and bank.filled[2]
    half = SampleBank(N, C, dtype="float16")
    half.write(torch.tensor([0]), torch.tensor([[1e5, 0.0, 0.0]]))  # finite, beyond float16's range
    assert not half.filled.any() and not half.values.any() and half.refused.item()


def test_non_finite_bank_rows_are_reported_by_the_next_call():
    m = lstsd.method("lstsd", num_samples=N, num_classes=C, epochs=4, minigen_epochs=1, bank_dtype="float16")
    m.on_epoch_start(0)
    step(m)
    before = banks(m)
    big = torch.zeros(4, C)
    big[:, 0] = 1e5  # a finite loss, logits beyond the float16 bank's range
    step(m, big)
    assert same_banks(banks(m), before)
    message = ("method lstsd: compute_loss() found non-finite rows (NaN or inf) that after_optimizer_step() wrote "
               "to the banks in epoch 0 (2 step(s) done): refused, the banks kept their earlier rows. The "
               "model's weights or re-computed predictions are non-finite, or a logit exceeds a float16 bank's "
               "range: load_state_dict() an earlier state and lower the learning rate, or use bank_dtype='float32'")
    with pytest.raises(RuntimeError, match=re.escape(message)):
        m.compute_loss(torch.randn(4, C), Y, INDEX)
    step(m, big)
    with pytest.raises(RuntimeError, match=r"method lstsd: on_epoch_end\(0\) found non-finite rows"):
        m.on_epoch_end(0)
    assert same_banks(banks(m), before)
    m.on_epoch_end(0)  # reported once


# ------------------------------------------------------------------------------------------ calls out of order
ORDER = [  # (calls before, the refused call, its error, its message)
    ([], ("compute_loss",), RuntimeError, r"compute_loss() before the first on_epoch_start(epoch): call "
                                          "on_epoch_start(epoch) at the start of every epoch (0, 1, ...)"),
    ([], ("after_optimizer_step",), RuntimeError, "after_optimizer_step() without a compute_loss() before it: call "
                                                  "compute_loss() once per step, then after_optimizer_step()"),
    ([], ("on_epoch_end", 0), RuntimeError, "on_epoch_end(0) without a matching on_epoch_start(0) (no epoch has "
                                            "started): call on_epoch_start(epoch) before an epoch's first step and "
                                            "on_epoch_end(epoch) after its last"),
    ([], ("on_epoch_start", 4), ConfigError, "on_epoch_start(4) is invalid: allowed an epoch in [0, 4): the method "
                                             "was built for epochs=4 (0-based: the first epoch is 0, the last 3)"),
    ([], ("on_epoch_start", -1), ConfigError, "on_epoch_start(-1) is invalid: allowed an epoch in [0, 4)"),
    ([], ("on_epoch_start", 1.0), ConfigError, "on_epoch_start(1.0) is invalid: the epoch is a float, allowed an "
                                               "integer in [0, 4)"),
    ([("on_epoch_start", 0)], ("on_epoch_start", 0), RuntimeError,
     "on_epoch_start(0) twice: call on_epoch_end(0) after the last step of epoch 0, then call on_epoch_start(1)"),
    ([("on_epoch_start", 0)], ("on_epoch_start", 1), RuntimeError, "on_epoch_start(1) while epoch 0 is open: call "
                                                                   "on_epoch_end(0) after the last step of epoch 0"),
    ([("on_epoch_start", 0)], ("on_epoch_end", 1), RuntimeError,
     "on_epoch_end(1) while epoch 0 is open: on_epoch_end takes the epoch of the matching on_epoch_start(0)"),
    ([("on_epoch_start", 2), ("on_epoch_end", 2)], ("on_epoch_start", 1), RuntimeError,
     "on_epoch_start(1) after epoch 2 has run: epochs go forward, each once; next: call on_epoch_start(3); to go "
     "back, load_state_dict() a state saved then"),
    ([("on_epoch_start", 2), ("on_epoch_end", 2)], ("on_epoch_start", 2), RuntimeError,
     "on_epoch_start(2) after epoch 2 has run"),
    ([("on_epoch_start", 2), ("on_epoch_end", 2)], ("on_epoch_end", 2), RuntimeError,
     "on_epoch_end(2) without a matching on_epoch_start(2) (epoch 2 has ended)"),
    ([("on_epoch_start", 0), ("on_epoch_end", 0)], ("compute_loss",), RuntimeError,
     "compute_loss() after on_epoch_end(0), outside an epoch: it runs between on_epoch_start(epoch) and "
     "on_epoch_end(epoch); next: call on_epoch_start(1)"),
    ([("on_epoch_start", 3), ("on_epoch_end", 3)], ("compute_loss",), RuntimeError,
     "compute_loss() after on_epoch_end(3), outside an epoch: it runs between on_epoch_start(epoch) and "
     "on_epoch_end(epoch); next: end training (epoch 3 is the last of the epochs=4 the method was built for)"),
    ([("on_epoch_start", 0), ("compute_loss",)], ("on_epoch_end", 0), RuntimeError,
     "on_epoch_end(0) with the last compute_loss() awaiting after_optimizer_step(): call after_optimizer_step() "
     "after the step's optimizer.step(), then on_epoch_end()"),
]


def call(method, name, *args):
    if name == "compute_loss":
        return method.compute_loss(torch.randn(4, C), Y, INDEX)
    return getattr(method, name)(*args)


@pytest.mark.parametrize("name", ["temporal_ensembling", "lstsd"])
@pytest.mark.parametrize("before, refused, kind, message", ORDER)
def test_hooks_out_of_order_are_refused_and_change_nothing(name, before, refused, kind, message):
    m = lstsd.method(name, num_samples=N, num_classes=C, epochs=4)
    for c in before:
        call(m, *c)
    state = copy.deepcopy((m.state_dict(), m.open_epoch, m.last_started, m.epoch, m.pending is None))
    with pytest.raises(kind, match=f"^method {name}: " + re.escape(message)):
        call(m, *refused)
    assert same_banks(banks(m), {f"{k}.{j}": t for k, b in state[0].items() if isinstance(b, dict)
                                 for j, t in b.items()})
    assert (m.open_epoch, m.last_started, m.epoch, m.pending is None) == state[1:]


def test_a_hook_is_checked_once_per_call_through_super_and_patches(monkeypatch):
    """LSTSD's on_epoch_start calls Method's through super(), a patched hook calls the original: one check each."""
    from lstsd.methods.consistency import TemporalEnsembling

    seen = []
    original = TemporalEnsembling.on_epoch_end

    def on_epoch_end(self, epoch):
        seen.append(epoch)
        return original(self, epoch)

    monkeypatch.setattr(TemporalEnsembling, "on_epoch_end", on_epoch_end)
    te = lstsd.method("temporal_ensembling", num_samples=N, num_classes=C, epochs=4)
    lst = lstsd.method("lstsd", num_samples=N, num_classes=C, epochs=4)
    for m in (te, lst):
        m.on_epoch_start(0)
        step(m)
        m.on_epoch_end(0)
        with pytest.raises(RuntimeError, match=r"on_epoch_end\(0\) without a matching on_epoch_start\(0\)"):
            m.on_epoch_end(0)
        m.on_epoch_start(1)
    assert seen == [0, 0] and te.updates == 1  # the refused call did not accumulate Z


def test_epochs_may_skip_forward_and_a_loaded_state_may_start_any_epoch():
    m = lstsd.method("temporal_ensembling", num_samples=N, num_classes=C, epochs=6)
    m.on_epoch_start(0)
    step(m)
    m.on_epoch_end(0)
    saved = copy.deepcopy(m.state_dict())
    m.on_epoch_start(2)  # a gap is allowed: the loop knows its epochs
    step(m)
    m.on_epoch_end(2)
    m.load_state_dict(saved)  # roll back to the end of epoch 0 ...
    m.on_epoch_start(1)  # ... and go on from there
    step(m)
    with pytest.raises(ValueError, match="non-finite logits at step 1 of epoch 1"):
        m.compute_loss(nan_logits(), Y, INDEX)
    m.load_state_dict(saved)  # a roll-back from inside an epoch: it may start again
    m.on_epoch_start(1)
    step(m)
    m.on_epoch_end(1)
    fresh = lstsd.method("temporal_ensembling", num_samples=N, num_classes=C, epochs=6)
    fresh.load_state_dict(saved)
    fresh.on_epoch_start(1)  # a resume in a new process


def test_the_trainers_resume_inside_an_epoch_and_its_rank_state_pass():
    """The trainer's order on a resume inside an epoch: load both states, on_epoch_start, both states again, the
    remaining steps, on_epoch_end."""
    model = nn.Linear(2, C)
    data = lstsd.IndexedDataset(TensorDataset(torch.randn(N, 2), torch.tensor([0, 1, 2, 0, 1, 2])), augment=True)
    a = lstsd.method("dlb", num_samples=N, num_classes=C, epochs=3, model=model, dataset=data)
    a.on_epoch_start(0)
    x = torch.randn(4, 2)
    a.compute_loss(model(x), Y, INDEX)
    a.after_optimizer_step()
    state, rank = copy.deepcopy(a.state_dict()), copy.deepcopy(a.rank_state())
    b = lstsd.method("dlb", num_samples=N, num_classes=C, epochs=3, model=model, dataset=data)
    b.load_state_dict(state)
    b.load_rank_state(rank)
    b.on_epoch_start(0)
    b.load_state_dict(state)
    b.load_rank_state(rank)
    b.load_rank_state({})  # a rank the checkpoint did not have
    b.compute_loss(model(x), Y, INDEX)
    b.after_optimizer_step()
    b.on_epoch_end(0)
    b.on_epoch_start(1)


# ------------------------------------------------------------------------------------------ rank states
def dlb_and_its_rank_state():
    model = nn.Linear(2, C)
    data = lstsd.IndexedDataset(TensorDataset(torch.randn(N, 2), torch.tensor([0, 1, 2, 0, 1, 2])))
    m = lstsd.method("dlb", num_samples=N, num_classes=C, epochs=3, model=model, dataset=data)
    m.on_epoch_start(0)
    m.compute_loss(model(torch.randn(4, 2)), Y, INDEX)
    m.after_optimizer_step()
    return m, m.rank_state()


GEN = torch.Generator().get_state()
RANK_GARBAGE = [  # (state, message)
    ([1, 2], "state is a list, allowed the dict that rank_state() returns (keys: 'last', 'generator')"),
    (None, "state is None, allowed the dict that rank_state() returns"),
    ({"last": None}, "missing key(s) 'generator': allowed the keys rank_state() returns ('last', 'generator'), or {}"),
    ({"last": None, "generator": None, "extra": 1}, "unexpected key(s) 'extra': allowed the keys"),
    ({"last": "abc", "generator": None}, "'last' is of type str, allowed None, a random generator's state or a batch (a "
                                         "tuple of tensors): what rank_state() returns"),
    ({"last": None, "generator": torch.zeros(7, dtype=torch.uint8)},
     "'generator' is a vector of 7 bytes, allowed a random generator's state (torch.Generator().get_state(): "
     f"{GEN.numel()} bytes)"),
    ({"last": GEN, "generator": None}, "'last' is a random generator's state, allowed None or a batch (as this "
                                       "method's rank_state() holds)"),
    ({"last": (torch.tensor([0, 1]), torch.zeros(3, C)), "generator": None},
     "'last' holds tensors of shapes [(2,), (3, 3)], allowed a batch: one row per sample in each"),
    ({"last": (torch.tensor([0, 1]), torch.zeros(2, C + 1)), "generator": None},
     "'last' holds tensors of shapes [(2,), (2, 4)] and dtypes [torch.int64, torch.float32], allowed those of this "
     "method's rank_state(): [(4,), (4, 3)] and [torch.int64, torch.float32] (any batch size)"),
    ({"last": (torch.tensor([0, 9]), torch.zeros(2, C)), "generator": None},
     "'last': sample ids from 0 to 9, allowed ids in [0, 6)"),
    ({"last": (torch.tensor([0, 1]), torch.full((2, C), float("nan"))), "generator": None},
     "'last' holds non-finite values (NaN or inf): allowed finite rows"),
]


@pytest.mark.parametrize("state, message", RANK_GARBAGE)
def test_a_rank_state_of_the_wrong_form_is_refused(state, message):
    m, good = dlb_and_its_rank_state()
    with pytest.raises(ConfigError, match="^method dlb: load_rank_state" + re.escape(f"(state): {message}")):
        m.load_rank_state(state)
    assert all(torch.equal(a, b) for a, b in zip(m.last, good["last"]))  # nothing was applied
    m.load_rank_state(good)


def test_a_rank_state_is_checked_without_a_template_too():
    """Before any epoch a method's own rank state is empty of values (None): the forms are still checked."""
    fresh = lstsd.method("mean_teacher", num_samples=N, num_classes=C, epochs=3, model=nn.Linear(2, C))
    with pytest.raises(ConfigError, match=r"'generator' is of type int, allowed None, a random generator's state or a "
                                          r"batch \(a tuple of tensors\): what rank_state\(\) returns"):
        fresh.load_rank_state({"generator": 5})
    fresh.load_rank_state({"generator": GEN})
    dlb = lstsd.method("dlb", num_samples=N, num_classes=C, epochs=3, model=nn.Linear(2, C),
                       dataset=lstsd.IndexedDataset(TensorDataset(torch.randn(N, 2), torch.zeros(N))))
    with pytest.raises(ConfigError, match=r"'last' holds rows of shape \(2, 4\), allowed 3 columns \(one per class\)"):
        dlb.load_rank_state({"last": (torch.tensor([0, 1]), torch.zeros(2, 4)), "generator": None})
    vanilla = lstsd.method("vanilla", num_samples=N, num_classes=C, epochs=3)
    vanilla.load_rank_state({})
    with pytest.raises(ConfigError, match=r"unexpected key\(s\) 'last': allowed the keys rank_state\(\) returns "
                                          r"\(none\), or \{\}"):
        vanilla.load_rank_state({"last": None})


def test_load_state_dict_refuses_a_state_that_is_no_dict():
    m = lstsd.method("lstsd", num_samples=N, num_classes=C, epochs=3)
    with pytest.raises(ConfigError, match=r"^method lstsd: load_state_dict\(state\): state is a list, allowed the "
                                          r"dict that state_dict\(\) returns$"):
        m.load_state_dict([])


# ------------------------------------------------------------------------------------------ IndexedDataset
class Stream(IterableDataset):
    def __iter__(self):
        yield torch.zeros(2), 0


@pytest.mark.parametrize("args, message", [
    ((None,), "IndexedDataset(dataset): dataset is None: allowed a map-style dataset: len(dataset) samples, "
              "dataset[i] = (input, target)"),
    ((Stream(),), "IndexedDataset(dataset): dataset is an IterableDataset (Stream), which has no sample ids (it is "
                  "read in order, not by index): allowed a map-style dataset"),
    ((object(),), "IndexedDataset(dataset): dataset is of type object, without len() or [i]: allowed a map-style dataset"),
    ((TensorDataset(torch.zeros(3, 2), torch.zeros(3)), "yes"),
     "IndexedDataset(dataset, augment='yes'): augment is invalid: allowed True or False (whether reading a sample "
     "again gives a new augmentation)"),
    ((TensorDataset(torch.zeros(3, 2), torch.zeros(3)), 1), "IndexedDataset(dataset, augment=1): augment is invalid"),
])
def test_indexed_dataset_refuses_what_it_cannot_index_at_construction(args, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        lstsd.IndexedDataset(*args)
    assert isinstance(ConfigError(""), ValueError)


def test_indexed_dataset_takes_any_map_style_dataset():
    assert len(lstsd.IndexedDataset([(torch.zeros(2), 0), (torch.ones(2), 1)], augment=False)) == 2
    assert lstsd.IndexedDataset(TensorDataset(torch.zeros(3, 2), torch.zeros(3))).augment is True
