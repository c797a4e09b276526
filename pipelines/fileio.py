"""One I/O layer for local paths and object stores (``gs://``, ``s3://``, whatever else
Beam registers), on Beam's ``FileSystems``: the readers, the config validator and the
input fingerprints all go through it, so a path works the same wherever it points.

Object-store clients take their settings from Beam's pipeline options (e.g.
``--s3_endpoint_url``); ``configure`` hands the command line's options to ``FileSystems``
so that the driver reads with the same settings as the workers.
"""
from __future__ import annotations

import glob
import logging
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
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
    """The files a path or glob names, sorted; [] when none."""
    return sorted(match_sizes(pattern))


def match_sizes(pattern: str) -> dict[str, int]:
    """{path: size in bytes} of the files a path or glob names; {} when none.  A local
    pattern is expanded by ``glob`` (as the shell would), a remote one by the object
    store's own listing, which carries the sizes (one request, not one per object)."""
    if is_local(pattern):
        return {p: os.path.getsize(p) for p in glob.glob(pattern) if os.path.isfile(p)}
    try:
        result = FileSystems.match([pattern])[0]
    except Exception as err:  # missing bucket, no credentials, unreachable endpoint
        raise StorageError(f"{pattern}: cannot list: {_first_line(err)}") from None
    return {m.path: m.size_in_bytes for m in result.metadata_list}


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


def join(base: str, *parts: str) -> str:
    """``base/part/...`` for a local folder or a bucket prefix (``Path`` would fold the
    ``//`` of ``s3://``)."""
    return os.path.join(base, *parts) if is_local(base) else "/".join([base.rstrip("/"), *parts])


def exists(path: str) -> bool:
    return os.path.exists(path) if is_local(path) else FileSystems.exists(path)


@contextmanager
def _create(path: str) -> Iterator[BinaryIO]:
    """A new object (or local file) to write; it appears only when closed.  A failure is
    a ``StorageError`` naming the path (Beam's own logged traceback is silenced).  Only
    ``write_bytes`` and ``upload_tree`` use it, and their blocks do nothing but write to
    the object, so whatever fails inside one is the store's failure."""
    if is_local(path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            yield f
        return
    logging.disable(logging.ERROR)
    try:
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            yield f
    except Exception as err:
        raise StorageError(f"{path}: cannot write: {_first_line(err)}") from None
    finally:
        logging.disable(logging.NOTSET)


def write_bytes(path: str, data: bytes) -> None:
    """Write one object (or file) whole."""
    with _create(path) as f:
        f.write(data)


def list_tree(prefix: str) -> dict[str, int]:
    """{path relative to ``prefix``: size} of every object under a bucket prefix; {} for an
    empty prefix, and for a missing bucket too (Beam's S3 listing does not tell them
    apart): the stage runner's write probe is what reports a missing output bucket."""
    base = prefix.rstrip("/") + "/"
    try:
        found = FileSystems.match([base + "**"])[0].metadata_list
    except Exception as err:
        if "No files found" in str(err) or "not found" in str(err).lower():
            return {}
        raise StorageError(f"{prefix}: cannot list: {_first_line(err)}") from None
    return {m.path[len(base):]: m.size_in_bytes for m in found if m.path.startswith(base)}


def delete_tree(prefix: str, first: str | None = None) -> None:
    """Delete every object under a bucket prefix; ``first`` (a relative path, e.g. the
    completion marker) goes before the rest, so no reader sees it beside partial data."""
    names = list_tree(prefix)
    if first in names:
        FileSystems.delete([join(prefix, first)])
        del names[first]
    if names:
        FileSystems.delete([join(prefix, n) for n in sorted(names)])


def empty_files(local: Path) -> list[str]:
    """The zero-byte files of a folder, relative: Beam's S3 writer cannot create an empty
    object (a multipart upload of no parts is rejected), so they travel as a list."""
    return sorted(p.relative_to(local).as_posix() for p in local.rglob("*")
                  if p.is_file() and p.stat().st_size == 0)


def upload_tree(local: Path, prefix: str, last: str | None = None) -> int:
    """Copy a local folder's non-empty files under a bucket prefix (``empty_files`` says
    which are left out); objects already there with the same size (a Beam stage's shards,
    written there directly) are not sent again; ``last`` (the completion marker) is
    written after everything else.  Returns the files sent."""
    have = list_tree(prefix)
    files = sorted(p for p in local.rglob("*") if p.is_file() and p.stat().st_size)
    rel = lambda p: p.relative_to(local).as_posix()  # noqa: E731
    files.sort(key=lambda p: rel(p) == last)  # the marker last
    sent = 0
    for p in files:
        if have.get(rel(p)) == p.stat().st_size and rel(p) != last:
            continue
        with open(p, "rb") as src, _create(join(prefix, rel(p))) as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
        sent += 1
    return sent


def download_tree(prefix: str, local: Path, skip: tuple[str, ...] = ()) -> int:
    """Copy every object under a bucket prefix into a local folder, but those with a path
    part in ``skip``; returns the count."""
    names = [n for n in list_tree(prefix) if not set(n.split("/")) & set(skip)]
    for name in sorted(names):
        dest = local / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open_read(join(prefix, name)) as src, open(dest, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 22)
    return len(names)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
