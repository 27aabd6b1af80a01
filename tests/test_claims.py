"""The statistics of claims: family-wise adjustment, the exact permutation test, the seeds for 80 % power, declared
comparisons, --compare and its bad inputs, a selected grid cell; every number computed by hand or with scipy's
noncentral t on its own."""
import csv
import io
import json
import math

import pytest
from omegaconf import OmegaConf

from lstsd.report import main
from lstsd.report.stats import benjamini_hochberg, holm, paired, power, seeds_for_power, sign_flip_p


def test_holm_and_benjamini_hochberg_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04: Holm x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    # BH: p m / i = 0.02, 0.02, 0.04, 0.04, then the running min from the largest down
    assert benjamini_hochberg([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.02, 0.04, 0.04, 0.02])
    assert holm([0.4, 0.9]) == pytest.approx([0.8, 0.9])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1
    # a comparison without a t-test counts in the family (m = 2) and keeps no adjusted value
    assert holm([0.01, None]) == [pytest.approx(0.02), None]
    assert benjamini_hochberg([0.01, None]) == [pytest.approx(0.02), None]


def test_exact_sign_flip_p_by_hand():
    assert sign_flip_p([0.4, 1.0, 2.5, 0.1, 3.0]) == 0.0625  # all positive at n = 5: 2 of 32 flips, the floor
    # magnitudes 1..5 (sum 15 when all positive, here 5): |15 - 2 sum(A)| >= 5 for the flipped subsets A whose sum
    # is <= 5 (the empty set, {1}, {2}, {3}, {1,2}, {4}, {1,3}, {5}, {1,4}, {2,3}: 10) or >= 10 (their
    # complements: 10): 20 of 32
    assert sign_flip_p([1, 2, 3, 4, -5]) == 0.625
    assert sign_flip_p([0.0, 0.0, 0.0]) == 1.0
    many = [0.5 + 0.1 * i for i in range(25)]  # above 20 seeds: a seeded Monte Carlo, (1 + hits) / (1 + rounds)
    assert sign_flip_p(many) == sign_flip_p(many) == pytest.approx(1 / 100_001)


def test_seeds_for_80_percent_power_against_the_noncentral_t():
    from scipy import stats

    def exact_power(n, d):  # scipy's noncentral t, written out here on its own
        crit = stats.t.ppf(0.975, n - 1)
        return stats.nct.sf(crit, n - 1, d * math.sqrt(n)) + stats.nct.cdf(-crit, n - 1, d * math.sqrt(n))

    for mean, sd, expected in ((1.0, 1.0, 10), (0.5, 1.0, 34), (1.4, 1.1, 7)):
        n = seeds_for_power(mean, sd)
        assert n == expected
        assert exact_power(n, mean / sd) >= 0.8 > exact_power(n - 1, mean / sd)
        assert power(n, mean / sd) == pytest.approx(exact_power(n, mean / sd))
    assert seeds_for_power(-1.0, 1.0) == 10  # the sign does not matter
    assert seeds_for_power(0.0, 1.0) == math.inf
    assert seeds_for_power(1.0, 0.0) is None


def test_differences_that_do_not_vary_have_no_t_test():
    d = paired({0: 2.0, 1: 3.0, 2: 4.0}, {0: 1.0, 1: 2.0, 2: 3.0})  # every seed +1
    assert d["n"] == 3
    assert d["mean"] == 1.0
    assert d["sd"] == 0.0
    assert d["p"] is None
    assert d["n_power80"] is None  # no spread: no t statistic, nothing to plan
    assert d["p_exact"] == 0.25  # the exact test still stands: 2 of 8 flips


# ------------------------------------------------------------------------------------------- reports of runs
def fake(d, method, seed, final, experiment="demo", report=None, val=None, overrides=()):
    d.mkdir(parents=True)
    (d / ".hydra").mkdir()
    config = {"name": experiment, "seed": seed, "dataset": {"name": "mnist1d"}, "model": {"name": "mnist1d_cnn"},
              "schedule": {"name": "constant"}, "method": {"name": method, "label": method, "minigen_epochs": 6}}
    if report is not None:
        config["report"] = report
    OmegaConf.save(config, d / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create([f"method={method}", *overrides, f"seed={seed}"]), d / ".hydra" / "overrides.yaml")
    results = {"status": "completed", "experiment": experiment, "dataset": "mnist1d", "model": "mnist1d_cnn",
               "method": method, "method_name": method, "seed": seed, "test_acc_final": final,
               "test_acc_best": final + 0.5}
    if val is not None:
        results["val_acc_final"] = val
    (d / "results.json").write_text(json.dumps(results))
    (d / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "test_acc": final - 3 + e}) + "\n"
                                             for e in (1, 2, 3, 4)))


VANILLA = [90.0, 91.0, 92.0, 90.5, 91.5]
LSTSD = [91.0, 93.0, 92.5, 92.0, 92.5]  # differences 1, 2, 0.5, 1.5, 1
MT = [91.5, 91.0, 93.0, 91.0, 92.0]  # differences 1.5, 0, 1, 0.5, 0.5; lstsd - mt: -0.5, 2, -0.5, 1, 0.5


def sweep(tmp_path, report):
    for seed in range(5):
        for method, scores in (("vanilla", VANILLA), ("lstsd", LSTSD), ("mean_teacher", MT)):
            fake(tmp_path / f"method={method},seed={seed}", method, seed, scores[seed], report=report)


def test_declared_comparisons_are_one_family(tmp_path, capsys):
    sweep(tmp_path, {"compare": ["lstsd:vanilla", "lstsd:mean_teacher"], "note": "exploratory: 5 seeds"})
    main([str(tmp_path), "--out", str(tmp_path / "out")])
    text = capsys.readouterr().out
    assert text.startswith("(demo: exploratory: 5 seeds)")
    assert "Comparisons: declared comparisons of demo (a family of 2, Holm-adjusted;" in text
    rows = {r["a"] + ":" + r["b"]: r for r in csv.DictReader(io.StringIO((tmp_path / "out" / "comparisons.csv")
                                                                          .read_text()))}
    assert set(rows) == {"lstsd:vanilla", "lstsd:mean_teacher"}  # exactly the declared ones, no mean_teacher:vanilla
    from scipy import stats

    p1 = stats.ttest_rel(LSTSD, VANILLA).pvalue
    p2 = stats.ttest_rel(LSTSD, MT).pvalue
    low, high = sorted((p1, p2))
    holm1, holm2 = min(1, 2 * low), max(min(1, 2 * low), high)
    assert float(rows["lstsd:vanilla"]["p"]) == pytest.approx(p1)
    assert float(rows["lstsd:vanilla"]["p_holm"]) == pytest.approx(holm1 if p1 < p2 else holm2)
    assert float(rows["lstsd:vanilla"]["p_exact"]) == 0.0625  # all five differences positive
    assert float(rows["lstsd:mean_teacher"]["mean"]) == pytest.approx(0.5)
    # the row of lstsd carries its declared comparison with vanilla; mean_teacher's has none (not declared)
    table = {r["method"]: r for r in csv.DictReader(io.StringIO((tmp_path / "out" / "report.csv").read_text()))}
    assert float(table["lstsd"]["p"]) == pytest.approx(p1)
    assert table["mean_teacher"]["p"] == ""
    assert float(table["lstsd"]["n_for_power80"]) == seeds_for_power(1.2, 0.570087712549569)
    assert float(table["mean_teacher"]["vs_vanilla_final_mean"]) == pytest.approx(0.7)  # a point estimate
    for stem in ("forest_demo", "curves_mnist1d_mnist1d_cnn"):
        assert (tmp_path / "out" / f"{stem}.png").read_bytes()[:4] == b"\x89PNG"
        assert (tmp_path / "out" / f"{stem}.pdf").read_bytes()[:4] == b"%PDF"


def test_undeclared_is_exploratory_and_compare_adds_a_family(tmp_path, capsys):
    sweep(tmp_path, None)  # runs from before report.compare existed: nothing declared
    main([str(tmp_path), "--compare", "lstsd:mean_teacher", "--adjust", "bh"])
    text = capsys.readouterr().out
    assert "every method against vanilla in demo, not declared before the runs (exploratory)" in text
    assert "Comparisons: --compare in demo (a family of 1, Benjamini-Hochberg q;" in text
    assert "| lstsd - mean_teacher | 5 | +0.50 [" in text
    assert "| q BH |" in text


def test_no_tests_when_the_experiment_declares_none(tmp_path, capsys):
    sweep(tmp_path, {"compare": []})
    main([str(tmp_path)])
    text = capsys.readouterr().out
    assert "Comparisons:" not in text
    assert "| p |" not in text.splitlines()[0]
    assert "Δ final vs vanilla [95% CI]" in text.splitlines()[0]  # the differences stay, as estimates


@pytest.mark.parametrize("args, message", [
    (["--compare", "lstsd:nope"], "--compare lstsd:nope is invalid: no runs of a method labelled nope in "
                                  "demo/mnist1d/mnist1d_cnn (allowed: lstsd, mean_teacher, vanilla)"),
    (["--compare", "lstsd:lstsd"], "argument --compare: 'lstsd:lstsd' is invalid: allowed A:B"),
    (["--compare", "lstsd"], "argument --compare: 'lstsd' is invalid: allowed A:B"),
    (["--adjust", "bonferroni"], "argument --adjust: invalid choice: 'bonferroni'"),
])
def test_bad_comparisons_are_one_line(tmp_path, capsys, args, message):
    sweep(tmp_path, None)
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), *args])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert message in err
    assert "Traceback" not in err


def test_compare_needs_two_shared_seeds(tmp_path, capsys):
    fake(tmp_path / "a", "lstsd", 0, 91.0)
    fake(tmp_path / "b", "lstsd", 1, 92.0)
    fake(tmp_path / "c", "vanilla", 1, 90.0)
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "--compare", "lstsd:vanilla"])
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert "the two share 1 seed(s) in demo/mnist1d/mnist1d_cnn (allowed: two or more)" in err


def test_a_declared_comparison_of_a_method_the_sweep_does_not_run_is_refused(refused):
    line = refused("-m", "method=vanilla,lstsd", "seed=0", "report.compare=[lstsd:nope]", "trainer.epochs=1")
    assert line == ("lstsd: error: report.compare=lstsd:nope is invalid: the sweep runs no method labelled nope "
                    "(allowed labels: lstsd, vanilla)")


def test_a_grid_cell_selected_on_validation_is_written_for_confirmation(tmp_path, capsys):
    cells = {(4.0, 2.4): [80.0, 81.0], (5.0, 1.2): [82.0, 83.0], (1.0, 0.6): [79.0, 79.5]}
    for (short, long), vals in cells.items():
        for seed, val in enumerate(vals):
            fake(tmp_path / f"s{short}l{long}seed{seed}", "lstsd", seed, 90.0 + val / 10, experiment="grid",
                 report={"compare": [], "select": "val"}, val=val,
                 overrides=(f"method.lambda_short={short}", f"method.lambda_long={long}"))
    main([str(tmp_path), "--out", str(tmp_path / "out")])
    text = capsys.readouterr().out
    assert "method.lambda_long=1.2 method.lambda_short=5.0 (selected)" in text
    assert "the highest mean validation score of 3 variants" in text
    assert "| p |" not in text.splitlines()[0]
    assert (tmp_path / "out" / "grid_mnist1d_mnist1d_cnn_lstsd.png").read_bytes()[:4] == b"\x89PNG"  # the heatmap
    written = OmegaConf.load(tmp_path / "out" / "conf" / "method" / "lstsd_selected.yaml")
    assert OmegaConf.to_container(written) == {"defaults": ["lstsd", "_self_"], "label": "lstsd_selected",
                                               "lambda_long": 1.2, "lambda_short": 5.0}
