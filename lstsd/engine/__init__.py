"""The trainer (:mod:`.loop`) and its parts: step statistics, checkpoint, stop-signal guard, evaluation."""
from lstsd.engine.evaluation import evaluate
from lstsd.engine.loop import Trainer
from lstsd.engine.stats import StepStats

__all__ = ["StepStats", "Trainer", "evaluate"]
