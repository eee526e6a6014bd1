"""Provenance and safe output: code version, spec hashes, and writes that never leave a half-written file.

Every artefact records the code version and the settings that made it; every output is written to a
temporary name in the same directory and renamed only once it is complete.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_REPO_ROOT = Path(__file__).resolve().parent.parent


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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
