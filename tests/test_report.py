"""lstsd-report on generated run folders: groups, mean ± std, published numbers beside each cell, failed,
running and missing runs, Markdown, CSV and plots, checked cell by cell."""
import csv
import math
import io
import json
import shutil

import pytest
from omegaconf import OmegaConf

from helpers import run_cli
from lstsd.report import collect, main, markdown, report, summarize
from lstsd.report.table import families


def fake_run(d, status="completed", overrides=(), **fields):
    """A run folder as the trainer leaves it (results.json, metrics.jsonl, .hydra/config.yaml, overrides.yaml)."""
    d.mkdir(parents=True)
    base = {"experiment": "lstsd_table1", "dataset": "cifar100", "model": "resnet20", "method": "lstsd",
            "method_name": "lstsd", "seed": 0, "minigen_epochs": 6, "schedule": "step", "temperature": 2.0}
    base |= fields
    (d / ".hydra").mkdir()
    OmegaConf.save({"name": base["experiment"], "seed": base["seed"], "dataset": {"name": base["dataset"]},
                    "model": {"name": base["model"]}, "schedule": {"name": base.pop("schedule")},
                    "method": {"name": base["method_name"], "label": base["method"],
                               "minigen_epochs": base.pop("minigen_epochs"), "temperature": base.pop("temperature")}},
                   d / ".hydra" / "config.yaml")
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
             test_acc_best=68.0, ensemble_test_acc_final=69.0, schedule="cosine")
    runs, missing, _ = collect([tmp_path])
    assert len(runs) == 6
    assert missing == []
    table = {(r["experiment"], r["method"]): r for r in summarize(runs)}
    lstsd = table[("lstsd_table1", "lstsd")]
    assert lstsd["n"] == 3
    assert (lstsd["final_mean"], lstsd["final_std"]) == (70.0, 1.0)
    assert (lstsd["final_min"], lstsd["final_max"]) == (69.0, 71.0)
    assert lstsd["best_mean"] == pytest.approx(70.8333, abs=1e-4)
    assert lstsd["best_std"] == pytest.approx(0.7638, abs=1e-4)
    # LSTSD Table 1, ResNet-20: the paper's own run, statistic not stated, step schedule like these runs
    assert lstsd["paper_unstated"] == 69.42
    assert "paper_final" not in lstsd
    assert (lstsd["failed"], lstsd["running"]) == (1, 1)
    sd = table[("sd_table3", "sd")]
    # SD Table 3 publishes errors: ResNet-20, T = 2: 32.31 final (M#L4) and best, 32.08 ensemble
    assert (sd["paper_final"], sd["paper_best"], sd["paper_ensemble"]) == (67.69, 67.69, 67.92)
    assert sd["ensemble_mean"] == 69.0
    assert sd["ensemble_std"] is None
    assert sd["failed"] == 0
    text = markdown(summarize(runs))
    assert "| lstsd_table1 | cifar100 | resnet20 | lstsd | 3 | acc | 70.00 ± 1.00 | 70.83 ± 0.76 |" in text
    assert "| sd_table3 | cifar100 | resnet20 | sd | 1 | acc | 67.00 | 68.00 | 69.00 |" in text  # "±" needs two runs
    assert "| 1 failed, 1 running |" in text


def test_markdown_csv_and_plots(tmp_path, capsys):
    for length in (2, 6):
        for seed in (0, 1):
            fake_run(tmp_path / "runs" / f"l{length}s{seed}", experiment="lstsd_fig2", minigen_epochs=length,
                     seed=seed, test_acc_final=60.0 + length + seed, test_acc_best=61.0 + length)
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    text = capsys.readouterr().out
    assert "| lstsd_fig2 | cifar100 | resnet20 | lstsd | 4 | acc | 64.50 ± 2.38 | 65.00 ± 2.31 |" in text
    rows = list(csv.DictReader(io.StringIO((tmp_path / "out" / "report.csv").read_text())))
    assert rows[0]["metric"] == "acc"
    assert rows[0]["n"] == "4"  # numbers, not "mean ± std" strings
    assert float(rows[0]["final_mean"]) == 64.5
    assert float(rows[0]["final_std"]) == pytest.approx(2.3805, abs=1e-4)
    assert (float(rows[0]["final_min"]), float(rows[0]["final_max"])) == (62.0, 67.0)
    assert (tmp_path / "out" / "report.md").read_text().strip() == text.strip()
    for png in ("fig2_minigen_length_cifar100_resnet20.png", "curves_cifar100_resnet20.png"):
        assert (tmp_path / "out" / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # covered in the default suite by its faster neighbours; make test-slow runs it
def test_missing_jobs_of_a_sweep(tmp_path):
    r = run_cli("-m", "method=vanilla,lstsd", "seed=range(0,2)", "trainer.epochs=1", f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    shutil.rmtree(tmp_path / "method=lstsd,seed=1,trainer.epochs=1")  # never started
    (tmp_path / "method=vanilla,seed=1,trainer.epochs=1" / "results.json").unlink()  # still running
    text = report([tmp_path])
    assert f"- {tmp_path / 'method=lstsd,seed=1,trainer.epochs=1'}" in text
    assert "Missing (1 jobs" in text
    lines = text.splitlines()
    assert lines[2].split(" | ")[3] == "vanilla"
    assert lines[3].split(" | ")[3] == "lstsd"  # the sweep's order
    row = next(line for line in lines if "| vanilla |" in line)
    assert "| 1 |" in row
    assert row.endswith("| 1 running |")


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
    assert "| method.lambda_long=2.4 method.lambda_short=4.0 | 1 | acc | 66.40 | 70.00 | 54.00 |" in text
    assert len(text.splitlines()) == 2 + 3
    assert "trainer.epochs" not in text


@pytest.mark.slow  # covered in the default suite by its faster neighbours; make test-slow runs it
def test_every_published_cell_is_a_cell_its_experiment_runs():
    """The reference index names (experiment, dataset, model, method label) exactly as the experiment's sweep
    produces them, so no published number is silently never shown (LSTSD Table 2: its recipes choose the model)."""
    from helpers import compose_cfg
    from lstsd.report.reference import cells

    keys = [(c.experiment, c.dataset, c.model, c.method) for c in cells() if c.experiment != "*"]
    assert len(keys) >= 230
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


def test_paired_statistics_by_hand():
    """Seeds 0-2: vanilla 90, 91, 92 and lstsd 91, 93, 92: differences 1, 2, 0 (mean 1, sd 1, se 1 / sqrt 3),
    t = sqrt 3 with 2 degrees of freedom: two-sided p = 1 - t / sqrt(t^2 + 2), and the 97.5 % t quantile
    (2p - 1) / sqrt(2 p (1 - p)) at p = 0.975 (the closed forms of the t distribution with 2 degrees)."""
    from lstsd.report.stats import describe, paired

    d = paired({0: 91.0, 1: 93.0, 2: 92.0, 7: 50.0}, {0: 90.0, 1: 91.0, 2: 92.0, 9: 10.0})  # seeds 7, 9 unpaired
    t, q = math.sqrt(3), 0.95 / math.sqrt(2 * 0.975 * 0.025)
    assert d["n"] == 3
    assert d["mean"] == pytest.approx(1.0)
    assert d["p"] == pytest.approx(1 - t / math.sqrt(t * t + 2), abs=1e-9)  # 0.2254
    assert (d["ci_low"], d["ci_high"]) == (pytest.approx(1 - q / math.sqrt(3)), pytest.approx(1 + q / math.sqrt(3)))
    assert d["sd"] == pytest.approx(1.0)
    assert d["p_exact"] == 0.5  # flips of (1, 2, 0): |sum| = 3 for 4 of the 8
    assert paired({0: 1.0}, {0: 2.0}) is None  # one shared seed: no test
    assert describe([1.0]) == {"n": 1, "mean": 1.0, "std": None, "min": 1.0, "max": 1.0}


def test_paired_difference_columns_and_sorted_rows(tmp_path):
    for seed, (v, l, m) in enumerate([(90.0, 91.0, 95.0), (91.0, 93.0, 96.0), (92.0, 92.0, 95.5)]):
        fake_run(tmp_path / f"v{seed}", experiment="demo", method="vanilla", method_name="vanilla", seed=seed,
                 test_acc_final=v, test_acc_best=v)
        fake_run(tmp_path / f"l{seed}", experiment="demo", seed=seed, test_acc_final=l, test_acc_best=l)
        fake_run(tmp_path / f"m{seed}", experiment="demo", method="mean_teacher", method_name="mean_teacher",
                 seed=seed, test_acc_final=m, test_acc_best=m)
    table = summarize(collect([tmp_path])[0], sort="final")
    assert [r["method"] for r in table] == ["mean_teacher", "lstsd", "vanilla"]
    fams = families(table, {})  # nothing declared: every row against vanilla, one exploratory family
    lstsd = table[1]
    assert lstsd["vs_vanilla_final_mean"] == pytest.approx(1.0)
    assert lstsd["vs_vanilla_final_n"] == 3
    assert lstsd["p"] == pytest.approx(0.2254033, abs=1e-6)
    assert "vs_vanilla_final_mean" not in table[2]  # the baseline itself
    assert len(fams) == 1
    assert "exploratory" in fams[0]["name"]
    text = markdown(table, families=fams)
    assert "| Δ final vs vanilla [95% CI] | p |" in text.splitlines()[0]
    assert "| lstsd | 3 | acc | 92.00 ± 1.00 | 92.00 ± 1.00 | +1.00 [-1.48, +3.48] | 0.225 |" in text


def test_a_published_cell_is_set_only_beside_runs_of_its_setting(tmp_path):
    """LSTSD Table 1's SD cell for ResNet-20 is SD Table 3's T = 3 best epoch of a cosine run: beside sd_t3 run
    with the cosine schedule; a run of another schedule is not compared, and the cells no run matched are listed."""
    fake_run(tmp_path / "a", method="sd_t3", method_name="sd", schedule="cosine", temperature=3.0,
             test_acc_final=68.0, test_acc_best=68.5)
    fake_run(tmp_path / "b", method="vanilla_cosine", method_name="vanilla", schedule="step", test_acc_final=66.0,
             test_acc_best=66.5)
    table = {r["method"]: r for r in summarize(collect([tmp_path])[0])}
    assert table["sd_t3"]["paper_best"] == 68.24
    assert "paper_final" not in table["sd_t3"]
    assert "paper_best" not in table["vanilla_cosine"]  # the published vanilla trained with a cosine rate
    text = markdown(list(table.values()), verbose=True)
    assert "| paper best |" in text.splitlines()[0]
    assert "paper final" not in text.splitlines()[0]
    assert "5 published numbers of these tables have no run" in markdown(list(table.values()))
    not_run = text.split("no run here has the method or setting of")[1]
    assert "resnet20 vanilla_cosine: 66.43 (best): LSTSD Table 1 = SD Table 3 BL" in not_run
    assert "resnet20 lstsd: 69.42 (unstated)" in not_run


def test_a_better_of_row_picks_the_higher_best_epoch_as_lstsd_table1_picks_sds_temperature(tmp_path):
    for seed in (0, 1):
        fake_run(tmp_path / f"t2_{seed}", method="sd", method_name="sd", schedule="cosine", seed=seed,
                 test_acc_final=67.0, test_acc_best=67.5 + seed)
        fake_run(tmp_path / f"t3_{seed}", method="sd_t3", method_name="sd", schedule="cosine", temperature=3.0,
                 seed=seed, test_acc_final=68.0, test_acc_best=68.5 + seed)
    table = summarize(collect([tmp_path])[0], better_of={"sd (better T)": ["sd", "sd_t3"]})
    better = next(r for r in table if r["method"] == "sd (better T)")
    assert better["variant"] == "= sd_t3"
    assert better["best_mean"] == 69.0
    assert better["n"] == 2
    assert "paper_best" not in better  # the published cell stays beside the row of its own temperature
    assert next(r for r in table if r["method"] == "sd_t3")["paper_best"] == 68.24
    text = markdown(table)
    assert "| sd (better T) | = sd_t3 | 2 | acc | 68.00 ± 0.00 | 69.00 ± 0.71 |" in text


def test_better_of_on_the_command_line_and_its_bad_values(tmp_path, capsys):
    for method, best in (("sd", 67.5), ("sd_t3", 68.5)):
        fake_run(tmp_path / method, method=method, method_name="sd", schedule="cosine", test_acc_best=best)
    main([str(tmp_path), "--better-of", "sd (better T)=sd,sd_t3"])
    assert "| sd (better T) | = sd_t3 |" in capsys.readouterr().out
    for bad in ("sd,sd_t3", "=sd,sd_t3", "best=sd"):
        with pytest.raises(SystemExit) as e:
            main([str(tmp_path), "--better-of", bad])
        err = capsys.readouterr().err
        assert e.value.code == 2
        assert "argument --better-of" in err
        assert "allowed NAME=A,B" in err
        assert "Traceback" not in err
