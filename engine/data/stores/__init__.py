"""Stores: work done once and kept in files for every later epoch, fold and run.

- image_cache: the decode-once host cache (recipe key `cache`: pre-resized uint8 images; memory or disk) and its keys
- image_store: the cache's files: building, locking and reading them
- feature_store: a frozen backbone's features, per training view and eval view, keyed by content
"""
