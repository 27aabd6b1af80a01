"""How one run is carried out: :func:`~lstsd.training.run.run` resolves the teacher and assembles data, model and
method; the :class:`~lstsd.training.trainer.Trainer` and its parts (checkpoint, stop signals, step statistics,
evaluation) fit them; the run folder, trackers, console and learning-rate schedules."""
