"""User benchmarks defined as data: a YAML file or a mapping inline under ``benchmark:`` in a run config.

A definition (every relative path resolves against the folder of the YAML file that holds it)::

    name: shapes                    # letters, digits, . _ - (the default results folder is results/<name>)
    classes: [circle, square, triangle]   # label i = classes[i]; their number is num_classes
    size: 32                        # square side in pixels (training: up to 64)
    channels: 3                     # 1 (grayscale) or 3 (RGB)
    notes: optional free text
    sets:
      - {name: train, role: train, folder: data/train}      # one sub-folder per class: data/train/circle/...
      - {name: val, role: val, folder: data/val}
      - {name: test, role: id, list: lists/test.txt, root: data}   # OpenOOD list: "<relative/path> <label>"
      - {name: rotated, role: csid, folder: data/rotated}   # covariate-shifted ID test data (class folders)
      - {name: val-rotated, role: val_csid, folder: data/val-rotated}   # the same, for validation and tuning
      - {name: val-ood, role: val_ood, folder: data/val-ood}
      - {name: letters, role: near, folder: data/letters}   # OOD folders: any files / sub-folders, labels -1
      - {name: noise, role: far, folder: data/noise}

Roles: train, val, val_ood, val_csid, id (exactly one: the ID test set), csid, near, far. Validation data is chosen
by role, never by name: val, val_ood and val_csid (covariate-shifted ID validation, which tuning uses) are
validation data, every csid set is test data. A run needs the id and val sets, fitting methods (KNN, ViM, MDS) and
``diffguard train --data`` the train set(s). ID folders (train, val, id) must hold a sub-folder with images for every
class; csid and val_csid folders may leave classes out. Runs store the resolved definition
(absolute paths, :func:`benchmark_dict`) in ``run_config.json``, so a results folder rebuilds it alone.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

from diffguard.bench.definitions import BENCHMARKS, CSID_ROLES, ROLES, SET_ROW_PREFIX, BenchmarkSpec, SetSpec
from diffguard.bench.image_sources import DataError, ImageFolderSource, ImageListSource, ImageSource, image_files
from diffguard.errors import ConfigError
from diffguard.yaml_mapping import read_mapping

DEFINITION_KEYS = ("name", "classes", "size", "channels", "sets", "notes")
SET_KEYS = ("name", "role", "folder", "list", "root")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class DefinitionError(ConfigError):
    """Every problem found in a benchmark definition, reported at once (``problems``: one line each)."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        text = self.problems[0] if len(self.problems) == 1 else (
            f"{len(self.problems)} problems in the benchmark definition:\n  - " + "\n  - ".join(self.problems))
        super().__init__(text)


def is_definition(data: Any) -> bool:
    """Whether a mapping is a benchmark definition (it has ``classes``; a run config never has)."""
    return isinstance(data, Mapping) and "classes" in data


def looks_like_file(ref: str | os.PathLike[str]) -> bool:
    """Whether a benchmark reference names a file rather than a registered benchmark."""
    text = str(ref)
    return text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text or Path(text).is_file()


def _abs(path: Any, base: Path, where: str) -> str:
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ConfigError(f"{where}: expected a path, got {path!r}")
    p = Path(path).expanduser()
    return os.path.normpath(p if p.is_absolute() else base / p)


def _set_from_dict(entry: Any, base: Path, where: str) -> SetSpec:
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where}: each set must be a mapping like {{name: test, role: id, folder: data/test}}, "
                          f"got {entry!r}")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: every set needs a 'name', got {dict(entry)}")
    where = f"{where}, set {name!r}"
    if name.startswith(SET_ROW_PREFIX):
        raise ConfigError(f"{where}: set names may not start with {SET_ROW_PREFIX!r} (metric tables use it for sets "
                          "named like a group: near, far, all, val_ood); rename the set")
    unknown = sorted(set(entry) - set(SET_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; valid: {list(SET_KEYS)}")
    role = entry.get("role")
    if role not in ROLES:
        raise ConfigError(f"{where}: role {role!r} is not one of {', '.join(ROLES)}")
    has_folder, has_list = "folder" in entry, "list" in entry
    if has_folder == has_list:
        raise ConfigError(f"{where}: give either 'folder: <image folder>' or 'list: <image list>' with 'root: "
                          "<folder its paths are relative to>'")
    if has_folder:
        if "root" in entry:
            raise ConfigError(f"{where}: 'root' goes with 'list', not with 'folder'")
        return SetSpec(name, role, folder=_abs(entry["folder"], base, where))
    if "root" not in entry:
        raise ConfigError(f"{where}: 'list' needs 'root', the folder the list's relative paths start from")
    return SetSpec(name, role, list_path=_abs(entry["list"], base, where), image_dir=_abs(entry["root"], base, where))


def _int(data: Mapping[str, Any], key: str, default: int | None, where: str, problems: list[str]) -> int:
    """``data[key]`` (or ``default``) when it is a positive integer; else a problem is recorded (the result is then
    a placeholder, 1)."""
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        problems.append(f"{where}: '{key}' must be a positive integer, got {value!r}")
        return 1
    return value


def _sets(entries: Any, base: Path, where: str, problems: list[str]) -> tuple[SetSpec, ...]:
    """The sets of a definition; every unusable entry, repeated name and extra ``id`` set is a recorded problem."""
    if not isinstance(entries, list) or not entries:
        problems.append(f"{where}: 'sets' must be a non-empty list of sets")
        return ()
    sets = []
    for entry in entries:
        try:
            sets.append(_set_from_dict(entry, base, where))
        except ConfigError as err:
            problems.append(str(err))
    names = [s.name for s in sets]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        problems.append(f"{where}: set names must be unique; repeated: {dup}")
    ids = [s.name for s in sets if s.role == "id"]
    if len(ids) > 1:
        problems.append(f"{where}: only one set may have role 'id' (the ID test set), got {ids}; give the others "
                        "role 'csid' (covariate-shifted ID)")
    return tuple(sets)


def _class_names_ok(classes: Any) -> bool:
    """At least two distinct, non-empty class names in a list."""
    return (isinstance(classes, list) and len(classes) >= 2 and all(isinstance(c, str) and c for c in classes)
            and len(set(classes)) == len(classes))


def benchmark_from_dict(data: Mapping[str, Any], base: str | os.PathLike[str] | None = None) -> BenchmarkSpec:
    """The spec of a definition; relative paths resolve against ``base`` (default: the working directory).

    Raises:
        DefinitionError: every problem at once (a :class:`ConfigError`, one line per problem): a missing or unknown
            key, a bad value, an unusable set, duplicate set names, or more than one ``id`` set.
    """
    base = Path(base) if base is not None else Path.cwd()
    name = data.get("name")
    where = f"benchmark {name!r}" if name else "benchmark definition"
    problems: list[str] = []
    unknown = sorted(set(data) - set(DEFINITION_KEYS))
    if unknown:
        problems.append(f"{where}: unknown key(s) {unknown}; valid: {list(DEFINITION_KEYS)}")
    missing = [k for k in ("name", "classes", "size", "sets") if k not in data]
    if missing:
        problems.append(f"{where}: missing key(s) {missing}; a definition has name, classes, size, channels, sets")
    if "name" in data and (not isinstance(name, str) or not _NAME.fullmatch(name)):
        problems.append(f"{where}: 'name' must be letters, digits, '.', '_' or '-' (it names the results folder)")
    classes = data.get("classes", [])
    if "classes" in data and not _class_names_ok(classes):
        problems.append(f"{where}: 'classes' must list at least two distinct class names, got {classes!r}")
    size = _int(data, "size", None, where, problems) if "size" in data else 1
    channels = _int(data, "channels", 3, where, problems)
    if channels not in (1, 3):
        problems.append(f"{where}: 'channels' must be 1 (grayscale) or 3 (RGB), got {channels}")
    sets = _sets(data["sets"], base, where, problems) if "sets" in data else ()
    notes = data.get("notes", "")
    if not isinstance(notes, str):
        problems.append(f"{where}: 'notes' must be text")
    if problems:
        raise DefinitionError(problems)
    return BenchmarkSpec(name, len(classes), size, channels, sets, source="user", notes=notes,
                         class_names=tuple(classes))


def read_definition(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The mapping in a YAML file (ConfigError when missing, invalid or not a mapping)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"benchmark file {path} does not exist; give a registered benchmark "
                          f"({', '.join(BENCHMARKS.list())}) or the path to a benchmark definition (YAML)")

    return read_mapping(path, "benchmark file", "name, classes, size, channels, sets")


def load_benchmark_file(path: str | os.PathLike[str]) -> BenchmarkSpec:
    """The spec defined in a YAML file; relative paths resolve against the file's folder."""
    path = Path(path)
    data = read_definition(path)
    if not is_definition(data):
        hint = (" It looks like a run config: run it with `diffguard benchmark FILE`." if "methods" in data
                or "benchmark" in data else "")
        raise ConfigError(f"{path} is not a benchmark definition (no 'classes').{hint}")
    return benchmark_from_dict(data, path.absolute().parent)


def benchmark_dict(spec: BenchmarkSpec) -> dict[str, Any]:
    """The definition of a user benchmark with absolute paths (JSON-able; :func:`benchmark_from_dict` inverts it)."""
    if spec.source != "user":
        raise ValueError(f"benchmark {spec.name!r} is registered, not user-defined: store its name")
    sets = [{"name": s.name, "role": s.role, **({"folder": s.folder} if s.folder else
                                                 {"list": s.list_path, "root": s.image_dir})} for s in spec.sets]
    out = {"name": spec.name, "classes": list(spec.class_names), "size": spec.image_size,
           "channels": spec.channels, "sets": sets}
    return {**out, "notes": spec.notes} if spec.notes else out


def benchmark_ref(ref: Any, base: str | os.PathLike[str] | None = None) -> str | dict[str, Any]:
    """What a run config stores as ``benchmark``: a registered name as it is, a definition file or mapping as the
    full definition with absolute paths (relative paths resolve against ``base``, default the working directory).
    """
    if isinstance(ref, Mapping):
        return benchmark_dict(benchmark_from_dict(ref, base))
    if not isinstance(ref, (str, os.PathLike)):
        raise ConfigError(f"'benchmark' must be a registered name, a path to a benchmark YAML file or a definition "
                          f"mapping, got {ref!r}")
    if str(ref) in BENCHMARKS or not looks_like_file(ref):
        return str(ref)  # a name (an unknown one is refused where the benchmark is resolved)
    path = Path(ref).expanduser()
    return benchmark_dict(load_benchmark_file(path if path.is_absolute() or base is None else Path(base) / path))


def _missing_paths(s: SetSpec) -> list[str]:
    if s.folder:
        return [] if Path(s.folder).is_dir() else [s.folder]
    return [p for p, ok in ((s.list_path, Path(s.list_path).is_file()), (s.image_dir, Path(s.image_dir).is_dir()))
            if not ok]


def open_user_sets(spec: BenchmarkSpec, wanted: list[SetSpec]) -> dict[str, ImageSource]:
    """Open the sets of a user benchmark (folders scanned now, images read lazily).

    Raises:
        DataError: naming every missing folder or list at once; a folder or list that cannot be used.
    """
    missing = [f"set {s.name!r}: {p}" for s in wanted for p in _missing_paths(s)]
    if missing:
        raise DataError(f"benchmark {spec.name!r}: {len(missing)} folder(s) or list(s) missing:\n  "
                        + "\n  ".join(missing) + "\nFix the paths in the benchmark definition (relative paths start "
                        "at the YAML file's folder).")
    out: dict[str, ImageSource] = {}
    for s in wanted:
        if s.folder:
            classes = None if s.ood else spec.class_names
            out[s.name] = ImageFolderSource(s.name, s.folder, spec.image_size, spec.channels, classes,
                                            every_class=s.role not in CSID_ROLES)
        else:
            out[s.name] = ImageListSource(s.name, s.list_path, s.image_dir, spec.image_size, spec.channels,
                                          ood=s.ood, num_classes=spec.num_classes)
    return out


def benchmark_files(spec: BenchmarkSpec) -> list[Path]:
    """The files that define a user benchmark's data (image lists and every image of its folders), for manifests."""
    files: list[Path] = []
    for s in spec.sets:
        if s.folder:
            files += [Path(s.folder) / f for f in image_files(Path(s.folder))] if Path(s.folder).is_dir() else []
        elif Path(s.list_path).is_file():
            files.append(Path(s.list_path))
    return files
