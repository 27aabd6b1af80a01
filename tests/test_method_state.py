"""Every method's state survives a checkpoint round trip: a trainer rebuilt from another's state_dict (weights,
optimiser, random generators and the method's own state: banks, snapshots, EMA teacher, DLB's last batch, the
discriminator) trains the next epochs to the same bits. The run-level resume tests (tests/test_engine.py) cover
each trainer feature once: a crash between epochs, a stop signal inside one, checkpoint_every, precision."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from helpers import tiny
from lstsd.config import validate
from lstsd.training.run import assemble

METHODS = [["method=vanilla"], ["method=lstsd", "method.minigen_epochs=1"],
           ["method=lstsd_single", "method.minigen_epochs=1"], ["method=sd", "method.minigens=2"],
           ["method=snapshot_ensembles"], ["method=mean_teacher", "method.rampup_epochs=0"],
           ["method=mean_teacher_code", "method.rampup_epochs=0"], ["method=temporal_ensembling", "method.rampup_epochs=1"],
           ["method=dlb"], ["method=tfkd_reg"], ["method=label_smoothing"],
           ["method=kd", "method.teacher_checkpoint=GIVEN"]]


def trainer(overrides, run_dir, teacher=None):
    conf = validate(tiny(*overrides, "trainer.epochs=4", "model.dropout=0.3"))  # dropout: the generators too
    return assemble(conf, run_dir, list(overrides), teacher)


def same(a, b) -> bool:
    """Nested states equal: tensors bit for bit, the rest by value."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):  # NumPy's generator state
        return np.array_equal(a, b)
    return a == b


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m[0].removeprefix("method="))
def test_a_method_resumes_from_its_state_to_the_same_bits(tmp_path, method, one_thread):
    teacher = None
    if "method.teacher_checkpoint=GIVEN" in method:  # KD: a teacher module given to the run
        torch.manual_seed(1)
        teacher, method = nn.Sequential(nn.Flatten(), nn.Linear(64, 4)), ["method=kd"]
    a = trainer(method, tmp_path / "a", teacher)
    for epoch in range(2):
        a.train_epoch(epoch)
    state = copy.deepcopy(a.state_dict())  # as a checkpoint file holds it (the live tensors go on training)
    rows_a = [a.train_epoch(epoch) for epoch in (2, 3)]  # the random generators are global: a first, then b
    b = trainer(method, tmp_path / "b", teacher)
    b.load_state_dict(state)
    assert [b.train_epoch(epoch) for epoch in (2, 3)] == rows_a
    assert same(a.method.state_dict(), b.method.state_dict())
    assert same(a.method.rank_state(), b.method.rank_state())
    assert same(a.model.state_dict(), b.model.state_dict())
