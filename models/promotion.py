"""A model's serving folder: immutable versions, the champion pointer and the promotion log.

    <serving_dir>/            TF Serving's base path for the model
      <version>/              immutable once there: SavedModel, tflite/, labels.txt, promotion.json
      champion.json           the version to serve; replaced atomically after the version is in place
      promotions.jsonl        one JSON line per promotion, appended, never rewritten

Every promotion (a blessed run, a rollback, a forced run) publishes a new version: the content is
written to a hidden staging folder beside the versions, then renamed into place, so a reader never
sees a half-written version. The newest version is always the champion, so TF Serving's default
policy (serve the latest version) and champion.json agree. Plain module, no TFX: the Pusher and the
`pipeline.promote` command share it.

Publishers (runs, rollbacks, forced pushes, on any machine that mounts the folder) take one lock,
`<serving_dir>/.lock` (flock), for the whole publish. So a staging folder seen under the lock has no
live owner, a version number is taken once, and the champion pointer only moves to a newer version.
Atomicity and the lock need a POSIX filesystem (a mounted volume on Kubeflow; NFS v4 honours flock).

A pinned champion (`promote rollback` pins the version it republishes; `promote unpin` releases it)
is never replaced by a run: the Pusher then holds, records `held` in the log and publishes nothing.
Nor is a champion the run never compared with: when another version became the champion between the
run's ChampionModel step and its Pusher (another run, a rollback, a forced push), the Pusher records
`superseded` and publishes nothing, so a model is only ever published over the one it was judged
against.
"""
import contextlib
import fcntl
import json
import os
import shutil
import time
import uuid
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from models import files

CHAMPION_FILENAME = "champion.json"
LOG_FILENAME = "promotions.jsonl"
RECORD_FILENAME = "promotion.json"
LOCK_FILENAME = ".lock"
_STAGING_PREFIX = ".staging-"


class PromotionError(Exception):
    """An operator request that cannot be carried out; the message names the cause."""


def versions(serving_dir: str) -> List[int]:
    """Published versions, oldest first."""
    if not os.path.isdir(serving_dir):
        return []
    return sorted(int(name) for name in os.listdir(serving_dir)
                  if name.isdigit() and os.path.isdir(os.path.join(serving_dir, name)))


def version_dir(serving_dir: str, version: int) -> str:
    return os.path.join(serving_dir, str(version))


def champion(serving_dir: str) -> Optional[Dict[str, Any]]:
    """The champion pointer ({"version": …, …}), or None before the first promotion."""
    path = os.path.join(serving_dir, CHAMPION_FILENAME)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read()
    try:
        pointer = json.loads(text)
        int(pointer["version"])
    except (ValueError, KeyError, TypeError) as error:
        raise PromotionError(f"{path} is not a champion pointer ({type(error).__name__}: {error}); it should read "
                             f'{{"version": N, ...}} for a folder N beside it: repair it, or run '
                             f"`python -m pipeline.promote rollback --to N`") from error
    return pointer


def champion_dir(serving_dir: str) -> Optional[str]:
    pointer = champion(serving_dir)
    return version_dir(serving_dir, pointer["version"]) if pointer else None


def promotion_log(serving_dir: str) -> List[Dict[str, Any]]:
    path = os.path.join(serving_dir, LOG_FILENAME)
    if not os.path.exists(path):
        return []
    entries = []
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except ValueError as error:
                    raise PromotionError(f"{path}, line {number}, is not JSON ({error}): repair or remove that "
                                         f"line; the log is only appended to") from error
    return entries


def record(serving_dir: str, version: int) -> Dict[str, Any]:
    """The promotion record stored inside a version."""
    path = os.path.join(version_dir(serving_dir, version), RECORD_FILENAME)
    try:
        return files.read_json(path)
    except (OSError, ValueError) as error:
        raise PromotionError(f"version {version} has no readable {RECORD_FILENAME} ({type(error).__name__}: "
                             f"{error}); it was not published by this tool, or was changed since") from error


def _next_version(serving_dir: str) -> int:
    """Seconds since the epoch, as TFX's Pusher names versions, and always above the newest one."""
    existing = versions(serving_dir)
    return max(int(time.time()), existing[-1] + 1 if existing else 0)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def serving_lock(serving_dir: str) -> Iterator[None]:
    """Held by one publisher at a time, across processes and machines sharing the folder."""
    os.makedirs(serving_dir, exist_ok=True)
    with open(os.path.join(serving_dir, LOCK_FILENAME), "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _remove_stale_staging(serving_dir: str) -> None:
    """Staging folders of publishers that died before their rename: under the lock, no other
    publisher is writing one."""
    for name in os.listdir(serving_dir):
        if name.startswith(_STAGING_PREFIX):
            shutil.rmtree(os.path.join(serving_dir, name), ignore_errors=True)


def _append_log(serving_dir: str, entry: Dict[str, Any]) -> None:
    with open(os.path.join(serving_dir, LOG_FILENAME), "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def publish(serving_dir: str, write_content: Callable[[str], None], entry: Dict[str, Any],
            pin: bool = False) -> int:
    """Publishes a new version and makes it the champion (pinned if asked); returns the version.

    write_content(folder) fills the staging folder. entry (action, run id, metrics, thresholds, data
    fingerprint, reason, …) goes into the version's promotion.json and the log, with the time and version.
    """
    with serving_lock(serving_dir):
        return _publish_locked(serving_dir, write_content, entry, pin)


def _publish_locked(serving_dir: str, write_content: Callable[[str], None], entry: Dict[str, Any],
                    pin: bool) -> int:
    _remove_stale_staging(serving_dir)
    version = _next_version(serving_dir)
    entry = {"time": _now(), "version": version, **entry}
    staging = os.path.join(serving_dir, f"{_STAGING_PREFIX}{version}-{uuid.uuid4().hex[:8]}")
    try:
        write_content(staging)
        with open(os.path.join(staging, RECORD_FILENAME), "w") as f:
            json.dump(entry, f, indent=2, sort_keys=True)
        os.rename(staging, version_dir(serving_dir, version))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _fsync_dir(serving_dir)
    _write_pointer(serving_dir, {"version": version, "since": entry["time"], "action": entry.get("action"),
                                 "pinned": pin})
    _append_log(serving_dir, entry)
    return version


def _write_pointer(serving_dir: str, pointer: Dict[str, Any]) -> None:
    files.write_atomically(os.path.join(serving_dir, CHAMPION_FILENAME), json.dumps(pointer) + "\n")


PUBLISHED, HELD, SUPERSEDED = "published", "held", "superseded"  # what a run's publish did


def publish_if_still_champion(serving_dir: str, write_content: Callable[[str], None], entry: Dict[str, Any],
                              compared_with: int) -> Tuple[int, str]:
    """A run's publish, under the lock, only if the champion is still the version its model was
    compared with (compared_with; 0: there was none):
    - (new version, PUBLISHED);
    - (the champion's version, SUPERSEDED) when another version became the champion since: nothing
      is published, and the log says which version the model was compared with and which serves;
    - (the champion's version, HELD) when the champion is pinned: nothing is published.
    One lock for the check and the publish, so neither a pin nor another run's publish can slip in
    between."""
    with serving_lock(serving_dir):
        pointer = champion(serving_dir)
        current = pointer["version"] if pointer else 0
        if current != compared_with:
            compared = f"version {compared_with}" if compared_with else "no champion"
            _append_log(serving_dir, {"time": _now(), **entry, "action": SUPERSEDED, "version": current,
                                      "compared_with": compared_with,
                                      "reason": f"compared with {compared}, but version {current} became the "
                                                f"champion since"})
            return current, SUPERSEDED
        if pointer and pointer.get("pinned"):
            _append_log(serving_dir, {"time": _now(), **entry, "action": HELD, "version": current,
                                      "reason": f"version {current} is pinned (promote unpin releases it)"})
            return current, HELD
        return _publish_locked(serving_dir, write_content, entry, pin=False), PUBLISHED


def unpin(serving_dir: str) -> int:
    """Lets runs replace the champion again; returns its version."""
    with serving_lock(serving_dir):
        pointer = champion(serving_dir)
        if not pointer:
            raise PromotionError(f"no champion in {serving_dir}: nothing to unpin")
        if pointer.get("pinned"):
            _write_pointer(serving_dir, {**pointer, "pinned": False})
            _append_log(serving_dir, {"time": _now(), "action": "unpinned", "version": pointer["version"]})
        return pointer["version"]


def rollback(serving_dir: str, to_version: int, reason: str) -> int:
    """Republishes an earlier version as the newest one (the champion), pinned, so that no run
    replaces it until `unpin`; returns the new version."""
    published = versions(serving_dir)
    if to_version not in published:
        raise PromotionError(f"no version {to_version} in {serving_dir}; published versions: "
                             f"{published or 'none'}")
    source = record(serving_dir, to_version)
    entry = {"action": "rollback", "source_version": to_version, "reason": reason,
             **{key: source.get(key) for key in ("run_id", "metrics", "thresholds", "data_fingerprint",
                                                        "run_fingerprint")}}
    return publish(serving_dir, lambda staging: shutil.copytree(
        version_dir(serving_dir, to_version), staging, ignore=shutil.ignore_patterns(RECORD_FILENAME)), entry,
        pin=True)
