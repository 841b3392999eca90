"""Training engine: the loop (`Trainer`), run records (`execute_run`) and the teacher zoo."""

from kd.engine.run import RunRecord, execute_run
from kd.engine.services import Services
from kd.engine.trainer import Trainer, TrainingDiverged, TrainingInterrupted, TrainOutcome

__all__ = [
    "RunRecord",
    "Services",
    "Trainer",
    "TrainOutcome",
    "TrainingDiverged",
    "TrainingInterrupted",
    "execute_run",
]
