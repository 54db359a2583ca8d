"""What every stage stands on: atomic (durable writes, pid_alive), device (precision, channels_last, CPU count,
device_feed), distributed (torchrun processes), launch (torchrun's exit codes), lock (fold locks, the waiting
lock), outputs (the rule of what a command may write), preemption (SIGTERM / Ctrl-C) and runlog (console,
train.log, metrics.csv, W&B)."""
