"""A model's serving folder: immutable versions, the champion pointer and the promotion log.

    <serving_dir>/            TF Serving's base path for the model
      <version>/              immutable once there: SavedModel, tflite/, labels.txt, promotion.json
      champion.json           the version to serve; replaced atomically after the version is in place
      promotions.jsonl        one JSON line per promotion, appended, never rewritten

Every promotion (a blessed run, a rollback, a forced run) publishes a new version: the content is
written to a hidden staging folder beside the versions, then renamed into place, so a reader never
sees a half-written version. The newest version is always the champion, so TF Serving's default
policy (serve the latest version) and champion.json agree. Plain module, no TFX: the Pusher and the
`pipeline.promote` command share it. Atomicity needs a POSIX filesystem (a mounted volume on Kubeflow).
"""
import json
import os
import shutil
import time
import uuid
from typing import Any, Callable, Dict, List, Optional

CHAMPION_FILENAME = "champion.json"
LOG_FILENAME = "promotions.jsonl"
RECORD_FILENAME = "promotion.json"
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
        return json.load(f)


def champion_dir(serving_dir: str) -> Optional[str]:
    pointer = champion(serving_dir)
    return version_dir(serving_dir, pointer["version"]) if pointer else None


def promotion_log(serving_dir: str) -> List[Dict[str, Any]]:
    path = os.path.join(serving_dir, LOG_FILENAME)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def record(serving_dir: str, version: int) -> Dict[str, Any]:
    """The promotion record stored inside a version."""
    with open(os.path.join(version_dir(serving_dir, version), RECORD_FILENAME)) as f:
        return json.load(f)


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


def _write_atomically(path: str, text: str) -> None:
    temporary = f"{path}.{uuid.uuid4().hex}.tmp"
    with open(temporary, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _remove_stale_staging(serving_dir: str) -> None:
    """Staging folders left by a publisher that died before its rename."""
    for name in os.listdir(serving_dir):
        if name.startswith(_STAGING_PREFIX):
            shutil.rmtree(os.path.join(serving_dir, name), ignore_errors=True)


def publish(serving_dir: str, write_content: Callable[[str], None], entry: Dict[str, Any]) -> int:
    """Publishes a new version and makes it the champion; returns the version.

    write_content(folder) fills the staging folder. entry (action, run id, metrics, thresholds, data
    fingerprint, reason, …) goes into the version's promotion.json and the log, with the time and version.
    """
    os.makedirs(serving_dir, exist_ok=True)
    _remove_stale_staging(serving_dir)
    version = _next_version(serving_dir)
    entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "version": version, **entry}
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
    _write_atomically(os.path.join(serving_dir, CHAMPION_FILENAME),
                      json.dumps({"version": version, "since": entry["time"], "action": entry.get("action")}) + "\n")
    with open(os.path.join(serving_dir, LOG_FILENAME), "a") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return version


def rollback(serving_dir: str, to_version: int, reason: str) -> int:
    """Republishes an earlier version as the newest one (the champion); returns the new version."""
    published = versions(serving_dir)
    if to_version not in published:
        raise PromotionError(f"no version {to_version} in {serving_dir}; published versions: "
                             f"{published or 'none'}")
    source = record(serving_dir, to_version)
    entry = {"action": "rollback", "source_version": to_version, "reason": reason,
             **{key: source.get(key) for key in ("run_id", "metrics", "thresholds", "data_fingerprint")}}
    return publish(serving_dir, lambda staging: shutil.copytree(
        version_dir(serving_dir, to_version), staging, ignore=shutil.ignore_patterns(RECORD_FILENAME)), entry)
