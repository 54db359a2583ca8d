"""Images in, four rooms that import one way (pixels <- stores <- tables <- batches):

- pixels/: decoding an image file, the paper colour, the per-image transforms and the batched device warp
- stores/: the decode-once host cache and the frozen-backbone feature store (files built once, reused)
- tables/: the training and test tables (read, audit), folds, the recorded split, near duplicates,
  pseudo-labels and the demo digits
- batches/: where a fold's batches come from (the batch-source contract, its factory, the loaders, images
  resident on the device, feature-store batches)
"""
