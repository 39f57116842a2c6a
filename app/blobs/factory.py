"""The blob store the settings choose: the local folder, or S3-compatible object storage."""

from __future__ import annotations

from app.blobs.store import BlobStore, LocalBlobStore
from app.config import Settings


def create_blob_store(settings: Settings) -> BlobStore:
    """``BLOB_STORE=local`` (the default): the folder ``BLOB_DIR``; ``s3://bucket/prefix``: that
    bucket (``S3_ENDPOINT_URL`` for a service other than AWS). Request bodies are spooled under
    ``BLOB_DIR`` either way."""
    location = settings.s3_location
    if location is None:
        return LocalBlobStore(settings.blob_dir)
    from app.blobs.s3 import S3BlobStore  # aiobotocore is imported only when it is used

    return S3BlobStore(
        location.bucket,
        location.prefix,
        spool_root=settings.blob_dir,
        endpoint_url=settings.s3_endpoint_url,
        addressing_style=settings.s3_addressing_style,
    )
