"""Training: losses, mixing, optimizer and schedule, the train state, the loop, one fold (fit) and every fold of a run."""

from engine.train.folds import train

__all__ = ["train"]
