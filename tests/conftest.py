"""The tests' fixtures (what they share besides fixtures is in tests/helpers.py)."""
import sys

import pytest

from helpers import tiny


@pytest.fixture
def tiny_cfg():
    """``tiny_cfg(*overrides)``: the tiny configuration (:func:`helpers.tiny`)."""
    return tiny


@pytest.fixture
def refused(tmp_path, monkeypatch, capsys):
    """``refused(*args) -> line``: lstsd's main() run in this process on ``args`` (in seconds, so that long lists
    of bad inputs stay cheap) must stop before training: exit code 2, one ``lstsd: error:`` line, no traceback,
    nothing trained. Returns the line."""
    def check(*args: str) -> str:
        from hydra.core.global_hydra import GlobalHydra

        from lstsd import cli

        run = tmp_path / "run"
        monkeypatch.setattr(sys, "argv", ["lstsd", *args, f"hydra.run.dir={run}", "trainer.progress=false"])
        monkeypatch.setenv("WANDB_MODE", "disabled")
        monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # main() sets it; monkeypatch restores it afterwards
        with pytest.raises(SystemExit) as e:
            cli.main()
        GlobalHydra.instance().clear()
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert e.value.code == 2 and len(lines) == 1 and lines[0].startswith("lstsd: error: "), err
        assert "Traceback" not in err and not (run / "metrics.jsonl").exists()
        return lines[0]

    return check


@pytest.fixture
def one_thread():
    """Tiny models: one intra-op thread is the fastest, and spares a shared machine's cores."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
