"""Artifact files: name checks, atomic writes beside the store, and their metadata."""

from __future__ import annotations

import errno
import hashlib
import logging
import mimetypes
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from . import _held_files
from .errors import ArtifactError
from .model import Artifact
from .wire import is_unicode_text

__all__ = [
    "COPY_CHUNK",
    "STORE_MARKER",
    "FileId",
    "StagedArtifact",
    "SubmittedFile",
    "check_artifact_name",
    "check_submitted_files",
    "copy_artifact",
    "guess_media_type",
    "listed_artifact",
    "remove_artifact_dirs",
    "remove_unlisted_files",
    "replaced_since",
    "resolve_artifact",
    "take_task_folder",
    "task_artifact_dir",
    "write_artifact",
    "write_submitted_files",
]

logger = logging.getLogger("wfcore")


def check_artifact_name(name: str) -> str:
    """Return ``name`` if it is a safe relative path, else raise ArtifactError.

    A name is one or more path components separated by ``/`` (``report.txt``,
    ``plots/a.png``); it may not be empty, absolute, or contain ``.``/``..``
    components, backslashes or NUL bytes.
    """
    if not isinstance(name, str) or not name or not name.strip():
        raise ArtifactError("artifact name must be a non-empty string")
    if not is_unicode_text(name):
        raise ArtifactError(
            f"artifact name {name!r} is not Unicode text (a file name in another encoding?)"
        )
    if "\\" in name:
        raise ArtifactError(f"artifact name {name!r} may not contain backslashes")
    if not name.isprintable():
        # A newline or an escape code in a name would garble listings.
        raise ArtifactError(f"artifact name {name!r} may not contain control characters")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise ArtifactError(f"artifact name {name!r} must be relative, not absolute")
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise ArtifactError(f"artifact name {name!r} may not have empty, '.' or '..' components")
    if any(len(part.encode("utf-8")) > _MAX_PART_BYTES for part in parts):
        raise ArtifactError(
            f"artifact name {_shorten(name)!r}: each part between slashes may be at most "
            f"{_MAX_PART_BYTES} bytes"
        )
    return name


# What file systems allow in one path component, less room for the temporary
# file's prefix next to it.
_MAX_PART_BYTES = 240
# The most folders deep a new artifact may be (its parts between slashes): far
# more than any real layout needs, and far fewer than would make a path longer
# than a file system takes, or Python's recursion limit as the folders are made.
_MAX_PARTS = 100


def _check_new_name(name: str) -> None:
    """Check the name of an artifact about to be written: :func:`check_artifact_name`,
    and not too many parts (a name written before this check can still be read)."""
    check_artifact_name(name)
    if name.count("/") >= _MAX_PARTS:
        raise ArtifactError(
            f"artifact name {_shorten(name)!r}: at most {_MAX_PARTS} parts between "
            f"slashes, not {name.count('/') + 1}"
        )


def _shorten(text: str, keep: int = 60) -> str:
    return text if len(text) <= keep else f"{text[:keep]}..."


# Artifact files get the permissions of a file the process creates (0666 less the
# umask), not the owner-only ones of the temporary file they are written to.
# Read once, at import: setting the umask to read it is not thread-safe later.
_UMASK = os.umask(0)
os.umask(_UMASK)


def guess_media_type(name: str) -> str:
    """The media type for a file name, ``application/octet-stream`` when unknown."""
    media_type, _ = mimetypes.guess_type(name, strict=False)
    return media_type or "application/octet-stream"


#: The file in an artifacts folder naming the database it belongs to (written by
#: ``wfcore.stores.sqlite``), and the start of the temporary files it is written
#: to: no task's folder may take that name.
STORE_MARKER = ".wfcore-store"


def task_artifact_dir(root: Path, task_id: str) -> Path:
    """The folder holding one task's artifacts."""
    check_artifact_name(task_id)
    return root / task_id


def _folder_to_write(root: Path, task_id: str) -> Path:
    """The task's folder, for writing its files: refused for an id that would take
    the marker's place. (Reading and removing stay allowed: a store may hold such a
    folder from before this check.)"""
    folder = task_artifact_dir(root, task_id)
    if task_id.startswith(STORE_MARKER):
        raise ArtifactError(
            f"task {task_id!r} cannot have artifacts: its folder would take the place of "
            f"{root / STORE_MARKER}, the file naming the database the artifacts belong to; "
            f"give the task an id that does not start with {STORE_MARKER!r}"
        )
    return folder


def write_artifact(
    root: Path, task_id: str, name: str, data: bytes, phase: str | None = None
) -> Artifact:
    """Write ``data`` as the task's artifact ``name`` atomically and describe it.

    The bytes go to a temporary file in the target folder, are flushed to disk,
    and are renamed into place, so a reader sees the old file or the new one,
    never half of one.
    """
    return _write_chunks(root, task_id, name, (data,), phase)


#: Which file an artifact was written as: (device, inode, size, modified), which the
#: rename keeps (the size and time tell apart a later file given a freed inode).
FileId = tuple[int, int, int, int]


class StagedArtifact:
    """An artifact's file written beside its place, to be put there (:meth:`place`)
    just before its task's metadata is stored, and taken back (:meth:`undo`) if that
    fails: the file an add replaces stays until the add is sure to be stored."""

    def __init__(
        self, root: Path, task_id: str, name: str, data: bytes, phase: str | None = None
    ) -> None:
        self.artifact, self._tmp, self._file_id = _stage_chunks(root, task_id, name, (data,), phase)
        assert self.artifact.path is not None
        self._target = Path(self.artifact.path)
        self._kept: Path | None = None  # the file this one replaced, until stored
        self._placed = False

    def place(self) -> bool:
        """Put the file in place (once); whether the file in place is still this one
        (not replaced since by another add of the name: its metadata goes with it)."""
        if not self._placed:
            keep = Path(f"{self._tmp}.kept")
            try:
                os.link(self._target, keep)
                self._kept = keep
            except FileNotFoundError:
                pass  # nothing to keep: a new name
            except OSError:
                pass  # no hard links here: replaced without a way back, as ever
            os.replace(self._tmp, self._target)
            self._placed = True
            return True
        return not replaced_since(self._target, self._file_id, self.artifact.sha256)

    def settle(self) -> None:
        """The metadata is stored: the replaced file goes."""
        if self._kept is not None:
            self._kept.unlink(missing_ok=True)

    def undo(self) -> None:
        """The metadata was not stored: put back the file this one replaced (unless
        another add has replaced this one since), or take this new one away. Best
        effort: what went wrong before matters more than this, so a failure here is
        logged, naming the files."""
        try:
            if not self._placed:
                Path(self._tmp).unlink(missing_ok=True)
                return
            if not replaced_since(self._target, self._file_id, self.artifact.sha256):
                if self._kept is not None:
                    os.replace(self._kept, self._target)
                    self._kept = None
                else:
                    self._target.unlink(missing_ok=True)
            self.settle()
        except OSError as exc:
            logger.warning(
                "artifact %s: could not put back the file it replaced (%s): %s",
                self._target,
                self._kept or "none",
                exc,
            )


def replaced_since(path: Path, file_id: FileId, sha256: str) -> bool:
    """Whether another file, of other bytes, has replaced the one written at ``path``
    as ``file_id`` (by :class:`StagedArtifact`, whose artifact has ``sha256``).
    False when it cannot tell: a file system whose inode numbers change (some network
    shares) is checked by the bytes, and one that cannot be read counts as unchanged."""
    try:
        info = os.stat(path)
        if _file_id(info) == file_id:
            return False
        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            while chunk := fh.read(COPY_CHUNK):
                digest.update(chunk)
    except OSError:
        return False
    return digest.hexdigest() != sha256


def copy_artifact(
    root: Path,
    task_id: str,
    name: str,
    source: BinaryIO,
    phase: str | None = None,
    limit: int | None = None,
) -> Artifact:
    """Copy the open file ``source`` as the task's artifact ``name``, as
    :func:`write_artifact` writes bytes (atomically, flushed to disk).

    The file is streamed in chunks of :data:`COPY_CHUNK` bytes and hashed as it
    goes, so a large file never sits in memory. At most ``limit`` bytes are copied
    when it is given: a file something still appends to ends there.
    """
    return _write_chunks(root, task_id, name, _read_chunks(source, limit), phase)


#: How much of a file :func:`copy_artifact` holds in memory at a time.
COPY_CHUNK = 1024 * 1024


def _read_chunks(source: BinaryIO, limit: int | None) -> Iterator[bytes]:
    remaining = limit
    while remaining is None or remaining > 0:
        chunk = source.read(COPY_CHUNK if remaining is None else min(COPY_CHUNK, remaining))
        if not chunk:
            return
        if remaining is not None:
            remaining -= len(chunk)
        yield chunk


def _write_chunks(
    root: Path, task_id: str, name: str, chunks: Iterable[bytes], phase: str | None
) -> Artifact:
    artifact, tmp, _ = _stage_chunks(root, task_id, name, chunks, phase)
    assert artifact.path is not None
    try:
        os.replace(tmp, artifact.path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return artifact


def _stage_chunks(
    root: Path, task_id: str, name: str, chunks: Iterable[bytes], phase: str | None
) -> tuple[Artifact, str, FileId]:
    """Write the artifact's bytes to a temporary file beside its place, flushed to
    disk; return its description, the temporary file and its identity."""
    _check_new_name(name)
    base = _folder_to_write(root, task_id)
    target = base / name
    try:
        _check_layout(base, name)
        _check_inside(base, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise ArtifactError(
            f"artifact name {_shorten(name)!r} ({len(name.encode('utf-8'))} bytes) is too "
            f"long for a path in {base} on this system: use a shorter name"
        ) from None
    digest = hashlib.sha256()
    size = 0
    try:
        with os.fdopen(fd, "wb") as fh:
            for chunk in chunks:
                fh.write(chunk)
                digest.update(chunk)
                size += len(chunk)
            fh.flush()
            os.fchmod(fh.fileno(), 0o666 & ~_UMASK)
            os.fsync(fh.fileno())
            info = os.fstat(fh.fileno())
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None:
            # A failed write names no file ("No space left on device"): name the
            # artifact's, so that one can tell which disk is full.
            raise OSError(exc.errno, exc.strerror, str(target)) from exc
        raise
    artifact = Artifact(
        name=name,
        size=size,
        sha256=digest.hexdigest(),
        media_type=guess_media_type(name),
        phase=phase,
        path=str(target),
    )
    return artifact, tmp, _file_id(info)


def _file_id(info: os.stat_result) -> FileId:
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


#: What ``submit_task(artifacts=...)`` takes for each file: its bytes, or a local file.
SubmittedFile = bytes | bytearray | memoryview | os.PathLike[str]


def check_submitted_files(files: Any) -> dict[str, SubmittedFile]:
    """``submit_task``'s ``artifacts``, checked: a mapping of artifact names to bytes or
    paths of readable regular files, no name needing another as a folder. Raises
    ArtifactError naming the first problem."""
    if not isinstance(files, Mapping):
        raise ArtifactError(
            f"artifacts must be a dict of artifact names to bytes or paths, "
            f"not {type(files).__name__}"
        )
    checked: dict[str, SubmittedFile] = {}
    for name, value in files.items():
        if not isinstance(name, str):
            raise ArtifactError(f"artifact names must be text, not {name!r}")
        _check_new_name(name)
        if isinstance(value, str):
            raise ArtifactError(
                f"artifact {name!r}: a str is ambiguous: give the file's bytes, or a "
                "pathlib.Path to read it from"
            )
        if isinstance(value, os.PathLike):
            path = Path(value)
            try:
                mode = path.stat().st_mode
            except (FileNotFoundError, NotADirectoryError):
                raise ArtifactError(f"artifact {name!r}: {str(path)!r} does not exist") from None
            except OSError as exc:  # a name too long, a folder it may not look in
                raise ArtifactError(
                    f"artifact {name!r}: {str(path)!r} cannot be looked at: {exc.strerror or exc}"
                ) from None
            if not stat.S_ISREG(mode):
                raise ArtifactError(f"artifact {name!r}: {str(path)!r} is not a regular file")
            if not os.access(path, os.R_OK):
                raise ArtifactError(f"artifact {name!r}: {str(path)!r} cannot be read")
        elif not isinstance(value, (bytes, bytearray, memoryview)):
            raise ArtifactError(
                f"artifact {name!r}: give bytes or a pathlib.Path, not {type(value).__name__}"
            )
        checked[name] = value
    for name in checked:
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in checked:
                raise ArtifactError(
                    f"artifact name {name!r} needs {'/'.join(parts[:i])!r} as a folder, "
                    "but it is an artifact"
                )
    return checked


def take_task_folder(root: Path, task_id: str) -> bool:
    """Make a new task's artifact folder, and with it the right to write its submitted
    files: False when it exists, as another submission of the same task id made it
    (one whose task is stored, or being stored now)."""
    folder = _folder_to_write(root, task_id)
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir()
    except FileExistsError:
        return False
    return True


def write_submitted_files(
    root: Path, task_id: str, files: Mapping[str, SubmittedFile]
) -> list[Artifact]:
    """Store a new task's files (checked by :func:`check_submitted_files`) before the
    task itself, so that no phase can start without them; files are streamed. The
    caller has made the folder (:func:`take_task_folder`)."""
    written = []
    for name, value in files.items():
        if isinstance(value, os.PathLike):
            if _held_files.is_held(os.stat(value)):
                # Reading it would drop this process's locks on the store.
                raise ArtifactError(
                    f"artifact {name!r}: {os.fspath(value)!r} is the database of a store "
                    "open in this process: submit a backup of it instead"
                )
            with open(value, "rb") as source:
                written.append(copy_artifact(root, task_id, name, source))
        else:
            written.append(write_artifact(root, task_id, name, bytes(value)))
    return written


def _check_layout(base: Path, name: str) -> None:
    """Refuse a name that needs an existing artifact as a folder, or the reverse."""
    parts = name.split("/")
    for i in range(1, len(parts)):
        prefix = "/".join(parts[:i])
        if (base / prefix).is_file():
            raise ArtifactError(
                f"artifact name {name!r} needs {prefix!r} as a folder, but it is an artifact"
            )
    if (base / name).is_dir():
        raise ArtifactError(f"artifact name {name!r} is a folder of other artifacts")


def _check_inside(base: Path, name: str) -> None:
    """Refuse a name whose folder leads out of the task's folder through a symbolic
    link in it: :func:`resolve_artifact` would refuse to read the file back."""
    real_base = base.resolve()
    folder = (base / name).parent.resolve()
    if folder == real_base or real_base in folder.parents:
        return
    parts = name.split("/")
    link = next(
        (
            "/".join(parts[:i])
            for i in range(1, len(parts))
            if (base / "/".join(parts[:i])).is_symlink()
        ),
        parts[0],  # a link made and gone since, say
    )
    raise ArtifactError(
        f"artifact name {_shorten(name)!r}: {link!r} in {base} is a symbolic link to "
        f"{(base / link).resolve()}, out of the task's folder, so the file could not be "
        "read back: remove the link, or use another name"
    )


def remove_artifact_dirs(root: Path, task_ids: Iterable[str]) -> None:
    """Delete the artifact folders of these tasks (those that have one). A folder
    that cannot be deleted (a read-only disk, a task folder that is a link) is
    logged, naming it: its task is gone, so nothing else would ever delete it."""
    for task_id in task_ids:
        try:
            folder = task_artifact_dir(root, task_id)
        except ArtifactError:
            continue  # an id that cannot name a folder never had one
        shutil.rmtree(folder, ignore_errors=True)  # as much as can go
        if not os.path.lexists(folder):
            continue
        try:
            shutil.rmtree(folder)  # again, for the reason what is left stays
        except FileNotFoundError:
            continue  # deleted meanwhile by someone else
        except OSError as exc:
            logger.warning(
                "task %s: could not delete its artifact files in %s (%s): delete them by hand",
                task_id,
                folder,
                exc.strerror or exc,
            )


def remove_unlisted_files(root: Path, task_id: str, listed: Iterable[str]) -> list[str]:
    """Delete the files in a task's folder that none of its ``listed`` artifacts
    names, and the folders left empty; return the names of the files deleted.

    For the worker taking over a task whose worker died mid-phase: the files that
    phase wrote (in place as it wrote them, named in the task only when the phase
    ends) and the hidden ``.tmp-*`` file of one it was still writing. Left behind,
    they would stand in the way of the rerun's own files (a file ``a`` refuses an
    artifact ``a/b``) and take room until the task is purged. Only regular files
    go; symbolic links stay, and are not followed. Best effort: what cannot be
    deleted is logged and left.
    """
    if "/" in task_id:
        return []  # an id from before ids were checked: its folder may hold others'
    try:
        base = task_artifact_dir(root, task_id)
    except ArtifactError:
        return []  # an id that cannot name a folder has no files
    if base.is_symlink() or not base.is_dir():
        return []  # none, or a link put there by hand: left alone, as purge leaves it
    keep = set(listed)
    removed: list[str] = []
    for folder, dirs, files in os.walk(base, topdown=False):
        here = Path(folder)
        prefix = here.relative_to(base).as_posix()
        for name in files:
            relative = name if prefix == "." else f"{prefix}/{name}"
            if relative in keep:
                continue
            path = here / name
            try:
                if not stat.S_ISREG(path.lstat().st_mode):
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                logger.warning(
                    "task %s: could not delete %s, left by a killed worker: %s",
                    task_id,
                    path,
                    exc.strerror or exc,
                )
                continue
            removed.append(relative)
        for name in dirs:
            try:
                (here / name).rmdir()  # only when empty; a link to a folder is no folder
            except OSError:
                pass
    return removed


def listed_artifact(root: Path, task_id: str, name: str) -> Path:
    """The path of the file of an artifact the task lists, as :func:`resolve_artifact`
    finds it; a file that is gone is said to be, rather than the artifact unknown."""
    try:
        return resolve_artifact(root, task_id, name)
    except ArtifactError:
        folder = task_artifact_dir(root, task_id)
        if os.path.lexists(folder / name):
            raise  # there, but not a file inside the folder
        raise ArtifactError(
            f"task {task_id!r} lists the artifact {name!r}, but its file is not in "
            f"{folder}: it was deleted or moved after the task stored it (a store "
            "copied or restored without its artifacts folder, say)"
        ) from None


def resolve_artifact(root: Path, task_id: str, name: str) -> Path:
    """The path of an existing artifact file, checked to stay inside the task's folder."""
    check_artifact_name(name)
    base = task_artifact_dir(root, task_id).resolve()
    path = (base / name).resolve()
    if base not in path.parents:
        raise ArtifactError(f"artifact name {name!r} leaves the artifact folder")
    if not path.is_file():
        raise ArtifactError(f"task {task_id!r} has no artifact {name!r}")
    return path
