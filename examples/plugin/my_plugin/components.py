"""The module ``imports`` names: it imports the package's components, whose decorators register them with lstsd.

    PYTHONPATH=examples/plugin lstsd imports=[my_plugin.components] hydra.searchpath=[pkg://my_plugin/conf] \\
        dataset=blobs model=mlp method=confidence_penalty

``imports`` makes every process that runs a job (the basic launcher's, each submitit or SLURM worker, each
torchrun rank) import this module before it validates its configuration, and the command line imports it before
it composes, so lstsd stores the components' schemas as ``base_blobs``, ``base_mlp`` and
``base_confidence_penalty`` in Hydra's ConfigStore, which the YAML files under ``conf/`` extend. The package must
be importable wherever a job runs: on ``PYTHONPATH`` (which submitit's jobs and SLURM's inherit from the launching
shell) or installed in the environment.
"""
from my_plugin import data, methods, models  # noqa: F401 - imported for their registrations
