"""The schema of ``hydra/launcher=workstation`` (``lstsd/conf/hydra/launcher/workstation.yaml`` extends it):
hydra-submitit-launcher's local keys, its own class and ``max_parallel``, stored in Hydra's ConfigStore as
``hydra/launcher=base_workstation`` when Hydra scans its plugins (the launcher plugin imports this module), so
that a misspelt or mistyped key of the preset fails while composing."""
from dataclasses import dataclass
from typing import Optional

from hydra.core.config_store import ConfigStore
from hydra_plugins.hydra_submitit_launcher.config import LocalQueueConf


@dataclass
class WorkstationConf(LocalQueueConf):
    _target_: str = "hydra_plugins.lstsd_sweeper.lstsd_launcher.LstsdLocalLauncher"
    # at most this many jobs at a time; None: lstsd.machine.plan decides
    max_parallel: Optional[int] = None


ConfigStore.instance().store(group="hydra/launcher", name="base_workstation", node=WorkstationConf,
                             provider="lstsd")
