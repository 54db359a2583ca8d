"""Images in: the training table (read, audit, folds), decoding, transforms, the decode-once cache, loaders and the demo digits."""
