"""Image-folder datasets at planning time: their layouts, the folder structure, a fingerprint of the tree, and
size requirements — cheap (folders only, no image is opened) and free of heavy imports (no numpy, no torch), so that
Snakemake can check a dataset before any job runs. Decoding and writing are ``core.ingest``'s; the rules of each
layout are in its docstring.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

LAYOUTS = ("imagenet100", "sysu-shapes", "folder")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
_IGNORED_DIRS = ("__MACOSX",)

_TREES = {
    "imagenet100": "{root}/\n  ├── train/<class>/*.JPEG\n  └── validation/<class>/*.JPEG",
    "sysu-shapes": (
        "{root}/\n  └── <category>/\n        ├── images/*.jpg      (taken)\n"
        "        └── annotations/, contours/, ...   (ignored)"
    ),
    "folder": (
        "{root}/<class>/*.jpg\n  or\n{root}/\n  ├── train/<class>/*.jpg\n  └── val/<class>/*.jpg   "
        "(optional; `validation/` also accepted)"
    ),
}


def expected_layout(layout: str, root: str | os.PathLike[str]) -> str:
    """A small tree drawing of ``layout`` under ``root``, for error messages."""
    return f"expected layout '{layout}':\n" + _TREES[layout].format(root=str(root).rstrip("/"))


def source_error(kind: type[Exception], what: str, layout: str, root: Path, config_key: str) -> Exception:
    return kind(f"{what} (config key {config_key} = {str(root)!r})\n{expected_layout(layout, root)}")


def spec_key(config_key: str) -> str:
    """``datasets.<name>`` from ``datasets.<name>.path`` (the prefix of the spec's other keys)."""
    return config_key.rsplit(".", 1)[0] if config_key.endswith(".path") else config_key


def os_reason(path: str | os.PathLike[str], err: OSError) -> str:
    """Why ``path`` could not be examined, in words."""
    if err.errno == errno.ELOOP:
        return "symbolic link loop"
    if err.errno == errno.ENOENT and os.path.islink(path):
        return "broken symbolic link"
    return f"{type(err).__name__}: {err.strerror or err}"


def file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "folder"),
    ):
        if test(mode):
            return name
    return f"mode {stat.filemode(mode)}"


def _folder_problem(path: Path) -> tuple[type[Exception], str] | None:
    """None when ``path`` is a folder (symbolic links followed), else the error type and what is wrong."""
    try:
        st = os.stat(path)
    except OSError as err:
        if err.errno == errno.ENOENT and not os.path.islink(path):
            return FileNotFoundError, "does not exist"
        return OSError, f"cannot be read ({os_reason(path, err)})"
    return None if stat.S_ISDIR(st.st_mode) else (NotADirectoryError, "is not a folder")


def _subdirs(path: Path) -> tuple[list[str], dict[str, str]]:
    """The visible sub-folders of ``path`` (sorted names), and ``{name: reason}`` of the visible entries whose
    type cannot be determined (symbolic link loops, broken links, failing ``stat``): they may be folders.
    Raises OSError when ``path`` cannot be listed."""
    folders: list[str] = []
    unknown: dict[str, str] = {}
    with os.scandir(path) as it:
        entries = [e for e in it if not e.name.startswith(".") and e.name not in _IGNORED_DIRS]
    for e in entries:
        try:
            if e.is_dir():
                folders.append(e.name)
            elif e.is_symlink() and not e.is_file():
                os.stat(e.path)  # a link to a pipe or device resolves: not a folder, ignored like files
        except OSError as err:
            unknown[e.name] = os_reason(e.path, err)
    return sorted(folders), dict(sorted(unknown.items()))


def _folder_split_dirs(names: set[str]) -> dict[str, str] | None:
    """For the ``folder`` layout: ``{split: folder}`` when the sub-folder ``names`` of the root are split folders,
    else None (flat)."""
    if "train" not in names:
        return None
    if not names & {"val", "validation", "test"}:
        return None if names != {"train"} else {"train": "train"}
    if not names <= {"train", "val", "validation"} or {"val", "validation"} <= names:
        return {"train": "train", "val": "ambiguous"}
    val = next((v for v in ("val", "validation") if v in names), None)
    return {"train": "train"} | ({"val": val} if val else {})


@dataclasses.dataclass
class Source:
    """Where each split's classes live: ``class_dirs[split][class] = folder of its image files``;
    ``unreadable[split][class] = (path, reason)`` for class folders that cannot be examined (still classes, with
    no files); ``folders`` lists every folder examined, for ``source_fingerprint``."""

    layout: str
    root: Path
    class_names: list[str]
    class_dirs: dict[str, dict[str, Path]]
    has_val: bool
    unreadable: dict[str, dict[str, tuple[str, str]]] = dataclasses.field(default_factory=dict)
    folders: list[Path] = dataclasses.field(default_factory=list)


def resolve(layout: str, root: str | os.PathLike[str], config_key: str) -> Source:
    """Check the folder structure (folders only; no file listing, no decoding) and map splits to class folders."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown dataset source {layout!r} (config key {config_key}); known: {', '.join(LAYOUTS)}")
    root = Path(root)

    def fail(kind: type[Exception], what: str) -> Exception:
        return source_error(kind, what, layout, root, config_key)

    def listed(folder: Path) -> tuple[list[str], dict[str, str]]:
        try:
            return _subdirs(folder)
        except OSError as err:
            raise fail(OSError, f"folder {folder} cannot be listed ({os_reason(folder, err)})") from None

    problem = _folder_problem(root)
    if problem:
        raise fail(problem[0], f"dataset folder {root} {problem[1]}")
    folders = [root]
    if layout == "sysu-shapes":
        found, unknown = listed(root)
        categories = sorted([*found, *unknown])
        if not categories:
            raise fail(FileNotFoundError, f"no category folders in {root}")
        unreadable = {c: (str(root / c), why) for c, why in unknown.items()}
        missing = []
        for c in found:
            problem = _folder_problem(root / c / "images")
            if problem is None:
                folders.append(root / c / "images")
            elif problem[0] is OSError:
                unreadable[c] = (str(root / c / "images"), problem[1])
            else:
                missing.append(f"{root / c / 'images'} ({problem[1]})")
        if missing:
            raise fail(FileNotFoundError, f"category folder(s) without an images/ folder: {', '.join(missing)}")
        dirs = {"train": {c: root / c / "images" for c in categories}}
        return Source(layout, root, categories, dirs, False, {"train": unreadable}, folders)
    if layout == "imagenet100":
        split_dirs = {"train": "train", "val": "validation"}
    else:
        top, top_unknown = listed(root)
        split_dirs = _folder_split_dirs({*top, *top_unknown}) or {"train": "."}
        if split_dirs.get("val") == "ambiguous":
            raise fail(
                ValueError,
                f"{root} mixes split folders with other folders ({', '.join(sorted([*top, *top_unknown]))}): split "
                "mode takes train/ plus one of val/ or validation/ and nothing else (rename test/ to val/ to use it)",
            )
    dirs: dict[str, dict[str, Path]] = {}
    unreadable_all: dict[str, dict[str, tuple[str, str]]] = {}
    for split, folder in split_dirs.items():
        base = root / folder if folder != "." else root
        problem = _folder_problem(base)
        if problem:
            what = "is missing" if problem[0] is FileNotFoundError else problem[1]
            raise fail(problem[0], f"split folder {base} {what}")
        found, unknown = listed(base)
        classes = sorted([*found, *unknown])
        if not classes:
            raise fail(FileNotFoundError, f"no class folders in {base}")
        if base != root:
            folders.append(base)
        folders += [base / c for c in found]
        dirs[split] = {c: base / c for c in classes}
        unreadable_all[split] = {c: (str(base / c), why) for c, why in unknown.items()}
    class_names = list(dirs["train"])
    if "val" in dirs:
        extra = sorted(set(dirs["val"]) - set(class_names))
        if extra:
            raise fail(
                ValueError,
                f"class folder(s) in {root / split_dirs['val']} but not in {root / 'train'}: {', '.join(extra[:10])}",
            )
    return Source(layout, root, class_names, dirs, "val" in dirs, unreadable_all, folders)


def _report_unreadable_folders(src: Source, config_key: str, on_error: str | None) -> None:
    bad = [f"{path}: {why}" for split in src.unreadable.values() for path, why in split.values()]
    if not bad:
        return
    if on_error == "fail":
        raise source_error(
            OSError,
            f"{len(bad)} unreadable class folder(s):\n  " + "\n  ".join(bad) + "\nFix or remove them, or set "
            f"{spec_key(config_key)}.on_error: skip to skip them",
            src.layout,
            src.root,
            config_key,
        )
    for line in bad:
        print(f"[ingest] warning: unreadable class folder {line} ({config_key})", file=sys.stderr, flush=True)


def source_summary(
    layout: str, root: str | os.PathLike[str], config_key: str, on_error: str | None = None
) -> dict[str, Any]:
    """``{"classes": [...], "has_val": bool}`` of the image folder ``root`` as far as its folders tell (cheap:
    lists folders only, no files; runs at planning time). ``classes`` are the class folders in label order
    before empty ones are found (``empty_classes: drop`` may drop some at ingestion); ``has_val``: the data has
    a val split of its own (not a ``val_fraction`` hold-out).

    Raises as ``check_source``. Class folders that cannot be examined (e.g. a symbolic link loop) are counted as
    classes and named on stderr, or, with ``on_error="fail"`` (the spec's value), raised as one OSError."""
    src = resolve(layout, root, config_key)
    _report_unreadable_folders(src, config_key, on_error)
    return {"classes": list(src.class_names), "has_val": src.has_val}


def check_source(layout: str, root: str | os.PathLike[str], config_key: str, on_error: str | None = None) -> None:
    """Raise FileNotFoundError/NotADirectoryError/OSError/ValueError naming the missing (or unreadable, or not a
    folder) folder, the expected layout and ``config_key`` unless ``root`` has the folder structure of
    ``layout``. Cheap (lists folders only): runs at planning time. Unreadable class folders: as
    ``source_summary``."""
    source_summary(layout, root, config_key, on_error)


def source_fingerprint(layout: str, root: str | os.PathLike[str], config_key: str = "datasets.<name>.path") -> str:
    """A hex digest of the folder tree of ``root``: the names of its split and class folders, their modification
    times in ns, and the class folders that cannot be examined (with the reason). Cheap (folders only, as
    ``check_source``); meant as a Snakemake parameter so that adding, removing or renaming image files (which
    changes their folder's mtime) re-runs ingestion.

    Limits: an image edited or replaced in place keeps its folder's mtime, and so does a folder whose contents
    are swapped by a tool that restores folder mtimes (e.g. ``rsync -a`` of a tree whose folders kept theirs);
    the contents of files are not read. Raises as ``check_source``."""
    src = resolve(layout, root, config_key)
    records: list[Any] = [layout]
    for folder in src.folders:
        try:
            mtime: int | str = os.stat(folder).st_mtime_ns
        except OSError as err:
            mtime = os_reason(folder, err)
        records.append([os.path.relpath(folder, src.root), mtime])
    records.append({split: {c: why for c, (_, why) in u.items()} for split, u in src.unreadable.items()})
    return hashlib.sha256(json.dumps(records, sort_keys=True).encode()).hexdigest()


def check_requirements(counts: dict[str, Any], requirements: list[dict[str, Any]], dataset: str) -> None:
    """Raise ValueError (one line per unmet requirement) unless each split is large enough.

    ``counts``: images per split, ``{split: n}`` (or ``ingest``'s ``{split: {"written": n, ...}}``);
    ``requirements``: ``[{"key": config key, "split": name, "min": n, "why": purpose (optional)}, ...]``.
    Pure: reads nothing, so it runs wherever the counts are known."""
    problems = []
    for req in requirements:
        missing = [k for k in ("key", "split", "min") if k not in req]
        if missing:
            raise ValueError(f"requirement {req!r} lacks {', '.join(missing)}")
        key, split, need = req["key"], req["split"], int(req["min"])
        why = f" ({req['why']})" if req.get("why") else ""
        what = f"config key {key}: needs {need} images of split '{split}' of dataset '{dataset}'{why}, but it has"
        if split not in counts:
            have = ", ".join(f"'{s}'" for s in counts) or "none"
            problems.append(f"{what} no split '{split}' (splits: {have})")
            continue
        n = counts[split]["written"] if isinstance(counts[split], dict) else counts[split]
        if int(n) < need:
            problems.append(f"{what} {int(n)}")
    if problems:
        raise ValueError("\n".join(problems))
