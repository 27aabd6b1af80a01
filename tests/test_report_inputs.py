"""lstsd-report on bad input: each case ends in one line on stderr, ``lstsd-report: error: <the file or option and
what is allowed>``, exit code 2, no traceback; a run whose files cannot be read is listed and left out. Sweep
folders are written by hand (tests/test_report.py's ``fake_run``): nothing is trained."""
import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from lstsd.report import main
from lstsd.report.cli import PrintReport
from test_report import fake_run


def sweep(root, seeds=(0, 1, 2)):
    """vanilla and lstsd on ``seeds``, one experiment: the smallest sweep with a paired comparison."""
    for seed in seeds:
        fake_run(root / f"v{seed}", experiment="demo", method="vanilla", method_name="vanilla", seed=seed,
                 test_acc_final=90.0 + seed, test_acc_best=91.0 + seed)
        fake_run(root / f"l{seed}", experiment="demo", seed=seed, test_acc_final=91.0 + 1.5 * seed,
                 test_acc_best=92.0 + seed)
    return root


def refused(capsys, *argv) -> str:
    """The one line lstsd-report refuses ``argv`` with (exit 2, nothing on stdout, no traceback)."""
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert e.value.code == 2, err
    assert out == ""
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert err.startswith("lstsd-report: error: ")
    assert "Traceback" not in err
    return err.removeprefix("lstsd-report: error: ").rstrip("\n")


def edit_results(run_dir, **fields_as_json):
    """Set fields of a run's results.json to raw JSON text (NaN, null, "abc": what a hand or a bug writes)."""
    path = run_dir / "results.json"
    record = json.loads(path.read_text())
    for key in fields_as_json:
        record[key] = f"@{key}@"
    text = json.dumps(record)
    for key, raw in fields_as_json.items():
        text = text.replace(f'"@{key}@"', raw)
    path.write_text(text)


# --------------------------------------------------------------------------------------- 1. a corrupt multirun.yaml
RECORD = ("allowed the multirun.yaml Hydra writes into a sweep folder (a mapping with hydra.sweep, hydra.sweeper, "
          "hydra.overrides and hydra.job)")


@pytest.mark.parametrize("content, what", [
    (b"hydra: [1, 2\n  sweep: }", "not a readable YAML file (ParserError: "),
    (b"- 1\n- 2\n", "holds a list, not a mapping: "),
    (bytes(range(256)), "not a readable YAML file (UnicodeDecodeError: "),
    (b"", "no hydra.sweep.subdir: "),
    (b"hydra:\n  job: 1\n", "no hydra.sweep.subdir: "),
], ids=["invalid-yaml", "a-list", "binary", "empty", "no-sweep-keys"])
def test_a_corrupt_multirun_yaml_is_one_line_naming_it(tmp_path, capsys, content, what):
    sweep(tmp_path)
    (tmp_path / "multirun.yaml").write_bytes(content)
    line = refused(capsys, tmp_path)
    assert line.startswith(f"{tmp_path / 'multirun.yaml'}: {what}")
    assert line.endswith(RECORD)


def test_a_multirun_yaml_whose_sweep_hydra_cannot_parse_and_a_corrupt_jobs_yaml(tmp_path, capsys):
    sweep(tmp_path)
    record = {"hydra": {"sweep": {"dir": str(tmp_path), "subdir": "${hydra.job.override_dirname}"},
                        "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                                    "params": {"seed": "range(0,"}},
                        "overrides": {"task": []},
                        "job": {"config": {"override_dirname": {"kv_sep": "=", "item_sep": ",", "exclude_keys": []}}}}}
    (tmp_path / "multirun.yaml").write_text(json.dumps(record))  # JSON is YAML
    line = refused(capsys, tmp_path)
    assert line.startswith(f"{tmp_path / 'multirun.yaml'}: a sweep Hydra cannot parse (OverrideParseException: ")
    (tmp_path / "jobs.yaml").write_text("a: 1\n")  # the lstsd sweeper's list of jobs, as a mapping
    assert refused(capsys, tmp_path) == (f"{tmp_path / 'jobs.yaml'}: holds a dict, not a list: allowed the list of "
                                         "jobs (lists of key=value overrides) the lstsd sweeper writes")
    (tmp_path / "jobs.yaml").write_text("- [seed=0]\n- [seed=1]\n- [seed=2]\n- [seed=3]\n")
    main([str(tmp_path)])  # readable: its four jobs, none of whose folders (named v0, l0, ...) is here
    out = capsys.readouterr().out
    assert "Missing (4 jobs of the sweep never started):" in out
    assert f"- {tmp_path / 'seed=3'}" in out


# ------------------------------------------------------------------------------------- 2. scores that are no numbers
SCORE = "allowed a finite number (a completed run's score; rerun the run, or move its folder away to leave it out)"


@pytest.mark.parametrize("raw", ["NaN", "Infinity", '"abc"', "null", "true", "[91.0]"])
def test_a_completed_runs_score_that_is_not_a_finite_number_is_refused_naming_file_and_key(tmp_path, capsys, raw):
    """Leaving the run out of its row's mean would be a silent selection (a method whose runs went wrong would
    look better), so the report stops and names the record."""
    sweep(tmp_path)
    edit_results(tmp_path / "l1", test_acc_final=raw)
    line = refused(capsys, tmp_path, "--compare", "lstsd:vanilla")
    assert line == f"{tmp_path / 'l1' / 'results.json'}: test_acc_final={raw} is invalid: {SCORE}"


@pytest.mark.parametrize("key", ["test_acc_best", "val_acc_final", "ensemble_test_acc_final", "test_f1_final"])
def test_every_score_the_tables_read_is_checked(tmp_path, capsys, key):
    sweep(tmp_path)
    edit_results(tmp_path / "v2", **{key: "NaN"})
    assert refused(capsys, tmp_path) == f"{tmp_path / 'v2' / 'results.json'}: {key}=NaN is invalid: {SCORE}"


def test_a_non_finite_curve_point_of_a_completed_run_is_refused_naming_the_line(tmp_path, capsys):
    sweep(tmp_path)
    (tmp_path / "l0" / "metrics.jsonl").write_text('{"epoch": 1, "test_acc": 50.0}\n{"epoch": 2, "test_acc": NaN}\n')
    assert refused(capsys, tmp_path) == (f"{tmp_path / 'l0' / 'metrics.jsonl'}:2: test_acc=NaN is invalid: allowed a "
                                         "finite number (the test score of each epoch of a completed run)")
    (tmp_path / "l0" / "metrics.jsonl").write_text('{"epoch": 1}\n')
    assert refused(capsys, tmp_path).startswith(f"{tmp_path / 'l0' / 'metrics.jsonl'}:1: test_acc=(missing) is "
                                                "invalid")


def test_a_failed_runs_scores_are_never_read(tmp_path, capsys):
    """A failed run counts as failed beside its row; its NaN (or null) scores enter no mean and no test."""
    from lstsd.report import collect, summarize

    sweep(tmp_path)
    edit_results(tmp_path / "l2", status='"failed"', test_acc_final="NaN", test_acc_best="null")
    row = next(r for r in summarize(collect([tmp_path])[0]) if r["method"] == "lstsd")
    assert (row["n"], row["failed"], row["final_mean"], row["vs_vanilla_final_n"]) == (2, 1, 91.75, 2)
    main([str(tmp_path)])
    assert "| lstsd | 2 | acc | 91.75 ± 1.06 |" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------------ 3. --out
def test_out_naming_a_file_or_a_path_below_one(tmp_path, capsys):
    sweep(tmp_path / "runs")
    (tmp_path / "report.txt").write_text("not a folder")
    assert refused(capsys, tmp_path / "runs", "--out", tmp_path / "report.txt") == \
        f"--out {tmp_path / 'report.txt'} is invalid: it is a file: allowed a folder (made if absent)"
    assert refused(capsys, tmp_path / "runs", "--out", tmp_path / "report.txt" / "sub") == \
        f"--out {tmp_path / 'report.txt' / 'sub'} is invalid: {tmp_path / 'report.txt'} is a file: allowed a folder " \
        "(made if absent)"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc, where no folder can be made")
def test_out_where_no_folder_can_be_made(tmp_path, capsys):
    sweep(tmp_path)
    assert refused(capsys, tmp_path, "--out", "/proc/lstsd-report-test") == (
        "--out /proc/lstsd-report-test is invalid: cannot write /proc/lstsd-report-test (FileNotFoundError: No such "
        "file or directory): allowed a folder that can be made and written")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_out_in_a_read_only_folder(tmp_path, capsys):
    sweep(tmp_path / "runs")
    (tmp_path / "ro").mkdir(mode=0o500)
    try:
        assert refused(capsys, tmp_path / "runs", "--out", tmp_path / "ro" / "out") == (
            f"--out {tmp_path / 'ro' / 'out'} is invalid: {tmp_path / 'ro'} is not writable: allowed a folder that "
            "can be made and written")
    finally:
        (tmp_path / "ro").chmod(0o700)


def test_the_console_script_prints_one_line_and_no_usage(tmp_path):
    sweep(tmp_path)
    (tmp_path / "f").write_text("")
    for args, line in ((["--out", str(tmp_path / "f")], f"--out {tmp_path / 'f'} is invalid: it is a file: allowed a "
                                                        "folder (made if absent)"),
                       (["--adjust", "bad"], "argument --adjust: invalid choice: 'bad' (choose from 'holm', 'bh', "
                                             "'none')")):
        r = subprocess.run([sys.executable, "-c", "from lstsd.report import main; main()", str(tmp_path), *args],
                           capture_output=True, text=True, timeout=120)
        assert (r.returncode, r.stdout, r.stderr) == (2, "", f"lstsd-report: error: {line}\n")


# --------------------------------------------------------------------------------- 4. the other options and paths
def test_options_that_name_no_method_of_the_runs(tmp_path, capsys):
    sweep(tmp_path)
    allowed = "(allowed: lstsd, vanilla)"
    assert refused(capsys, tmp_path, "--baseline", "vanila") == \
        f"--baseline vanila is invalid: no runs of a method labelled vanila {allowed}"
    assert refused(capsys, tmp_path, "--better-of", "best=lstsd,sd") == \
        f"--better-of best=lstsd,sd is invalid: no runs of a method labelled sd {allowed}"
    assert refused(capsys, tmp_path, "--compare", "sd:vanilla") == \
        f"--compare sd:vanilla is invalid: no runs of a method labelled sd in demo/cifar100/resnet20 {allowed}"


@pytest.mark.parametrize("args, line", [
    (["--compare", "lstsd:lstsd"], "argument --compare: 'lstsd:lstsd' is invalid: allowed A:B (two different method "
                                   "labels)"),
    (["--compare", "lstsd"], "argument --compare: 'lstsd' is invalid: allowed A:B (two different method labels)"),
    (["--adjust", "bad"], "argument --adjust: invalid choice: 'bad' (choose from 'holm', 'bh', 'none')"),
    (["--select", "best"], "argument --select: invalid choice: 'best' (choose from 'val', 'final')"),
    (["--sort", "name"], "argument --sort: invalid choice: 'name' (choose from 'launch', 'final')"),
    (["--better-of", "sd,sd_t3"], "argument --better-of: 'sd,sd_t3' is invalid: allowed NAME=A,B (a row name and "
                                  "two or more method labels)"),
    (["--nope"], "unrecognized arguments: --nope"),
])
def test_a_bad_option_is_one_line_without_the_usage_block(tmp_path, capsys, args, line):
    sweep(tmp_path)
    assert refused(capsys, tmp_path, *args) == line


def test_paths_with_no_runs(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other" / "a").mkdir(parents=True)
    (tmp_path / "other" / "a" / "notes.txt").write_text("x")
    for folder in (tmp_path / "empty", tmp_path / "other"):
        assert refused(capsys, folder) == (f"{folder}: no runs below it (no results.json, .hydra/config.yaml or "
                                           "multirun.yaml): allowed a run or sweep folder, or a folder above them")
    sweep(tmp_path / "runs")
    assert refused(capsys, tmp_path / "runs" / "v0" / "metrics.jsonl") == (
        f"{tmp_path / 'runs' / 'v0' / 'metrics.jsonl'}: not a folder: allowed a run or sweep folder, or a run's "
        "results.json")
    assert refused(capsys, tmp_path / "runs", tmp_path / "empty").startswith(f"{tmp_path / 'empty'}: no runs")
    main([str(tmp_path / "runs" / "v0" / "results.json")])  # a run's results.json: its folder
    assert "| vanilla | 1 |" in capsys.readouterr().out


@pytest.mark.parametrize("report, line", [
    ("report: {adjust: bogus}", "report.adjust='bogus' is invalid: allowed one of holm, bh, none"),
    ("report: {compare: 'lstsd:vanilla'}", "report.compare='lstsd:vanilla' is invalid: allowed null or a list of A:B "
                                           "(method labels)"),
    ("report: {compare: [lstsd]}", "report.compare='lstsd' is invalid: allowed a list of A:B (two different method "
                                   "labels)"),
    ("report: {better_of: 5}", "report.better_of=5 is invalid: allowed a mapping of row names to method labels"),
    ("report: {baseline: '${nope}'}", "report.baseline cannot be read (InterpolationKeyError: Interpolation key "
                                      "'nope' not found)"),
    ("report: 5", "report=5 is invalid: allowed a mapping of the report keys (compare, baseline, adjust, select, sort, "
                  "note, out, better_of)"),
])
def test_saved_report_keys_a_launch_would_refuse(tmp_path, capsys, report, line):
    sweep(tmp_path)
    for run in tmp_path.iterdir():
        config = run / ".hydra" / "config.yaml"
        config.write_text(config.read_text() + report + "\n")
    assert refused(capsys, tmp_path) == f"{tmp_path / 'l0' / '.hydra' / 'config.yaml'}: {line}"


@pytest.mark.parametrize("edit, line", [
    (lambda d: edit_results(d, seed="[1]"), "results.json: seed=[1] is invalid: allowed an integer"),
    (lambda d: edit_results(d, method="null"), "results.json: method=null is invalid: allowed a non-empty string"),
    (lambda d: edit_results(d, headline="3"), "results.json: headline=3 is invalid: allowed a metric's name (acc, f1, "
                                              "mcc, ...)"),
    (lambda d: ((d / "results.json").unlink(), (d / ".hydra" / "config.yaml").write_text("a: 1\n")),
     ".hydra/config.yaml: not a run's saved config (ConfigAttributeError: Missing key method): allowed the "
     "config.yaml lstsd saves, with name, method, model, dataset and seed"),
    (lambda d: (d / ".hydra" / "overrides.yaml").write_text("- 1\n"),
     ".hydra/overrides.yaml: 1 is not an override: allowed a list of key=value strings"),
], ids=["seed", "method", "headline", "running-config", "overrides"])
def test_a_run_that_is_not_a_runs_record_is_listed_and_left_out(tmp_path, capsys, edit, line):
    """Which row such a run belongs to is unknown: it is listed as unreadable, as a truncated results.json is."""
    sweep(tmp_path)
    edit(tmp_path / "l1")
    main([str(tmp_path)])
    out = capsys.readouterr().out
    assert "Unreadable (1 run folders left out):" in out
    assert f"- {tmp_path / 'l1'}/{line}" in out
    assert "| lstsd | 2 |" in out


def test_a_grid_over_a_word_and_a_number_is_plotted(tmp_path, capsys):
    """A grid's heat map once read every axis as numbers (a kl_direction axis ended in a ValueError)."""
    for seed, (direction, weight) in enumerate([("forward", 1), ("forward", 2), ("reverse", 1), ("reverse", 2)]):
        fake_run(tmp_path / "runs" / f"r{seed}", experiment="grid", seed=0, test_acc_final=60.0 + seed,
                 test_acc_best=61.0, overrides=[f"method.kl_direction={direction}", f"method.lambda_short={weight}"])
    main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out" / "grid_cifar100_resnet20_lstsd.png").read_bytes()[:4] == b"\x89PNG"
    assert "method.kl_direction=reverse method.lambda_short=2" in capsys.readouterr().out


def test_the_end_of_a_sweep_prints_the_one_line_instead_of_a_traceback(tmp_path, capsys):
    sweep(tmp_path)
    edit_results(tmp_path / "l0", test_acc_final="NaN")
    PrintReport().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}, "report": {}}))
    err = capsys.readouterr().err
    assert err == f"lstsd-report: error: {tmp_path / 'l0' / 'results.json'}: test_acc_final=NaN is invalid: {SCORE}\n"
