"""``hydra/launcher=slurm``'s class (``lstsd/conf/hydra/launcher/slurm.yaml``): hydra-submitit-launcher's SLURM launcher,
which reads job states from squeue where sacct fails and waits for every job of a launch, a job that ended
without a result counted as failed (:mod:`lstsd.slurm_support`)."""
from __future__ import annotations

import re
from typing import Any, Sequence

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher


class LstsdSlurmLauncher(SlurmLauncher):
    def setup(self, **kwargs: Any) -> None:
        """In the launching process, once per sweep (the jobs get this launcher pickled, never set up)."""
        from lstsd.slurm_support import install_state_watcher

        super().setup(**kwargs)
        install_state_watcher()

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from submitit.core.utils import FailedJobError, UncompletedJobError
        from submitit.slurm.slurm import SlurmJob

        from lstsd.slurm_support import every_return

        before = set(SlurmJob.watcher._registered)  # the jobs of this launch: the ones registered from now on
        try:
            return super().launch(job_overrides, initial_job_idx)
        except (UncompletedJobError, FailedJobError) as e:  # one job ended without a result: wait for all of them
            launched = sorted(set(SlurmJob.watcher._registered) - before)
            waited = re.match(r"Job (\S+) \(task", str(e))  # submitit's message: "Job <id> (task: 0) with path ..."
            return every_return(self.params["submitit_folder"], launched, [list(o) for o in job_overrides],
                                waited=waited.group(1) if waited else None)
