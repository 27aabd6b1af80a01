"""What a process pays beyond its training steps, and that cutting it changes nothing a run computes: torch.optim's
optimisers as the trainer builds them (lstsd.training.optimizers.eager) give the stock classes' updates, states and
checkpoints to the bit without importing torch._dynamo; the console commands' end without the interpreter's teardown
(lstsd.errors.ends_without_teardown) keeps exit handlers, output and status; a CPU run's allocator keeps freed
memory (lstsd.machine.keep_freed_memory)."""
import functools
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from lstsd.machine import keep_freed_memory
from lstsd.training.optimizers import build, eager

CASES = [
    (torch.optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)),
    (torch.optim.SGD, dict(lr=0.05, momentum=0.0, foreach=False)),
    (torch.optim.Adam, dict(lr=0.01, fused=True)),
    (torch.optim.Adam, dict(lr=0.01, foreach=True, amsgrad=True)),
    (torch.optim.AdamW, dict(lr=0.01, weight_decay=0.05, foreach=False)),
]


def trained(cls, kwargs, steps=6, reload_at=3):
    """A small network's weights and optimiser state after ``steps`` updates; at ``reload_at`` the optimiser is
    rebuilt from its state_dict, as a resumed run's is."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.ReLU(), torch.nn.Linear(7, 3))
    optimizer = cls(net.parameters(), **kwargs)
    for step in range(steps):
        x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
        if step == reload_at:
            state = optimizer.state_dict()
            optimizer = cls(net.parameters(), **kwargs)
            optimizer.load_state_dict(state)
    return [p.detach().clone() for p in net.parameters()], optimizer.state_dict()


@pytest.mark.parametrize("cls,kwargs", CASES, ids=lambda c: getattr(c, "__name__", ""))
def test_an_eager_optimiser_updates_as_the_stock_one_to_the_bit(cls, kwargs):
    weights, state = trained(cls, kwargs)
    eager_weights, eager_state = trained(eager(cls), kwargs)
    assert all(torch.equal(a, b) for a, b in zip(weights, eager_weights))
    assert state["param_groups"] == eager_state["param_groups"]
    for k, v in state["state"].items():
        assert v.keys() == eager_state["state"][k].keys()
        assert all(torch.equal(v[name], eager_state["state"][k][name]) for name in v)


def test_the_eager_class_is_the_stock_class_without_its_compile_marks():
    cls = eager(torch.optim.SGD)
    assert issubclass(cls, torch.optim.SGD) and cls.__name__ == "SGD"
    assert eager(torch.optim.SGD) is cls  # built once
    for name in ("add_param_group", "zero_grad", "state_dict", "load_state_dict", "step"):
        assert name in vars(cls), name

    class Own(torch.optim.Optimizer):  # a user's optimiser without torch's marks of its own: kept as it is
        def step(self, closure=None):
            return None

    assert eager(Own).step is Own.step
    assert eager(len) is len  # not an optimiser class: unchanged
    made = build(functools.partial(torch.optim.SGD, lr=0.3), [torch.nn.Parameter(torch.zeros(2))])
    assert type(made) is cls and made.defaults["lr"] == 0.3


def test_the_step_keeps_differentiable_and_closure():
    p = torch.nn.Parameter(torch.ones(3))
    optimizer = eager(torch.optim.SGD)([p], lr=0.5)
    loss = optimizer.step(lambda: (p.sum()).backward() or p.sum().detach())
    assert torch.equal(p.detach(), torch.full((3,), 0.5)) and float(loss) == 3.0
    assert torch.is_grad_enabled()  # the step restores the caller's gradient mode


def test_a_run_never_imports_torch_dynamo(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        sys.argv = ["lstsd", "trainer.epochs=2", "trainer.progress=false", "optim=sgd",
                    "hydra.run.dir={tmp_path / 'run'}"]
        from lstsd.cli import main
        main()
        sys.argv = ["lstsd", "trainer.epochs=3", "trainer.progress=false", "optim=sgd",
                    "hydra.run.dir={tmp_path / 'run'}"]
        main()  # resumed: the optimiser's state loaded
        print("DYNAMO", "torch._dynamo" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "WANDB_MODE": "disabled"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "DYNAMO False" in out.stdout, out.stdout[-2000:]


def ended(tmp_path, body: str) -> subprocess.CompletedProcess:
    head = textwrap.dedent(f"""\
        import atexit, os, sys, threading, time
        from lstsd.errors import ends_without_teardown
        atexit.register(lambda: open({str(tmp_path / 'atexit')!r}, "w").write("ran"))
        class Late:
            def __del__(self):  # runs in the interpreter's own teardown
                os.write(2, b"teardown\\n")
        keep = Late()
        def main():
    """)
    script = head + textwrap.indent(textwrap.dedent(body).strip(), "    ") + "\nends_without_teardown(main)()\n"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("body,code,stderr", [
    ("sys.stdout.write('partial line')", 0, ""),
    ("sys.stdout.write('partial line'); sys.exit(3)", 3, ""),
    ("sys.stdout.write('partial line'); sys.exit('a message')", 1, "a message\n"),
])
def test_a_command_ends_without_teardown_but_with_its_handlers_output_and_status(tmp_path, body, code, stderr):
    out = ended(tmp_path, body)
    assert (out.returncode, out.stdout, out.stderr) == (code, "partial line", stderr)  # no "teardown" line
    assert (tmp_path / "atexit").read_text() == "ran"


def test_a_thread_still_running_or_an_error_ends_the_usual_way(tmp_path):
    out = ended(tmp_path, """
        threading.Thread(target=lambda: (time.sleep(0.3), print("thread done"))).start()
        print("main done")
    """)
    assert out.returncode == 0 and out.stdout.splitlines() == ["main done", "thread done"]
    assert out.stderr == "teardown\n"
    out = ended(tmp_path, "raise KeyError('boom')")
    assert out.returncode == 1 and "KeyError: 'boom'" in out.stderr  # the traceback, as Python prints it
    assert out.stderr.endswith("teardown\n")
    assert (tmp_path / "atexit").read_text() == "ran"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_a_cpu_run_keeps_freed_memory_for_reuse():
    script = textwrap.dedent("""
        import ctypes
        from lstsd.machine import keep_freed_memory
        class Info(ctypes.Structure):  # glibc's struct mallinfo2
            _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]
        libc = ctypes.CDLL(None)
        libc.mallinfo2.restype = Info
        def mappings_of_a_block():
            before = libc.mallinfo2().hblks
            block = ctypes.create_string_buffer(4 << 20)  # a 4 MiB block, as a batch's activation
            return libc.mallinfo2().hblks - before
        print(mappings_of_a_block(), keep_freed_memory(), keep_freed_memory(), mappings_of_a_block())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["1", "True", "True", "0"]  # mapped afresh before; from the heap after
    assert keep_freed_memory() is True  # in this process too (glibc)
