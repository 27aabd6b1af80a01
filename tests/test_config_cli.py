"""Config composition, validation and the command line (exit codes, one-line errors, multirun)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lstsd.config import validate
from lstsd.errors import EXTRAS, ConfigError
from helpers import CONFIG_DIR, REPO, compose_cfg, run_cli

GROUPS = ["dataset", "model", "method", "schedule", "optim", "trainer", "logger", "experiment"]


@pytest.mark.parametrize("group,option", [(g, p.stem) for g in GROUPS for p in sorted((Path(CONFIG_DIR) / g).glob("*.yaml"))])
def test_every_option_composes_and_validates(group, option):
    hub = ["model.path=bert-base-uncased", "model.download=true"]  # a hub name is only read when a run starts
    needs = {"kd": ["method.teacher_run=runs/teacher"],  # no default teacher
             "target": ["model._target_=torchvision.models.resnet18"],  # no default callable
             # one's own data: no default file or class
             "npz": ["dataset.path=x.npz"], "hf": ["dataset.path=x"], "hf_text": ["dataset.path=x", "model=textcnn"],
             "dataset/torchvision": ["dataset._target_=torchvision.datasets.FakeData"],
             "textcnn": ["dataset=glue_sst2"], "bert": ["dataset=glue_sst2", *hub], "lstsd_table2": hub}
    needs |= {f"glue_{task}": ["model=textcnn"] for task in ("rte", "mrpc", "sst2", "cola")}
    cfg = compose_cfg(f"{group}={option}", *needs.get(f"{group}/{option}", needs.get(option, [])))
    conf = validate(cfg)
    if group == "method":
        assert conf.method.label == option  # results name each method config by its file


def test_the_contract_keys_reach_the_validated_config():
    conf = validate(compose_cfg("seed=3", "trainer.epochs=2", "trainer.device=cpu", "dataset.root=/x",
                                "dataset.batch_size=7", "optim.lr=0.2", "method=lstsd", "method.lambda_long=1",
                                "method.lambda_short=2", "method.minigen_epochs=3", "method.temperature=4"))
    assert (conf.seed, conf.trainer.epochs, conf.dataset.batch_size, conf.optim.lr) == (3, 2, 7, 0.2)
    assert (conf.method.lambda_long, conf.method.minigen_epochs, conf.method.temperature) == (1, 3, 4)


@pytest.mark.parametrize("overrides,message", [
    (["trainer.epochs=0"], "trainer.epochs=0 is invalid: allowed an integer >= 1"),
    (["trainer.checkpoint_every=0"], "trainer.checkpoint_every=0 is invalid: allowed an integer >= 1 (epochs)"),
    (["dataset.batch_size=-4"], "dataset.batch_size=-4 is invalid"),
    (["optim.lr=0"], "optim.lr=0.0 is invalid: allowed a number > 0"),
    (["method=lstsd", "method.minigen_epochs=0"], "method.minigen_epochs=0 is invalid"),
    (["method=lstsd", "method.lambda_short=-1"], "method.lambda_short=-1.0 is invalid"),
    (["method=lstsd", "method.temperature=0"], "method.temperature=0.0 is invalid: allowed a number > 0"),
    (["method=lstsd", "method.kl_direction=sideways"], "method.kl_direction='sideways' is invalid: allowed one of forward, reverse"),
    (["trainer.device=tpu"], "trainer.device='tpu' is invalid"),
    (["method=sd", "trainer.epochs=3"], "method.minigens=4 is invalid: allowed an integer in [1, trainer.epochs=3]"),
    (["method=snapshot_ensembles", "method.minigen_lengths=[10,10]"],
     "method.minigen_lengths=[10, 10] is invalid: allowed lengths summing to trainer.epochs=200"),
    (["method=sd", "method.minigen_lengths=[30,0]"], "method.minigen_lengths=[30, 0] is invalid"),
    (["method=sd", "method.lambda_teacher=-1"], "method.lambda_teacher=-1.0 is invalid: allowed a number >= 0"),
    (["method=sd", "method.lambda_ce=-0.5"], "method.lambda_ce=-0.5 is invalid"),
    (["method=mean_teacher", "method.decay=1.0"], "method.decay=1.0 is invalid: allowed a number in (0, 1)"),
    (["method=mean_teacher", "method.decay=0"], "method.decay=0.0 is invalid: allowed a number in (0, 1)"),
    (["method=mean_teacher", "method.weight=-2"], "method.weight=-2.0 is invalid: allowed a number >= 0"),
    (["method=mean_teacher", "method.loss=l1"], "method.loss='l1' is invalid: allowed one of kl, mse"),
    (["method=temporal_ensembling", "method.alpha=1.5"], "method.alpha=1.5 is invalid: allowed a number in (0, 1)"),
    (["method=temporal_ensembling", "method.rampup_epochs=-1"], "method.rampup_epochs=-1 is invalid"),
    (["method=lstsd", "method.bank_topk=5"], "method.bank_topk=5 is invalid: allowed 0 unless method.bank_store=probs"),
    (["method=lstsd", "method.bank_topk=-1"], "method.bank_topk=-1 is invalid: allowed an integer >= 0"),
    (["trainer.precision=fp8"], "trainer.precision='fp8' is invalid: allowed one of fp32, bf16, fp16"),
    (["optim.foreach=true", "optim.fused=true"], "optim.fused=True is invalid: allowed false or null when optim.foreach=true"),
])
def test_range_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError) as e:
        validate(compose_cfg(*overrides))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


BAD_INPUT = [
    # non-finite numbers and out-of-range seeds and optimiser arguments, before any training
    (["optim.lr=inf"], "optim.lr=inf is invalid: allowed a finite number"),
    (["method=lstsd", "method.lambda_short=inf"], "method.lambda_short=inf is invalid: allowed a finite number"),
    (["method=lstsd", "method.temperature=nan"], "method.temperature=nan is invalid: allowed"),
    (["seed=-1"], "seed=-1 is invalid: allowed an integer in [0, 2^63)"),
    (["seed=99999999999999999999"], "seed=99999999999999999999 is invalid: allowed an integer in [0, 2^63)"),
    (["optim=adam", "optim.betas=[0.9,1.5]"], "optim.betas=[0.9, 1.5] is invalid: allowed [beta1, beta2], each in [0, 1)"),
    (["optim=adam", "optim.eps=-1"], "optim.eps=-1.0 is invalid: allowed a number >= 0"),
    # a value of the wrong type: the key, the value and the type allowed (no OmegaConf internals)
    (["optim.lr=abc"], "lstsd: error: optim.lr='abc' is invalid: allowed a number"),
    (["trainer.epochs=1.5"], "lstsd: error: trainer.epochs='1.5' is invalid: allowed an integer"),
    (["trainer.compile=maybe"], "lstsd: error: trainer.compile='maybe' is invalid: allowed true or false"),
    (["trainer.limit_batches=0"], "trainer.limit_batches=0 is invalid: allowed null or an integer >= 1"),
    (["trainer.clip_grad_norm=0"], "trainer.clip_grad_norm=0.0 is invalid: allowed null or a number > 0"),
    (["schedule.warmup_epochs=-1"], "schedule.warmup_epochs=-1.0 is invalid: allowed null or a number of epochs >= 0"),
    (["trainer.epochs=5", "schedule.warmup_epochs=5"],
     "schedule.warmup_epochs=5.0 is invalid: allowed fewer epochs than the run's 5"),
    (["method=nonexistent"], "method=nonexistent is invalid: allowed one of dlb, kd, kd_cnn100, kd_densenet121, kd_lenetw, "
     "kd_resnet18, kd_resnet50, kd_resnext29, label_smoothing, lstsd, lstsd_hinton, lstsd_single, lstsd_t1, lstsd_wo_long, "
     "lstsd_wo_short, lwkd, lwkd_c10, lwkd_c10_wo_adv, lwkd_c10_wo_kl, lwkd_digits, lwkd_digits_t2, lwkd_wo_adv, lwkd_wo_kl, lwkd_wo_syn, mean_teacher, mean_teacher_code, sd, sd_t1, sd_t3, "
     "snapshot_ensembles, temporal_ensembling, tfkd_reg, tfkd_reg_googlenet, tfkd_reg_mobilenetv2, "
     "tfkd_reg_shufflenetv2, tfkd_self, tfkd_self_densenet121, tfkd_self_googlenet, tfkd_self_mobilenetv2, "
     "tfkd_self_resnext29, tfkd_self_shufflenetv2, vanilla, vanilla_cosine"),
    (["experiment=nope"], "experiment=nope is invalid: allowed one of baselines_grid, demo, digits_demo"),
    # text (GLUE): a missing model directory, task/model mismatches, a folder without the task's files
    (["dataset=glue_sst2", "model=bert", "model.path=/nonexistent/bert"],
     "model.path='/nonexistent/bert' is invalid: allowed a local transformers model directory"),
    (["dataset=glue_rte", "model=textcnn", "model.text_input=single"],
     "model.text_input='single' is invalid: allowed pair (dataset=glue_rte is a sentence-pair task)"),
    (["dataset=glue_rte", "model=resnet20"], "model=resnet20 is invalid for dataset=glue_rte: allowed a text model"),
    (["model=textcnn"], "model=textcnn is invalid for dataset=mnist1d: allowed an image model"),
    (["dataset=glue_cola", "model=textcnn", "dataset.root=/nonexistent"],
     "dataset.root: GLUE CoLA not found: expected /nonexistent/CoLA holding the official train.tsv and dev.tsv"),
    (["dataset=glue_cola", "model=textcnn", "dataset.headline=f1"], "dataset.headline='f1' is invalid"),
    (["dataset=glue_rte", "model=textcnn", "dataset.pair=false"], "dataset.pair=False is invalid: allowed True"),
    (["model=resnet999"], "model=resnet999 is invalid: allowed one of"),
    (["hydra/launcher=nope"], "hydra/launcher=nope is invalid"),
    (["method=lstsd", "method.temperature=0"], "method.temperature=0.0 is invalid"),
    (["trainer.epochs=abc"], "trainer.epochs"),
    (["trainer.epochs=0"], "trainer.epochs=0 is invalid"),
    (["trainer.nonsense=1"], "nonsense"),
    (["trainer.precision=fp8"], "trainer.precision='fp8' is invalid: allowed one of fp32, bf16, fp16"),
    (["trainer.device=tpu"], "trainer.device='tpu' is invalid"),
    (["dataset.batch_size=0"], "dataset.batch_size=0 is invalid"),
    (["dataset.val_fraction=1.5"], "dataset.val_fraction=1.5 is invalid: allowed a number in [0, 1)"),
    (["dataset.loader=ffcv"], "dataset.loader='ffcv' is invalid: allowed one of memory, torchvision"),
    (["dataset.num_workers=-1"], "dataset.num_workers=-1 is invalid"),
    (["optim.lr=-0.1"], "optim.lr=-0.1 is invalid"),
    (["optim=sgd", "optim.momentum=1.0"], "optim.momentum=1.0 is invalid: allowed a number in [0, 1)"),
    (["optim.foreach=true", "optim.fused=true"], "optim.fused=True is invalid"),
    (["schedule.name=linear"], "schedule.name='linear' is invalid: allowed one of constant, step, cosine"),
    (["method=sd", "trainer.epochs=2"], "method.minigens=4 is invalid: allowed an integer in [1, trainer.epochs=2]"),
    (["method=snapshot_ensembles", "method.minigen_lengths=[10,10]"],
     "method.minigen_lengths=[10, 10] is invalid: allowed lengths summing to trainer.epochs=200"),
    (["method=mean_teacher", "method.decay=1.5"], "method.decay=1.5 is invalid: allowed a number in (0, 1)"),
    (["method=temporal_ensembling", "method.weight=-1"], "method.weight=-1.0 is invalid: allowed a number >= 0"),
    (["method=lstsd", "method.bank_topk=5"], "method.bank_topk=5 is invalid: allowed 0 unless method.bank_store=probs"),
    (["method=lstsd", "method.bank_store=probs", "method.bank_topk=10"],
     "method.bank_topk=10 is invalid: allowed an integer in [0, 10) (the number of classes)"),
    (["method=lstsd", "method.bank_dtype=int8"], "method.bank_dtype='int8' is invalid"),
    (["method=kd", "method.teacher_run=/does/not/exist"], "/does/not/exist"),
    (["model=resnet20", "model.depth=21"], "model.depth=21 is invalid for cifar_resnet: expected 6n+2"),
    (["model=timm", "model.name=no_such_net"], "model.name='no_such_net' is invalid: not a timm model"),
    (["dataset=cifar10", "dataset.root=/does/not/exist"],
     "expected the python-pickle folder /does/not/exist/cifar-10-batches-py"),
    (["logger.mode=sometimes"], "logger.mode='sometimes' is invalid"),
    # keys the schema does not know, appended or misspelt: the same line, with the closest valid key
    (["+foo=bar"], "foo is not a configuration key: allowed keys of the root: dataset, imports, logger, method, model, "
     "name"),
    (["method=lstsd", "method.lamda_long=1"], "method.lamda_long is not a configuration key: did you mean "
     "method.lambda_long? allowed keys of method: bank_dtype"),
    (["method=lstsd", "+method.lamda_long=1"], "method.lamda_long is not a configuration key: did you mean "
     "method.lambda_long? allowed keys of method: bank_dtype"),
    (["+trainer.epoch=5"], "trainer.epoch is not a configuration key: did you mean trainer.epochs?"),
    (["+dataset.extra.deep=1"], "dataset.extra is not a configuration key"),
    # names that would escape their folder
    (["name=../../escape"], "name='../../escape' is invalid: allowed letters, digits and . _ - + = , (a folder name, "
     "not a path)"),
    (["name=a/b"], "name='a/b' is invalid"),
    # an unknown option inside a list of options: the group's options, like a single unknown option
    (["logger=[csv,nope]"], "logger=nope is invalid: allowed one of csv, none, tensorboard, wandb"),
    # a model that does not fit its input: refused after one dry forward pass
    (["dataset=digits", "model=lenet5"], "model=lenet5 does not fit the input of dataset=digits (shape 1x8x8): "),
    (["model=resnet20"], "model=resnet20 does not fit the input of dataset=mnist1d (shape 1x40)"),
    # one's own data (tests/test_own_data.py has the cases that need files)
    (["dataset=imagefolder", "dataset.root=/nonexistent", "model=digits_cnn"],
     "dataset.root: /nonexistent not found: expected the ImageFolder layout /nonexistent/train/<class>/<image> and "
     "/nonexistent/val/<class>/<image>"),
    (["dataset=npz", "dataset.path=/nonexistent.npz"],
     "dataset.path: /nonexistent.npz not found: expected an .npz file with the arrays x_train, y_train, x_test, y_test"),
    (["dataset=hf", "dataset.path=/nonexistent", "model=digits_cnn"],
     "dataset.path: /nonexistent not found: expected a Hugging Face dataset saved with DatasetDict.save_to_disk"),
    (["dataset=torchvision", "dataset._target_=no.such.Dataset"],
     "dataset._target_='no.such.Dataset' is invalid: it cannot be imported"),
    (["dataset=imagefolder", "dataset.on_corrupt=ignore"],
     "dataset.on_corrupt='ignore' is invalid: allowed one of error, skip"),
    (["dataset=imagefolder", "dataset.train_transforms=[5]"],
     "dataset.train_transforms[0]=5 is invalid: allowed a transform given as {_target_: torchvision.transforms.v2."),
    (["dataset=npz", "dataset.path=x.npz", "dataset.mean=[0.5]"],
     "dataset.std=None is invalid: allowed null when dataset.mean is null, a list when it is a list"),
]


@pytest.mark.parametrize("args,fragment", BAD_INPUT)
def test_bad_input_exit_2_one_line(refused, args, fragment):
    """Each bad configuration or override (wrong type, unknown option or key, out-of-range number, inconsistent
    combination, missing file or folder) stops before training: exit code 2, one line naming it, no traceback.
    In process (the console script's own main), so that the whole list runs in seconds."""
    assert fragment in refused(*args)


def test_a_value_of_the_wrong_type_is_named_without_omegaconfs_internals(refused):
    assert refused("optim.lr=abc") == "lstsd: error: optim.lr='abc' is invalid: allowed a number"
    assert refused("method=lstsd", "method.lambda_long=x") == \
        "lstsd: error: method.lambda_long='x' is invalid: allowed a number"


@pytest.mark.parametrize("package,args,what", [
    ("wandb", ["logger=wandb"], "logger=wandb"),
    ("tensorboard", ["logger=tensorboard"], "logger=tensorboard"),
    ("timm", ["model=timm", "model.name=resnet18"], "model=timm"),
    ("sklearn", ["dataset=digits", "model=digits_cnn"], "dataset=digits"),
    ("sklearn", ["dataset.metrics=[acc,mcc]"], "dataset.metrics=['acc', 'mcc']"),
])
def test_an_option_without_its_extra_names_the_extra(refused, monkeypatch, package, args, what):
    """Each optional package a default run does without: where a run needs one that is not installed (hidden
    here), it stops before training with one line naming the option and the extra to install."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")] + [package]:
        monkeypatch.setitem(sys.modules, name, None)  # what an uninstalled package looks like to an import
    extra, distribution = EXTRAS[package], {"sklearn": "scikit-learn"}.get(package, package)
    assert refused(*args) == (f"lstsd: error: {what} needs the {extra} extra ({distribution}), which is not "
                              f"installed: pip install -e '.[{extra}]'")


def test_the_extras_are_pyprojects_and_a_default_run_needs_none():
    """The extras the error names are pyproject.toml's, and the core dependencies hold none of their packages."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert set(EXTRAS.values()) <= set(project["optional-dependencies"])
    core = " ".join(project["dependencies"])
    for package in ("wandb", "tensorboard", "timm", "scikit-learn", "transformers", "datasets", "lightning", "optuna"):
        assert package not in core


@pytest.mark.parametrize("args,fragment", [BAD_INPUT[0]])
def test_cli_bad_input_exit_2_one_line(tmp_path, args, fragment):
    """The same, as a separate process (the exit status a shell sees)."""
    r = run_cli(*args, f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("lstsd: error:"), r.stderr
    assert fragment in lines[0]
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "metrics.jsonl").exists()  # stopped before training


def test_cli_multirun_end_to_end(tmp_path):
    r = run_cli("-m", "method=vanilla,lstsd", "trainer.epochs=2", "seed=0",
                f"hydra.sweep.dir={tmp_path}")
    assert r.returncode == 0, r.stderr
    for job in ("method=vanilla,seed=0,trainer.epochs=2", "method=lstsd,seed=0,trainer.epochs=2"):
        d = tmp_path / job  # one folder per combination of overrides
        assert (d / ".hydra" / "config.yaml").exists()
        assert (d / "last.pt").exists()
        rows = [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]
        assert [r_["epoch"] for r_ in rows] == [1, 2]
        for key in ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"):
            assert key in rows[0]
        res = json.loads((d / "results.json").read_text())
        for key in ("method", "model", "dataset", "seed", "epochs", "test_acc_final", "test_acc_best", "best_epoch",
                    "train_loss_final", "wall_seconds", "steps_per_second"):
            assert key in res
        assert res["dataset"] == "mnist1d"
        assert res["epochs"] == 2
    assert "| mnist1d | mnist1d_cnn | lstsd | 1 |" in r.stdout  # the comparison table of the sweep


def test_paper_experiments_sweep_the_paper_axes():
    def params(name):
        cfg = compose_cfg(f"experiment={name}", return_hydra_config=True)
        return cfg, dict(cfg.hydra.sweeper.params)

    cfg, p = params("lstsd_table1")
    assert (cfg.dataset.name, cfg.trainer.epochs, cfg.dataset.batch_size, cfg.optim.weight_decay) == ("cifar100", 164, 128, 1e-4)
    assert p == {"model": "resnet20,resnet32,resnet56,resnet110", "seed": "0,1,2",
                 "method": "vanilla,vanilla_cosine,mean_teacher,snapshot_ensembles,temporal_ensembling,sd,sd_t3,lstsd"}
    cfg, p = params("lstsd_table1_densenet")
    assert (cfg.model.name, cfg.trainer.epochs, cfg.dataset.batch_size) == ("densenet100", 300, 64)
    assert p["method"] == "vanilla,vanilla_cosine,mean_teacher,snapshot_ensembles,temporal_ensembling,sd,sd_t3,lstsd"
    cfg, p = params("sd_table3")
    assert (cfg.dataset.name, cfg.trainer.epochs, cfg.schedule.name, cfg.optim.nesterov) == ("cifar100", 164, "cosine", True)
    assert p == {"model": "resnet20,resnet32,resnet56,resnet110", "method": "vanilla,snapshot_ensembles,sd,sd_t3",
                 "seed": "0,1,2"}
    cfg, p = params("sd_table3_densenet")
    assert (cfg.model.name, cfg.trainer.epochs, cfg.dataset.batch_size, p["model"]) == ("densenet100", 300, 64, "densenet100,densenet190")
    assert params("lstsd_table3")[1]["method"] == "lstsd,lstsd_wo_long,lstsd_wo_short,lstsd_single"
    p = params("lstsd_fig2")[1]
    assert p["method"] == "lstsd"
    assert p["method.minigen_epochs"] == "1,2,3,4,5,6,8,10,20,40"
    cfg, p = params("lstsd_grid")
    assert p["method"] == "lstsd"
    assert "4.0" in p["method.lambda_short"].split(",")
    assert cfg.dataset.val_fraction == 0.1


@pytest.mark.parametrize("experiment,method,schedule,lengths", [
    ("lstsd_table1", "vanilla", "step", None), ("lstsd_table1", "lstsd", "step", None),
    ("lstsd_table1", "mean_teacher", "step", None), ("lstsd_table1", "temporal_ensembling", "step", None),
    ("lstsd_table1", "sd", "cosine", [41] * 4), ("lstsd_table1", "snapshot_ensembles", "cosine", [41] * 4),
    ("lstsd_table1_densenet", "sd", "cosine", [75] * 4), ("sd_table3", "vanilla", "cosine", None),
    ("sd_table3", "sd_t3", "cosine", [41] * 4), ("sd_table3_densenet", "snapshot_ensembles", "cosine", [75] * 4),
])
def test_each_job_of_the_paper_sweeps_gets_its_papers_settings(experiment, method, schedule, lengths):
    conf = validate(compose_cfg(f"experiment={experiment}", f"method={method}"))
    assert conf.schedule.name == schedule
    if lengths:
        assert conf.method.lengths(conf.trainer.epochs) == lengths
        assert conf.method.restart_lr
        assert conf.method.temperature == (3.0 if method == "sd_t3" else 2.0) if method.startswith("sd") else True
    if method == "mean_teacher":
        assert conf.method.decay == 0.999
    if method == "temporal_ensembling":
        assert conf.method.alpha == 0.6


def test_optimiser_implementation_options_reach_torch():
    from hydra.utils import instantiate

    model = torch.nn.Linear(2, 2)
    for flags, (foreach, fused) in [((), (None, True)), (("optim=sgd",), (None, None)),
                                    (("optim=sgd", "optim.fused=true"), (None, True)),
                                    (("optim.fused=false", "optim.foreach=true"), (True, False))]:
        opt = instantiate(compose_cfg(*flags).optim, _convert_="all")(model.parameters())
        assert (opt.defaults["foreach"], opt.defaults["fused"]) == (foreach, fused)


def test_tab_completion_offers_options_not_schemas(tmp_path):
    """``method=<TAB>`` lists the method options; the base_* schemas of the ConfigStore are not among them."""
    r = subprocess.run([sys.executable, "-m", "lstsd", "-sc", "query=bash"], capture_output=True, text=True,
                       env={**os.environ, "COMP_LINE": "lstsd method="}, timeout=120)
    words = r.stdout.split()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "method=lstsd" in words, r.stdout + r.stderr
    assert "method=vanilla" in words, r.stdout + r.stderr
    assert not [w for w in words if "base_" in w]


def test_sd_imagenet_jobs_get_the_papers_settings():
    """``experiment=sd_imagenet``: the SD paper's ILSVRC-2012 setting (torchvision ResNet-101/152, 90 epochs,
    batch 256, cosine from 0.1, Nesterov, K = 2 for SE and SD, T = 2) and LSTSD with top-5 float16 banks, each
    method key given only to the jobs whose method has it."""
    from lstsd.launch.sweeper import fit_to_methods

    cfg = compose_cfg("experiment=sd_imagenet", return_hydra_config=True)
    assert (cfg.dataset.name, cfg.dataset.loader, cfg.model.arch, cfg.trainer.epochs, cfg.dataset.batch_size) == \
        ("imagenet", "stream", "torchvision", 90, 256)
    params = dict(cfg.hydra.sweeper.params)
    assert params["model.name"] == "resnet101,resnet152"
    fixed = [f"{k}={v}" for k, v in params.items() if k.startswith("method.")]
    jobs = [[f"method={m}", *fixed] for m in params["method"].split(",")]
    has = lambda method, key: key.split(".", 1)[1] in compose_cfg(f"method={method}").method  # noqa: E731
    for job in fit_to_methods(jobs, has):
        conf = validate(compose_cfg("experiment=sd_imagenet", "dataset.verify=none", *job))
        assert (conf.schedule.name, conf.optim.lr, conf.optim.nesterov) == ("cosine", 0.1, True)
        if conf.method.name in ("sd", "snapshot_ensembles"):
            assert conf.method.lengths(90) == [45, 45]
        if conf.method.name == "sd":
            assert conf.method.temperature == 2.0
        if conf.method.name == "lstsd":
            assert (conf.method.bank_store, conf.method.bank_topk, conf.method.bank_dtype) == ("probs", 5, "float16")


@pytest.mark.parametrize("command", [["lstsd", "--hydra-help"], ["lstsd", "--help"], ["lstsd-report", "--help"],
                                     ["lstsd-bench", "--help"]])
def test_output_piped_into_a_reader_that_stops_early_ends_quietly(command):
    """``lstsd --help | head -1``: a reader that closes the pipe (here before the first line is written) ends the
    command with exit 0 and nothing on stderr (no "Broken pipe")."""
    script = Path(sys.executable).parent / command[0]
    proc = subprocess.Popen([str(script), *command[1:]], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO,
                            env={**os.environ, "WANDB_MODE": "disabled"})
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0, err
    assert err == ""
