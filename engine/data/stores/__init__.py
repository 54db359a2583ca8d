"""Stores: work done once and kept in files for every later epoch, fold and run.

- cache: the decode-once host cache (pre-resized uint8 images; memory or disk) and its keys
- cache_store: building, locking and reading the cache's files
- feature_store: a frozen backbone's features, per training view and eval view, keyed by content
"""
