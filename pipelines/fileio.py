"""One I/O layer for local paths and object stores (``gs://``, ``s3://``, whatever else
Beam registers), on Beam's ``FileSystems``: the readers, the config validator and the
input fingerprints all go through it, so a path works the same wherever it points.

Object-store clients take their settings from Beam's pipeline options (e.g.
``--s3_endpoint_url``); ``configure`` hands the command line's options to ``FileSystems``
so that the driver reads with the same settings as the workers.
"""
from __future__ import annotations

import glob
from typing import BinaryIO

from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems


class StorageError(FileNotFoundError):
    """A path that cannot be matched or read: missing bucket or object, no access."""


def configure(beam_args: list[str]) -> None:
    """Let the driver's FileSystems calls use the run's Beam options (S3 endpoint, keys...)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions(list(beam_args)))


def is_local(path: str) -> bool:
    return FileSystems.get_scheme(path) is None


def match(pattern: str) -> list[str]:
    """The files a path or glob names, sorted; [] when none.  A local pattern is expanded
    by ``glob`` (as the shell would), a remote one by the object store's own listing."""
    if is_local(pattern):
        return sorted(glob.glob(pattern))
    try:
        result = FileSystems.match([pattern])[0]
    except Exception as err:  # missing bucket, no credentials, unreachable endpoint
        raise StorageError(f"{pattern}: cannot list: {_first_line(err)}") from None
    return sorted(m.path for m in result.metadata_list)


def expand(pattern: str) -> list[str]:
    """``match``, or the pattern itself where nothing matches (the reader then says what
    is missing)."""
    return match(pattern) or [pattern]


def open_read(path: str) -> BinaryIO:
    if is_local(path):
        return open(path, "rb")
    try:
        return FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED)
    except Exception as err:
        raise StorageError(f"{path}: cannot read: {_first_line(err)}") from None


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def checksum(path: str) -> str:
    """What identifies a remote object's content without reading it (the store's ETag,
    CRC or MD5), with its size."""
    meta = FileSystems.match([path])[0].metadata_list[0]
    return f"{FileSystems.checksum(path)}:{meta.size_in_bytes}"


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
