"""Training, from one step to a whole run.

- losses, mix (mixup / cutmix), optim (parameter groups, layer decay), lr_schedule (LR per update), ema,
  freezing, sync_bn: the pieces a step is made of
- state: the train state built from a recipe, and last.pt written and read back
- loop: one epoch (train_one_epoch) and evaluate; late_read (device values the host reads an update late),
  step_clock (how long the steps waited for data)
- early_stopping, fit: one fold from its first epoch (or its last.pt) to best.pt; run_log: what a run reports
  (console, train.log, metrics.csv, W&B)
- training_data: the run's table, audited, with folds and pseudo-labels; split_record: split.csv, the split a run
  used, kept for resumes and other machines (and its fingerprint in the checkpoints)
- distill: the teachers' out-of-fold probabilities mixed into the training targets
- orchestrator: train(), every fold of a run into its run folder, the out-of-fold results and the summary
- dry_run: what --dry-run prints; lr_find: the LR range test (--find-lr)
"""

from engine.train.orchestrator import train

__all__ = ["train"]
