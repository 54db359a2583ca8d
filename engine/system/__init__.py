"""What every stage stands on: processes (distributed, preemption), durable files (atomic writes, the run log) and the device (precision, memory format, CPU count)."""
