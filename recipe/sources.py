"""Which videos, with which labels: the Kinetics-400 CSV layout and plain list files."""
from __future__ import annotations

import csv
import os
from typing import NamedTuple

from convert.errors import I3DError, printable
from convert.fileio import open_input


MAX_LINE = 1 << 16  # bytes in one line of a CSV or list file (a Kinetics row has ~60)


class Video(NamedTuple):
    path: str
    label: int  # -1 when unknown (Kinetics test split)


def _csv(root: str, split: str) -> str:
    return os.path.join(root, f"kinetics-400_{split}.csv")


def _lines(path: str):
    """(line number, text) of a UTF-8 text file (a byte-order mark is no part of the first
    line); binary content is one error naming the line."""
    with open_input(path) as f:
        for n, raw in enumerate(iter(lambda: f.readline(MAX_LINE + 1), b""), 1):
            if len(raw) > MAX_LINE:
                raise I3DError(f"{path}:{n}: a line of more than {MAX_LINE} bytes: not a list of videos")
            try:
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError:
                raise I3DError(f"{path}:{n}: not UTF-8 text") from None
            if "\0" in line:
                raise I3DError(f"{path}:{n}: binary content (a NUL byte), not text")
            yield n, line


def _csv_rows(path: str, required=("youtube_id", "time_start", "time_end")):
    """(line number, {column: value}) of a CSV with a header naming `required` columns; short
    and long rows, bad quoting and binary content are errors naming the line."""
    numbered = _lines(path)
    lines = (line for _, line in numbered)
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
        if header is None:
            raise I3DError(f"{path}: empty (no header line)")
        header = [h.strip() for h in header]
        missing = [c for c in required if c not in header]
        if missing:
            raise I3DError(f"{path}:1: no {missing[0]!r} column (the header has "
                           f"{printable(', '.join(header))})")
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise I3DError(f"{path}:{reader.line_num}: {len(row)} fields, the header has "
                               f"{len(header)}")
            yield reader.line_num, dict(zip(header, row))
    except csv.Error as e:
        raise I3DError(f"{path}:{reader.line_num}: {printable(e)}") from None


def class_names(root: str) -> list:
    """Sorted labels of the train CSV (the split's own if there is none): for Kinetics-400 this
    is the 400 names in model order."""
    for split in ("train", "val", "test"):
        path = _csv(root, split)
        if os.path.isfile(path):
            names = sorted({r["label"] for _, r in _csv_rows(path, ()) if r.get("label")})
            if names:
                return names
    raise I3DError(f"{root}: no kinetics-400_{{train,val}}.csv with a label column")


def _seconds(path: str, n: int, r: dict, column: str) -> int:
    try:
        value = float(r[column])
    except ValueError:
        value = float("nan")
    if not 0 <= value < 1e6:
        raise I3DError(f"{path}:{n}: {column} {printable(r[column])!r} is not a time in seconds")
    return int(value)


def read_kinetics(root: str, split: str) -> list:
    """ROOT/kinetics-400_SPLIT.csv -> [Video]; files are ROOT/SPLIT/{id}_{start:06d}_{end:06d}.mp4.
    A missing label column (the test split) gives label -1; a label that is not among the
    train CSV's is an error naming its line."""
    path = _csv(root, split)
    if not os.path.isfile(path):
        raise I3DError(f"{path}: no such file")
    rows = [(n, f"{r['youtube_id']}_{_seconds(path, n, r, 'time_start'):06d}_"
                f"{_seconds(path, n, r, 'time_end'):06d}.mp4", r.get("label"))
            for n, r in _csv_rows(path)]
    if not rows:
        raise I3DError(f"{path}: no videos listed")
    index = {name: i for i, name in enumerate(class_names(root))}
    out = []
    for n, name, label in rows:
        if label and label not in index:
            raise I3DError(f"{path}:{n}: label {printable(label)!r} is not among the train classes")
        out.append(Video(os.path.join(root, split, name), index[label] if label else -1))
    return out


def read_list(path: str) -> list:
    """A list file, one `path label` per line (relative paths are from the list's folder)."""
    folder, out = os.path.dirname(os.path.abspath(path)), []
    for n, line in _lines(path):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        try:
            label = int(parts[1])
        except (IndexError, ValueError):
            raise I3DError(f"{path}:{n}: expected 'PATH LABEL', got "
                           f"{printable(line.strip())!r}") from None
        if label < 0:
            raise I3DError(f"{path}:{n}: label {label} is negative")
        out.append(Video(os.path.join(folder, parts[0]), label))
    if not out:
        raise I3DError(f"{path}: no videos listed")
    return out


def read_source(spec: str, split: str) -> list:
    """A Kinetics root folder (the SPLIT csv is used) or a list file."""
    return read_kinetics(spec, split) if os.path.isdir(spec) else read_list(spec)


def check_videos(videos: list) -> list:
    """[(path, reason)] of the videos that are missing or cannot be decoded."""
    from i3d_video import read_video

    bad = []
    for v in videos:
        try:
            read_video(v.path, frames=1)
        except I3DError as e:
            bad.append((v.path, str(e).split(": ", 1)[-1]))
    return bad


def split_videos(d: dict, split: str) -> tuple:
    """([Video], class names or None) of a split, from the config's data section: a list file
    (`data.SPLIT`) or a Kinetics root (`data.root`). See `source_name` for its name."""
    if d.get(split):
        return read_list(d[split]), None
    if d.get("root"):
        return read_kinetics(d["root"], split), class_names(d["root"])
    raise I3DError(f"set data.root (Kinetics layout) or data.{split} (a list file)")


def source_name(d: dict, split: str) -> str:
    """The file `split_videos` reads for a split."""
    return d[split] if d.get(split) else _csv(d["root"], split)


def num_classes(configured, videos: list, names) -> int:
    """`model.num_classes` if set, else the Kinetics root's class count, else 1 + the largest
    label of a list file."""
    return configured or (len(names) if names else 1 + max(v.label for v in videos))


def check_labels(videos: list, classes: int, where: str):
    """Every label of `videos` (read from `where`) is a class of a `classes`-class head: found
    before any step, not after a whole run."""
    worst = max((v.label for v in videos), default=-1)
    if worst >= classes:
        bad = next(v for v in videos if v.label == worst)
        raise I3DError(f"{where}: {printable(bad.path)} has label {worst}, but the head has "
                       f"{classes} classes (model.num_classes)")
