"""Provenance and safe output: code version and fingerprints, spec hashes, writes that never leave a half-written
file, copies that share no storage, and exclusive locks.

Every artefact records the code version and the settings that made it; every output is written to a temporary name
in the same directory and renamed only once it is complete, with the permissions the user's umask gives (never
0600: a cluster group reads its members' results); a stage that writes a file others may write too holds a lock.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import errno
import fcntl
import functools
import hashlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parent.parent
_CORE = Path(__file__).resolve().parent
_UMASK = os.umask(0)
os.umask(_UMASK)  # read once, at import (before any thread exists): os.umask can only be read by setting it
FICLONE = 0x40049409  # ioctl: a copy-on-write clone (btrfs, XFS), else a plain copy


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=_REPO_ROOT, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def code_version() -> str:
    """The git commit of the code (``+dirty`` when core/, rules/ or the Snakefile have changes), or ``unknown``.

    ``DIFFUSION_STUDY_CODE_VERSION`` overrides it (for installs without a git checkout).
    """
    env = os.environ.get("DIFFUSION_STUDY_CODE_VERSION")
    if env:
        return env
    try:
        commit = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "core", "rules", "Snakefile")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def spec_hash(spec: Any) -> str:
    """A short, stable hash of a JSON-serialisable spec (key order does not matter)."""
    return hashlib.sha256(canonical_json(spec).encode()).hexdigest()[:16]


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def provenance(spec: Any = None, **extra: Any) -> dict[str, Any]:
    """The record stored beside an artefact: code version, time, spec and its hash, plus ``extra``."""
    record: dict[str, Any] = {"code_version": code_version(), "created": now_iso()}
    if spec is not None:
        record["spec"] = spec
        record["spec_hash"] = spec_hash(spec)
    record.update(extra)
    return record


def file_mode(read_only: bool = False) -> int:
    """The mode a new file gets under the user's umask (read-only: without write bits)."""
    return (0o444 if read_only else 0o666) & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds. The file gets
    the umask's mode (mkstemp's would be 0600). A full disk is reported as such, naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
        except (OSError, RuntimeError) as err:
            raise_if_disk_full(err, path)
            raise
        if tmp_path.exists():
            os.chmod(tmp_path, file_mode())
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def raise_if_disk_full(err: BaseException, path: str | os.PathLike[str]) -> None:
    """Re-raise a write error caused by a full disk (or quota) as OSError(ENOSPC) naming ``path`` and the free
    space. torch and HDF5 report it as "basic_ios::clear: iostream error", "file write failed" or "unexpected pos":
    the space left on the file system (the partial file still on it) decides."""
    folder = Path(path).parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        free = -1
    chain, e = [], err
    while e is not None and len(chain) < 8:
        chain.append(e)
        e = e.__context__
    nospace = any(isinstance(x, OSError) and x.errno in (errno.ENOSPC, errno.EDQUOT) for x in chain)
    wording = any(w in str(x) for x in chain for w in ("iostream error", "write failed", "unexpected pos"))
    if nospace or (0 <= free < 1 << 20) or (wording and 0 <= free < 64 << 20):
        raise OSError(
            errno.ENOSPC,
            f"no space left on device while writing {path} ({free / 2**20:.1f} MiB free in {folder}); free some "
            "space or point results_dir elsewhere, then rerun (the previous complete file, if any, is untouched)",
        ) from err


def clone(src: str | os.PathLike[str], dst: str | os.PathLike[str], read_only: bool = False) -> None:
    """Copy ``src`` to ``dst`` atomically as an independent file: a copy-on-write clone where the file system has
    them, else a byte copy; never a hard link (changing one must never change the other)."""
    dst = Path(dst)
    with atomic_path(dst) as tmp, open(src, "rb") as fi, open(tmp, "wb") as fo:
        try:
            fcntl.ioctl(fo.fileno(), FICLONE, fi.fileno())
        except OSError:
            shutil.copyfileobj(fi, fo, 16 << 20)
    if read_only:
        os.chmod(dst, file_mode(read_only=True))


def share(src: str | os.PathLike[str], dst: str | os.PathLike[str], read_only: bool = False) -> None:
    """``dst`` as a second name of ``src`` (a hard link, put in place atomically), or a ``clone`` where the file
    system has no hard links. Only for files that are never written in place but replaced whole (``atomic_path``,
    as every checkpoint is): replacing ``src`` later gives it a new file and leaves ``dst`` as it was, so a kept
    checkpoint costs its disk once, not once per name. ``read_only`` applies to the file (both names)."""
    dst = Path(dst)
    if dst.exists() and os.path.samefile(src, dst):
        if read_only:
            os.chmod(dst, file_mode(read_only=True))
        return
    tmp = dst.with_name(f".{dst.name}.link-{os.getpid()}")
    try:
        os.link(src, tmp)
    except OSError:
        clone(src, dst, read_only)
        return
    if read_only:
        os.chmod(tmp, file_mode(read_only=True))
    os.replace(tmp, dst)


class Busy(RuntimeError):
    """Another process holds the lock of what this one was about to write."""


LOCKS_ENV = "DIFFUSION_STUDY_LOCKS"  # auto | flock | file
NETWORK_FS = ("nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "ceph", "glusterfs", "pvfs2", "orangefs")


def filesystem_type(path: str | os.PathLike[str]) -> str:
    """The type of the file system that holds ``path`` (``/proc/self/mountinfo``; "" where unknown)."""
    target, best, fstype = os.path.realpath(path), "", ""
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields, _, rest = line.partition(" - ")
                mount = fields.split()[4].replace("\\040", " ")
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best):
                    best, fstype = mount, rest.split()[0]
    except (OSError, IndexError):
        return ""
    return fstype


def lock_kind(lock: Path) -> str:
    """``flock`` (this host's kernel arbitrates) or ``file`` (an O_EXCL lock file naming host and pid, which works
    across the nodes of a cluster file system where flock is missing or node-local). ``DIFFUSION_STUDY_LOCKS``
    chooses; ``auto`` takes ``file`` on the network file systems of ``NETWORK_FS``."""
    kind = os.environ.get(LOCKS_ENV, "auto").strip() or "auto"
    if kind not in ("auto", "flock", "file"):
        raise ValueError(f"{LOCKS_ENV}={kind!r}: expected auto, flock or file")
    if kind == "auto":
        fstype = filesystem_type(lock.parent)
        kind = "file" if fstype.split(".")[0] in NETWORK_FS else "flock"
    return kind


def _me() -> str:
    return f"host {socket.gethostname()}, pid {os.getpid()}, cwd {os.getcwd()}, since {now_iso()}"


def _busy(what: str, holder: str, lock: Path, extra: str = "") -> Busy:
    return Busy(
        f"{what} is being written by another run ({holder or 'unknown'}; lock {lock}). Wait for it to finish, or "
        f"stop it; two runs writing one results folder would corrupt each other's files{extra}"
    )


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _file_lock(lock: Path, what: str) -> Iterator[None]:
    """The O_EXCL lock file ``<lock>.held`` with this process's host and pid, removed on exit. One left by a dead
    process of this host is taken over (saying so); one of another host is reported with how to clear it."""
    held = lock.with_name(lock.name + ".held")
    me = _me()
    for _ in range(2):
        try:
            fd = os.open(held, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_UMASK)
            break
        except FileExistsError:
            try:
                holder = held.read_text().strip()
            except OSError:
                holder = ""
            host = holder.split(",")[0].removeprefix("host ")
            pid = holder.split(",")[1].strip().removeprefix("pid ") if holder.count(",") >= 1 else ""
            if host == socket.gethostname() and pid.isdigit() and not _pid_alive(int(pid)):
                print(
                    f"[lock] {held} was left by process {pid} of this host, which has ended: taking it over", flush=True
                )
                held.unlink(missing_ok=True)
                continue
            raise _busy(
                what, holder, held, f". If no such run is alive on {host or 'that host'}, delete {held}"
            ) from None
    else:
        raise _busy(what, "", held)
    try:
        os.write(fd, me.encode())
        os.close(fd)
        yield
    finally:
        with contextlib.suppress(OSError):
            if held.read_text().strip() == me:  # never remove another run's lock
                held.unlink()


@contextlib.contextmanager
def exclusive(lock: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold an exclusive lock while writing ``what``: ``flock`` on the file ``lock`` (created if need be; it stays,
    since removing it would race), or where flock is unavailable or unreliable (``lock_kind``; flock failing with
    ENOSYS/ENOLCK/EOPNOTSUPP, as on some Lustre and NFS mounts) the lock file ``<lock>.held``. A second writer —
    another working directory pointed at the same results, another job — fails at once with ``Busy`` naming the
    holder (host, pid, working directory, start time)."""
    lock = Path(lock)
    lock.parent.mkdir(parents=True, exist_ok=True)
    if lock_kind(lock) == "file":
        with _file_lock(lock, what):
            yield
        return
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            raise _busy(what, holder, lock) from None
        except OSError as err:
            if err.errno not in (errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
                raise
            os.close(fd)
            fd = -1
            print(
                f"[lock] flock does not work on {lock.parent} ({filesystem_type(lock.parent) or 'unknown fs'}: "
                f"{err.strerror}); using the lock file {lock.name}.held (host and pid) instead; set "
                f"{LOCKS_ENV}=file to choose it from the start",
                flush=True,
            )
            with _file_lock(lock, what):
                yield
            return
        os.ftruncate(fd, 0)
        os.pwrite(fd, _me().encode(), 0)
        yield
    finally:
        if fd >= 0:
            os.close(fd)  # releases the lock


# ---- code fingerprints ----------------------------------------------------------------------------------------


def _imports(module_file: Path) -> set[str]:
    """The ``core`` modules a file imports (statically: ``import core.x``, ``from core.x import y``,
    ``from core import x``)."""
    tree = ast.parse(module_file.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("core.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "core":
                found |= {f"core.{a.name}" for a in node.names}
            elif node.module.startswith("core."):
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _module_file(module: str) -> Path | None:
    rel = Path(*module.split(".")[1:])
    for candidate in (_CORE / rel.with_suffix(".py"), _CORE / rel / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.cache
def code_fingerprint(stage: str) -> dict[str, Any]:
    """The code a stage runs: the SHA-256 of every ``core`` module it imports, directly or not (``core.stages.<stage>``
    and the closure of its static imports, plus the schema when it is read), and one digest of them all. Cheap
    (reads source files, imports nothing), so planning can compute it too."""
    todo, files = [f"core.stages.{stage}"], {}
    while todo:
        module = todo.pop()
        path = _module_file(module)
        if path is None or module in files:
            continue
        files[module] = hashlib.sha256(path.read_bytes()).hexdigest()
        todo += sorted(_imports(path))
    if "core.config" in files:
        files["core/config.schema.yaml"] = hashlib.sha256((_CORE / "config.schema.yaml").read_bytes()).hexdigest()
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()
    return {"stage": stage, "sha256": digest, "modules": dict(sorted(files.items()))}


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """A JSON file's content; ValueError naming the file when it is not valid JSON (e.g. truncated)."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(
            f"{path} is not valid JSON ({err}): it was truncated or changed; delete it and rerun"
        ) from None


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
