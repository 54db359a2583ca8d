"""Where a sweep's Optuna study lives, and how a dead worker's trial is noticed and run again.

    sqlite:///path/study.db         one machine (the default: runs/sweeps/<name>/study.db)
    postgresql://user@host:port/db  several machines (any SQLAlchemy database URL works)
    journal:/shared/path/sweep.log  several machines on a shared file system, no database server
                                    (journal:///abs/path and journal:relative/path work too)

Every worker records a heartbeat for its running trial every `heartbeat_s` seconds. A running trial
without one for 3 x heartbeat_s is failed by the next worker that starts a trial, and re-run once
with the same values under a new trial number (Optuna's RetryFailedTrialCallback).
"""
from __future__ import annotations

import importlib.util
import inspect
import json
import os
import time
import warnings
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from engine.errors import UserError

JOURNAL = "journal:"
HEARTBEAT_KEY = "sketchbook:heartbeat"  # unix time of the journal trial's last heartbeat
MAX_RETRY = 1  # a trial that kills its worker every time is not retried forever
GRACE_BEATS = 3


def journal_path(url: str) -> Path:
    """The log file of a journal: URL (journal:PATH, journal:///ABS/PATH)."""
    rest = url[len(JOURNAL):]
    path = rest[2:] if rest.startswith("//") else rest
    if not path or path.endswith("/"):
        raise UserError(f"--storage {url}: name a log file, like journal:/shared/sweeps/my_sweep.log")
    return Path(path)


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """A journal-file study whose running trials carry a heartbeat (Optuna's own journal has none)."""

    def __init__(self, path: Path, heartbeat_s: int, on_stale: Callable[[optuna.Study, FrozenTrial], None]):
        super().__init__(JournalFileBackend(str(path)))
        self.heartbeat_s, self.on_stale = heartbeat_s, on_stale

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        # wall clocks of the machines must agree to well within the grace period (NTP does)
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            last = max(started, trial.system_attrs.get(HEARTBEAT_KEY, started))
            if now - last > GRACE_BEATS * self.heartbeat_s:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_s

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.on_stale

    get_failed_trial_callback = get_heartbeat_stale_trial_callback  # its name before Optuna 4.9


def password_of(url: str) -> str:
    """The password in scheme://user:password@host/..., or ''."""
    try:
        return urlsplit(url).password or ""
    except ValueError:
        return ""


def without_password(url: str) -> str:
    """The URL as it may be printed: a password replaced by ***."""
    secret = password_of(url)
    return url.replace(f":{secret}@", ":***@") if secret else url


def check_journal_path(url: str, path: Path) -> None:
    """A journal file is created, or appended to when it is one: never a folder or another file, never unwritable."""
    if not path.parent.is_dir():
        raise UserError(f"--storage {url}: folder {path.parent} does not exist; create it (on the shared file "
                        f"system every worker sees) first")
    if path.is_dir():
        raise UserError(f"--storage {url}: {path} is a folder; name a log file in it, e.g. journal:{path / 'sweep.log'}")
    if path.exists() and not is_journal(path):
        raise UserError(f"--storage {url}: {path} exists and is not an Optuna journal; it is never written to: "
                        f"name a new file, e.g. journal:{path.with_name(path.stem + '_sweep.log')}")
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UserError(f"--storage {url}: cannot write in {path.parent} (read-only); every worker appends to the "
                        f"journal and its lock file there: use a writable shared folder")


def is_journal(path: Path) -> bool:
    """An empty file, or one whose first line is an Optuna journal record (a JSON object with an op_code)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            first = f.readline(1 << 16)
    except OSError:
        return False
    if not first.strip():
        return True
    try:
        return "op_code" in json.loads(first)
    except ValueError:
        return False


def with_postgres_driver(url: str) -> str:
    """postgresql://... with the driver requirements.txt installs (psycopg 3); older SQLAlchemy assumes psycopg2."""
    scheme, sep, rest = url.partition("://")
    if scheme in ("postgresql", "postgres") and importlib.util.find_spec("psycopg") is not None:
        return f"postgresql+psycopg://{rest}"
    return url


def open_storage(url: str, heartbeat_s: int) -> BaseStorage:
    """The study storage behind a --storage URL, with heartbeats and one re-run of a dead worker's trial."""
    if heartbeat_s < 1:
        raise UserError(f"--heartbeat must be a whole number of seconds >= 1, got {heartbeat_s}")
    with warnings.catch_warnings():  # renamed in Optuna 4.9 (the old name warns); both are "experimental"
        warnings.simplefilter("ignore")
        retry_class = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None) \
            or optuna.storages.RetryFailedTrialCallback
        retry = retry_class(max_retry=MAX_RETRY)
    if url.startswith(JOURNAL):
        path = journal_path(url)
        check_journal_path(url, path)
        try:
            return HeartbeatJournalStorage(path, heartbeat_s, retry)
        except OSError as e:  # /proc, a read-only mount that access() called writable: one line, no traceback
            raise UserError(f"--storage {url}: cannot create the journal there ({e.strerror}); name a log file on a "
                            f"writable (shared) file system, e.g. journal:runs/sweeps/sweep.log") from None
    url = with_postgres_driver(url)
    with warnings.catch_warnings():  # the heartbeat is "experimental" in Optuna but long stable
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            callback = ("heartbeat_stale_trial_callback"  # its name from Optuna 4.9 on
                        if "heartbeat_stale_trial_callback" in inspect.signature(optuna.storages.RDBStorage).parameters
                        else "failed_trial_callback")
            return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_s, grace_period=GRACE_BEATS * heartbeat_s,
                                              **{callback: retry})
        except Exception as e:  # a bad URL, a missing driver or an unreachable database, from SQLAlchemy
            said = str(e).splitlines()[0][:200].replace(password_of(url), "***") if password_of(url) else \
                str(e).splitlines()[0][:200]
            raise UserError(f"--storage {without_password(url)}: cannot open the study database ({type(e).__name__}: "
                            f"{said}); use a URL like sqlite:///path/study.db, "
                            f"postgresql://user@host:5432/db or journal:/shared/path/sweep.log") from e


def retried_numbers(study: optuna.Study) -> dict[int, int]:
    """Trial number of each failed trial that was re-run -> the number of its latest re-run."""
    rerun = {}
    for t in study.get_trials(deepcopy=False):
        for number in t.system_attrs.get("retry_history", []):
            rerun[number] = max(rerun.get(number, -1), t.number)
    return rerun


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail (and queue a re-run of) running trials whose worker stopped sending heartbeats."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
