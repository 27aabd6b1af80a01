"""How runs are asked for: the lstsd sweeper, the launchers' additions (workstation, SLURM) and SLURM's job states."""
