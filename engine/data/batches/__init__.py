"""Batches: where a fold's training and validation batches come from (one contract, one factory).

- sources: the batch-source contract and its kinds (loader workers, images resident on the device, stored features)
- factory: choose_path (which source the recipe and device get, and why) and build_fold_batches
- loader: datasets, the epoch and shard samplers, the worker processes
- resident: a fold's images kept on the device, with the fit check
- store_source: batches of stored features for a frozen backbone (and what --dry-run says of the stores)
- targets: a training row's target (its class, or distillation's row of probabilities)
"""
