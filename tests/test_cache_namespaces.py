"""cache='memory' stores in a /dev/shm shared by containers: a store is cleared only by a run of the same host
and PID namespace (a pid from another namespace says nothing about whether its owner lives)."""
from __future__ import annotations

import subprocess
import sys

import engine.data.stores.image_cache as cache


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # exited and reaped: no such process here (until the pid is reused, which takes long)


def test_only_stores_of_this_host_and_pid_namespace_are_reaped(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "memory_cache_root", lambda: tmp_path)
    monkeypatch.setattr(cache, "_REMOVE_AT_EXIT", set())
    monkeypatch.setattr(cache.atexit, "register", lambda *a: None)
    pid = dead_pid()
    ours = cache.namespace_tag()
    mine_dead = tmp_path / f"sketchbook@{ours}-{pid}-train-36px-0123456789ab"
    other_container = tmp_path / f"sketchbook@{'f' * 10}-{pid}-train-36px-0123456789ab"
    untagged = tmp_path / f"sketchbook-{pid}-train-36px-0123456789ab"  # named before tags: owner unknown
    for folder in (mine_dead, other_container, untagged):
        (folder / "data-0.bin").parent.mkdir()
        (folder / "data-0.bin").write_bytes(b"x")
    folder = cache.memory_store_folder(cache.store_settings(str(tmp_path), 36))
    assert folder.name.startswith(f"sketchbook@{ours}-")
    assert not mine_dead.exists()  # our namespace, dead owner: a killed run's memory, freed
    assert other_container.exists() and untagged.exists()  # another container's pid 'pid' may be alive there


def test_the_tag_is_the_host_and_pid_namespace(monkeypatch):
    tag = cache.namespace_tag()
    assert tag == cache.namespace_tag() and len(tag) == 10
    real = cache.os.readlink
    monkeypatch.setattr(cache.os, "readlink", lambda p: "pid:[1]" if p == "/proc/self/ns/pid" else real(p))
    assert cache.namespace_tag() != tag or real("/proc/self/ns/pid") == "pid:[1]"
    monkeypatch.setattr(cache.socket, "gethostname", lambda: "another-host")
    assert cache.namespace_tag() != tag
