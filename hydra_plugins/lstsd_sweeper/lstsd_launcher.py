"""The launcher plugins of the presets (Hydra takes plugins only from the ``hydra_plugins`` namespace):
hydra-submitit-launcher's launchers with :mod:`lstsd.launch.launcher`, where their behaviour is written and
documented. Importing this module stores ``hydra/launcher=base_workstation`` (:mod:`lstsd.launch.workstation_schema`)."""
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher, SlurmLauncher

from lstsd.launch import workstation_schema  # noqa: F401 - the schema of hydra/launcher=workstation
from lstsd.launch.launcher import SlurmLaunch, WorkstationLaunch


class LstsdSlurmLauncher(SlurmLaunch, SlurmLauncher):
    """``hydra/launcher=slurm``: :class:`lstsd.launch.launcher.SlurmLaunch`."""


class LstsdLocalLauncher(WorkstationLaunch, LocalLauncher):
    """``hydra/launcher=workstation``: :class:`lstsd.launch.launcher.WorkstationLaunch`."""
