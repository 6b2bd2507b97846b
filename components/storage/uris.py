"""Which back end a location belongs to, and how names join under it: ``gs://bucket/key`` URIs
for GCS, anything else a local path."""

from __future__ import annotations

import os

from components.errors import UserError

GCS_SCHEME = "gs://"


def is_gcs(uri: str) -> bool:
    """Whether ``uri`` is a ``gs://`` URI (anything else is a local path)."""
    return isinstance(uri, str) and uri.startswith(GCS_SCHEME)


def split_gcs_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/some/key`` -> ``("bucket", "some/key")``; the key may be empty."""
    if not is_gcs(uri):
        raise UserError(f"not a GCS URI: {uri!r}; expected gs://bucket/key")
    bucket, _, key = uri[len(GCS_SCHEME):].partition("/")
    if not bucket:
        raise UserError(f"GCS URI without a bucket: {uri!r}; expected gs://bucket/key")
    return bucket, key


def join(base: str, *names: str) -> str:
    """Join path components under ``base``: ``/`` for GCS, ``os.path.join`` for local paths."""
    if not is_gcs(base):
        return os.path.join(base, *names)
    parts = [base.rstrip("/")] + [name.strip("/") for name in names if name.strip("/")]
    return "/".join(parts)
