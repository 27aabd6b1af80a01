"""lstsd-report on generated run folders: groups, mean ± std, published numbers beside each cell, failed,
running and missing runs, Markdown, CSV and plots, checked cell by cell."""
import csv
import io
import json
import shutil

import pytest
from omegaconf import OmegaConf

from conftest import run_cli
from lstsd.report import collect, main, report, summarize


def fake_run(d, status="completed", overrides=(), **fields):
    """A run folder as the trainer leaves it (results.json, metrics.jsonl, .hydra/config.yaml, overrides.yaml)."""
    d.mkdir(parents=True)
    base = {"experiment": "lstsd_table1", "dataset": "cifar100", "model": "resnet20", "method": "lstsd",
            "method_name": "lstsd", "seed": 0, "minigen_epochs": 6}
    base |= fields
    (d / ".hydra").mkdir()
    OmegaConf.save({"name": base["experiment"], "seed": base["seed"], "dataset": {"name": base["dataset"]},
                    "model": {"name": base["model"]},
                    "method": {"name": base["method_name"], "label": base["method"],
                               "minigen_epochs": base.pop("minigen_epochs")}}, d / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create([*overrides, f"seed={base['seed']}"]), d / ".hydra" / "overrides.yaml")
    if status != "running":
        (d / "results.json").write_text(json.dumps(base | {"status": status}))
    acc = base.get("test_acc_final", 50.0)
    (d / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "test_acc": acc - 3 + e}) + "\n"
                                             for e in (1, 2, 3)))


def test_table_cells_with_published_numbers_and_statuses(tmp_path):
    for seed, (final, best) in enumerate([(69.0, 70.0), (70.0, 71.0), (71.0, 71.5)]):
        fake_run(tmp_path / f"lstsd{seed}", seed=seed, test_acc_final=final, test_acc_best=best)
    fake_run(tmp_path / "lstsd_failed", status="failed", seed=3)
    fake_run(tmp_path / "lstsd_running", status="running", seed=4)
    fake_run(tmp_path / "sd0", experiment="sd_table3", method="sd", method_name="sd", test_acc_final=67.0,
             test_acc_best=68.0, ensemble_test_acc_final=69.0)
    runs, missing = collect([tmp_path])
    assert len(runs) == 6 and missing == []
    table = {(r["experiment"], r["method"]): r for r in summarize(runs)}
    lstsd = table[("lstsd_table1", "lstsd")]
    assert lstsd["n"] == 3 and lstsd["final"] == "70.00 ± 1.00" and lstsd["best"] == "70.83 ± 0.76"
    assert lstsd["paper final"] == "69.42"  # LSTSD Table 1, ResNet-20
    assert lstsd["not completed"] == "1 failed, 1 running"
    sd = table[("sd_table3", "sd")]
    # SD Table 3 publishes errors: ResNet-20, T = 2: 32.31 final and best, 32.08 ensemble
    assert (sd["paper final"], sd["paper best"], sd["paper ensemble"]) == ("67.69", "67.69", "67.92")
    assert sd["ensemble"] == "69.00 ± 0.00" and sd["not completed"] == "-"


def test_markdown_csv_and_plots(tmp_path, capsys):
    for length in (2, 6):
        for seed in (0, 1):
            fake_run(tmp_path / "runs" / f"l{length}s{seed}", experiment="lstsd_fig2", minigen_epochs=length,
                     seed=seed, test_acc_final=60.0 + length + seed, test_acc_best=61.0 + length)
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    text = capsys.readouterr().out
    assert "| lstsd_fig2 | cifar100 | resnet20 | lstsd | 4 | acc | 64.50 ± 2.38 | 65.00 ± 2.31 |" in text
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "report.csv").read_text())))
    assert rows[0]["final"] == "64.50 ± 2.38" and rows[0]["metric"] == "acc" and rows[0]["n"] == "4"
    assert (tmp_path / "out" / "report.md").read_text().strip() == text.strip()
    for png in ("fig2_minigen_length.png", "curves_cifar100_resnet20.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"


def test_missing_jobs_of_a_sweep(tmp_path):
    r = run_cli("-m", "method=vanilla,lstsd", "seed=range(0,2)", "trainer.epochs=1", f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    shutil.rmtree(tmp_path / "method=lstsd,seed=1,trainer.epochs=1")  # never started
    (tmp_path / "method=vanilla,seed=1,trainer.epochs=1" / "results.json").unlink()  # still running
    text = report([tmp_path])
    assert f"- {tmp_path / 'method=lstsd,seed=1,trainer.epochs=1'}" in text and "Missing (1 jobs" in text
    lines = text.splitlines()
    assert lines[2].split(" | ")[3] == "vanilla" and lines[3].split(" | ")[3] == "lstsd"  # the sweep's order
    row = next(line for line in lines if "| vanilla |" in line)
    assert "| 1 |" in row and row.endswith("| 1 running |")


def test_grid_cells_are_variants_with_validation_accuracy(tmp_path):
    """A lambda grid: one row per (lambda_short, lambda_long) cell, seeds averaged, constant overrides not shown."""
    for ls, ll, seed in [(1.0, 0.6, 0), (1.0, 0.6, 1), (4.0, 0.6, 0), (4.0, 2.4, 0)]:
        fake_run(tmp_path / f"{ls}_{ll}_{seed}", experiment="lstsd_grid", seed=seed,
                 overrides=["trainer.epochs=3", f"method.lambda_short={ls}", f"method.lambda_long={ll}"],
                 test_acc_final=60.0 + ls + ll + seed, test_acc_best=70.0, val_acc_final=50.0 + ls + seed)
    text = report([tmp_path])
    assert text.splitlines()[0] == ("| experiment | dataset | model | method | variant | n | metric | final | best "
                                    "| val |")  # every run completed: no "not completed" column
    assert ("| lstsd_grid | cifar100 | resnet20 | lstsd | method.lambda_long=0.6 method.lambda_short=1.0 | 2 "
            "| acc | 62.10 ± 0.71 | 70.00 ± 0.00 | 51.50 ± 0.71 |") in text
    assert "| method.lambda_long=2.4 method.lambda_short=4.0 | 1 | acc | 66.40 ± 0.00 |" in text
    assert len(text.splitlines()) == 2 + 3 and "trainer.epochs" not in text


def test_every_published_cell_is_a_cell_its_experiment_runs():
    """The reference index names (experiment, dataset, model, method label) exactly as the experiment's sweep
    produces them, so no published number is silently never shown (LSTSD Table 2: its recipes choose the model)."""
    from conftest import compose_cfg
    from lstsd.report.reference import index

    keys = list(index())
    assert len(keys) >= 130 + 48
    for experiment in sorted({k[0] for k in keys}):
        cfg = compose_cfg(f"experiment={experiment}", return_hydra_config=True)
        axes = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
        labels = {compose_cfg(f"experiment={experiment}", f"method={m}").method.label for m in axes["method"]}
        models = axes.get("model", [cfg.model.name])
        if "+recipe" in axes:
            models = [compose_cfg(f"experiment={experiment}", f"+recipe={r}").model.name for r in axes["+recipe"]]
        for _, dataset, model, method in (k for k in keys if k[0] == experiment):
            assert dataset in axes.get("dataset", [cfg.dataset.name]), (experiment, dataset)
            assert model in models, (experiment, model)
            assert method in labels, (experiment, method)
