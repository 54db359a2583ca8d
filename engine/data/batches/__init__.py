"""Batches: where a fold's training and validation batches come from (one contract, one factory).

- sources: the batch-source contract
- loader_source: batches from the loader workers ("workers", and "device": workers lay a canvas, the device warps)
- resident_source: batches of images resident on the device, packed once (a gather and a warp per batch)
- store_source: batches of stored features for a frozen backbone (and what --dry-run says of the stores)
- feed_race: augment_on='auto' on CUDA measures the device canvas against the workers and keeps the faster
- factory: choose_path (which source the recipe and device get, and why) and build_fold_batches
- loader: datasets, the epoch and shard samplers, the worker processes
- resident: the images kept on the device across folds, with the fit check
- targets: a training row's target (its class, or distillation's row of probabilities)
"""
