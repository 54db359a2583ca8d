"""What every stage stands on: atomic (durable writes, pid_alive), device (precision, channels_last, CPU count,
device_feed), distributed (torchrun processes), torchrun_exits (torchrun with the engine's exit codes), lock
(fold locks, the waiting lock), outputs (the rule of what a command may write), preemption (SIGTERM / Ctrl-C) and
progress (progress bars)."""
