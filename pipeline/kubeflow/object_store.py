"""run-local's object store: an S3 API server on loopback (moto's server mode), and the launcher's
copies to and from it, ported from KFP's backend/src/v2/objectstore/object_store.go.

MinIO and SeaweedFS, KFP's own stores, are in neither PyPI nor Debian; moto speaks the same S3 API
to the same client calls (list by prefix, get, put). Nothing leaves this machine: the server listens
on 127.0.0.1 only, and the steps' containers have no network at all, so they can reach the
artifacts only through what the launcher copies onto their local paths.
"""
import logging
import os
from typing import List, Tuple

ACCESS_KEY = "run-local"  # moto accepts any key; KFP's launcher reads its own from a secret
REGION = "us-east-1"


class ObjectStoreError(RuntimeError):
    """A copy to or from the store failed; the message names the URI."""


def key_from_uri(uri: str) -> Tuple[str, str]:
    """(bucket, key) of minio://BUCKET/KEY or s3://BUCKET/KEY (objectstore Config.KeyFromURI)."""
    scheme, sep, rest = uri.partition("://")
    if not sep or scheme not in ("minio", "s3"):
        raise ObjectStoreError(f"{uri!r} is not an S3 URI (minio:// or s3://)")
    bucket, _, key = rest.partition("/")
    return bucket, key.rstrip("/")


def is_key_under_prefix(key: str, prefix: str) -> bool:
    """isBlobKeyUnderPrefix: the key itself, or under prefix + '/' (not a sibling sharing its start)."""
    prefix = prefix.rstrip("/")
    return key == prefix or key.startswith(prefix + "/")


def sanitize_download_path(local_dir: str, prefix: str, key: str) -> str:
    """sanitizeDownloadPath: where an object goes below local_dir, refusing a key that escapes it."""
    if ".." in key.split("/"):
        raise ObjectStoreError(f"path traversal: the key {key!r} has a '..' part")
    relative = os.path.relpath(key, prefix) if key != prefix else ""
    path = os.path.abspath(os.path.join(local_dir, relative))
    if path != os.path.abspath(local_dir) and not path.startswith(os.path.abspath(local_dir) + os.sep):
        raise ObjectStoreError(f"path traversal: the key {key!r} resolves outside {local_dir}")
    return path


class S3Server:
    """moto's S3 server on 127.0.0.1, on a free port, for as long as the `with` block lasts."""

    def __init__(self, buckets: List[str]):
        from moto.server import ThreadedMotoServer
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._buckets = buckets
        self.endpoint = ""

    def __enter__(self) -> "S3Server":
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        client = self.client()
        for bucket in self._buckets:
            client.create_bucket(Bucket=bucket)
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop()

    def client(self):
        import boto3
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=ACCESS_KEY, region_name=REGION)


class Store:
    """The launcher's two copies, against one S3 endpoint."""

    def __init__(self, client):
        self._client = client

    def list_keys(self, uri: str) -> List[Tuple[str, int]]:
        """(key, size) of every object under the URI's key prefix."""
        bucket, prefix = key_from_uri(uri)
        found = []
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found += [(item["Key"], item["Size"]) for item in page.get("Contents", [])]
        return found

    def download_blob(self, uri: str, local_dir: str) -> int:
        """DownloadBlob: every object listed under the URI's prefix, copied below local_dir; keys that
        share the prefix without being under it are skipped. Returns the number of files."""
        bucket, prefix = key_from_uri(uri)
        copied = 0
        for key, _ in self.list_keys(uri):
            if not is_key_under_prefix(key, prefix):
                continue
            path = sanitize_download_path(local_dir, prefix, key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                self._client.download_file(bucket, key, path)
            except Exception as error:  # botocore's errors, named in the message
                raise ObjectStoreError(f"failed to download input artifact from {uri}: key {key}: {error}") from error
            copied += 1
        return copied

    def upload_blob(self, local_path: str, uri: str) -> int:
        """UploadBlob: a file, or every file below a folder, to the URI's key (files only: an empty
        folder is not uploaded). Returns the number of files; FileNotFoundError when nothing is there."""
        if not os.path.exists(local_path):
            raise FileNotFoundError(local_path)
        bucket, key = key_from_uri(uri)
        if not os.path.isdir(local_path):
            self._client.upload_file(local_path, bucket, key)
            return 1
        uploaded = 0
        for entry in sorted(os.listdir(local_path)):
            uploaded += self.upload_blob(os.path.join(local_path, entry), f"{uri.rstrip('/')}/{entry}")
        return uploaded
