"""Folders of videos -> a cache of compressed-domain clips (safetensors shards + JSON index) -> a torch Dataset.

Layouts (detected): `synth` / pre-split (`<root>/{train,val,test}/<class>/*`), UCF-101 (`<root>/<Class>/*.avi`
beside a `ucfTrainTestlist/` folder; val = train videos of groups g05, g10, ..., so no group leaks), HMDB-51
(`<root>/<class>/*.avi` beside `testTrainMulti_7030_splits/`; val = the videos a split leaves unused, id 0), and plain
class folders (`<root>/<class>/*`; split 80/10/10 by a hash of the file name).

The build runs one function per video (`_extract_job`: one video -> one shard, written atomically by the function
itself) on an engine (edgeml.video.engines): the local process pool, or Ray tasks across a cluster — the same bytes
either way. A killed build resumes where it stopped (finished shards are reused, not redone). A video that cannot be
decoded is skipped and reported (in `index.json` and on the console) instead of aborting the build.

Mirror augmentation: a source folder may hold `mirror.json`, {"horizontal": {class: class, ...}, "vertical": {...}},
the classes a mirrored video trades (the synth set writes one: left <-> right, cw <-> ccw); an axis with {} mirrors
without relabelling (e.g. `{"horizontal": {}}` for UCF-101). The cache index keeps it as label permutations, and
`ClipDataset(..., augment=True)` mirrors each clip with probability 1/2 per listed axis — frames, residuals and the
motion field (its cells mirrored and the vector component along the axis negated) — and relabels it. Without the file
nothing is mirrored.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgeml.errors import DataError, EdgeMLError
from edgeml.io import read_json, sha256_file, write_json
from edgeml.paths import confined, refuse_overwrite
from edgeml.video.engines import die_with_parent, parallel_map, progress_bar, run_jobs

__all__ = ["ClipDataset", "build_clip_cache", "cache_summary", "die_with_parent", "parallel_map", "progress_bar",
           "read_index", "scan_layout"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg")
SPLIT_NAMES = ("train", "val", "test")
FORMAT_VERSION = 1  # the shard layout (kept in settings.json: a cache of another layout is not resumed)
INDEX_FORMAT = 2  # index.json; 2: every shard entry carries its sha256
WORK_DIR = ".work"  # older builds' scratch folder (re-encodes); a build removes what a killed one left there


# --------------------------------------------------------------------------------------------------- layouts


def _videos(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and _videos(p))


def _find(root: Path, name: str) -> Path | None:
    for base in (root, root.parent):
        if (base / name).is_dir():
            return base / name
    return None


def scan_layout(root: str | os.PathLike, split: int = 1) -> tuple[str, list[str], list[tuple[Path, str, str]]]:
    """-> (layout name, classes, [(video, class, split)]) for a source folder (see module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError("video folder not found", path=root, fix="pass a folder of videos")
    if (root / "train").is_dir() and any((root / s).is_dir() for s in ("val", "test")):
        items = [(v, c.name, s) for s in SPLIT_NAMES if (root / s).is_dir()
                 for c in _class_dirs(root / s) for v in _videos(c)]
        classes = _read_classes(root) or sorted({c for _, c, _ in items})
        return "presplit", classes, items
    classes = [c.name for c in _class_dirs(root)]
    if not classes:
        raise DataError("no class folders with videos", path=root,
                        fix="lay videos out as <root>/<class>/<video> (or <root>/<split>/<class>/<video>)")
    if (ucf := _find(root, "ucfTrainTestlist")) is not None:
        return "ucf101", *_ucf(root, ucf, split)
    if (hmdb := _find(root, "testTrainMulti_7030_splits")) is not None:
        return "hmdb51", classes, _hmdb(root, hmdb, classes, split)
    items = []
    for c in classes:
        for v in _videos(root / c):
            bucket = int(hashlib.sha1(v.name.encode()).hexdigest()[:8], 16) % 10
            items.append((v, c, "test" if bucket == 0 else ("val" if bucket == 1 else "train")))
    return "folders", classes, items


def _read_classes(root: Path) -> list[str] | None:
    f = root / "classes.txt"
    return [ln.strip() for ln in f.read_text().splitlines() if ln.strip()] if f.is_file() else None


MIRROR_AXES = {"horizontal": (-1, 0), "vertical": (-2, 1)}  # axis -> (tensor dim, motion-field channel)


def read_mirror(root: Path, classes: list[str]) -> dict[str, list[int]]:
    """`<root>/mirror.json` -> {axis: label permutation}; {} when the file is absent (see the module docstring)."""
    path = root / "mirror.json"
    if not path.is_file():
        return {}
    fix = 'write {"horizontal": {"left": "right"}, "vertical": {}} style JSON with class names from classes.txt'
    try:
        spec = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"cannot read mirror.json ({e})", path=path, fix=fix) from e
    if not isinstance(spec, dict) or not set(spec) <= set(MIRROR_AXES):
        raise DataError(f"mirror.json must map axes ({', '.join(MIRROR_AXES)}) to class swaps", path=path, fix=fix)
    perms = {}
    for axis, swaps in spec.items():
        if not isinstance(swaps, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in swaps.items()):
            raise DataError(f"mirror.json: {axis!r} must map class names to class names", path=path, fix=fix)
        unknown = sorted({*swaps, *swaps.values()} - set(classes))
        if unknown:
            raise DataError(f"mirror.json names unknown classes {unknown}", path=path, fix=fix)
        both = {**swaps, **{v: k for k, v in swaps.items()}}
        perms[axis] = [classes.index(both.get(c, c)) for c in classes]
    return perms


def mirror_clip(item: dict[str, Any], axis: str, perm: list[int]) -> dict[str, Any]:
    """A `ClipDataset` item mirrored along `axis` ("horizontal" | "vertical") and relabelled by `perm`."""
    import torch

    dim, channel = MIRROR_AXES[axis]
    out = {k: v.flip(dim) if k in ("iframe", "residual", "frames") else v for k, v in item.items()}
    mv = item["mv"].flip(dim)
    mv[:, channel] = -mv[:, channel]  # a block that came from the left now comes from the right
    out["mv"] = mv
    out["label"] = torch.tensor(perm[int(item["label"])], dtype=torch.int64)
    return out


def _ucf(root: Path, lists: Path, split: int) -> tuple[list[str], list[tuple[Path, str, str]]]:
    ind = lists / "classInd.txt"
    if not ind.is_file():
        raise DataError("UCF-101 split folder without classInd.txt", path=lists)
    classes = [ln.split()[1] for ln in ind.read_text().splitlines() if ln.strip()]
    items = []
    for name, kind in ((f"trainlist0{split}.txt", "train"), (f"testlist0{split}.txt", "test")):
        f = lists / name
        if not f.is_file():
            raise DataError(f"UCF-101 split file {name} missing", path=lists, fix="use --split 1, 2 or 3")
        for ln in f.read_text().splitlines():
            if not ln.strip():
                continue
            rel = ln.split()[0]
            cls = rel.split("/")[0]
            s = kind
            g = re.search(r"_g(\d+)_", rel)
            if kind == "train" and g and int(g.group(1)) % 5 == 0:
                s = "val"
            items.append((confined(root, rel, what=f"video path in {name}"), cls, s))
    return classes, items


def _hmdb(root: Path, lists: Path, classes: list[str], split: int) -> list[tuple[Path, str, str]]:
    items = []
    for c in classes:
        f = lists / f"{c}_test_split{split}.txt"
        if not f.is_file():
            raise DataError(f"HMDB-51 split file {f.name} missing", path=lists)
        for ln in f.read_text().splitlines():
            parts = ln.split()
            if len(parts) == 2:
                video = confined(root / c, parts[0], what=f"video path in {f.name}")
                items.append((video, c, {"1": "train", "2": "test"}.get(parts[1], "val")))
    return items


# --------------------------------------------------------------------------------------------------- build


def _shard_name(rel: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(rel).stem)[:60]
    return f"{stem}-{hashlib.sha1(rel.encode()).hexdigest()[:10]}"


def _extract_job(job: dict) -> dict:
    """One video -> one shard (atomic) or a broken/skipped marker -> its status. Never raises for a bad video.
    Idempotent: a shard or marker already there (a retried task, a rerun) is reported, not redone."""
    from safetensors.numpy import save

    from edgeml.io import write_bytes
    from edgeml.video.clips import video_clips

    out, marker = Path(job["shard"]), Path(job["marker"])
    if out.is_file():
        return {"video": job["rel"], "status": "ok", "clips": None, "sha256": sha256_file(out)}
    if marker.is_file():
        return read_json(marker)
    try:
        clips = video_clips(Path(job["video"]), clip_len=job["clip_len"], grid=job["grid"],
                            accumulate=job["accumulate"], size=tuple(job["size"]), resize=job["resize"])
    except EdgeMLError as e:
        status = {"video": job["rel"], "status": "broken", "reason": str(e)}
    except Exception as e:  # noqa: BLE001 - any decoder failure is reported per video, never aborts the build
        status = {"video": job["rel"], "status": "broken", "reason": f"{type(e).__name__}: {e}"}
    else:
        if not clips:
            status = {"video": job["rel"], "status": "skipped",
                      "reason": f"no GOP with {job['clip_len']} P-frames (video too short for the clip length)"}
        else:
            arrays = {k: np.stack([c[k] for c in clips]) for k in clips[0]}
            data = _sorted_metadata(save(arrays, metadata={"video": job["rel"], "clips": str(len(clips))}))
            write_bytes(out, data)
            digest = hashlib.sha256(data).hexdigest()
            return {"video": job["rel"], "status": "ok", "clips": len(clips), "sha256": digest}
    write_json(marker, status)
    return status


def _sorted_metadata(data: bytes) -> bytes:
    """A safetensors file with its `__metadata__` keys in sorted order. safetensors writes them in hash-map order,
    which changes from process to process, so the same clips gave other bytes (and another sha256) on every build;
    sorted, a shard's bytes depend on its content only, whichever engine or worker wrote it. Same header length,
    so every data offset stays."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    if "__metadata__" in header:
        header = {"__metadata__": dict(sorted(header["__metadata__"].items())),
                  **{k: v for k, v in header.items() if k != "__metadata__"}}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:  # cannot happen for the same keys and values; keep the library's bytes rather than break offsets
        return data
    return data[:8] + text.ljust(n) + data[8 + n:]


def build_clip_cache(source_dir: str | os.PathLike, cache_dir: str | os.PathLike, *, clip_len: int = 8,
                     grid: int = 4, size: tuple[int, int] = (64, 64), workers: int | None = 2,
                     accumulate: bool = True, split: int = 1, progress: bool = True, resize: str = "crop",
                     engine: str = "local", address: str | None = None) -> Path:
    """Videos under `source_dir` -> clip cache in `cache_dir` (resumable); returns `cache_dir`.

    engine: "local" (`workers` processes of this host, None = 2) or "ray" (Ray tasks, at most `workers` at a time,
    None = every CPU of the cluster; `address` "auto" | HOST:PORT joins a running cluster, None starts a local
    instance). With Ray, `cache_dir` must be on storage every node sees: the tasks write the shards themselves.

    Per video: one clip per GOP (its I-frame + first `clip_len` P-steps), stored in compact dtypes in
    `shards/<name>.safetensors`: iframe uint8 [C,3,H,W], mv [C,T,2,H/g,W/g] (int16 for videos of the model's size,
    float32 when pooled), residual int16 [C,T,3,H,W], frames uint8 [C,T+1,3,H,W]. Videos of another size are read
    as they are and brought to `size` by the `resize` policy at model resolution (edgeml.video.clips.resize_plan;
    never re-encoded); a video smaller than `size` is reported as broken. `index.json`
    lists classes, settings, the shards per split (each with its sha256, verified by `ClipDataset`), and the
    broken/skipped videos with reasons. The cache may not be, hold, or sit inside `source_dir`: the source stays
    untouched.
    """
    from edgeml.video.clips import RESIZE_POLICIES, check_model_size
    from edgeml.video.engines import check_engine
    from edgeml.video.mv import GRIDS

    source, cache = Path(source_dir), Path(cache_dir)
    check_engine(engine, address)
    if grid not in GRIDS:
        raise DataError(f"grid must be one of {GRIDS}, got {grid}")
    if clip_len < 1:
        raise DataError(f"clip_len must be >= 1, got {clip_len}")
    if resize not in RESIZE_POLICIES:
        raise DataError(f"unknown resize policy {resize!r}", fix=f"use one of {', '.join(RESIZE_POLICIES)}")
    size = check_model_size(size, grid)
    layout, classes, items = scan_layout(source, split)
    refuse_overwrite(cache, [source, *(v for v, _, _ in items)], flag="CACHE")
    if source.resolve() in cache.resolve().parents:
        raise DataError("the cache folder is inside the source folder", path=cache,
                        fix="build the cache outside the folder of videos, so the source stays as it is")
    mirror = read_mirror(source, classes)
    settings = {"format": FORMAT_VERSION, "source": str(source.resolve()), "layout": layout, "split": split,
                "clip_len": clip_len, "grid": grid, "size": list(size), "accumulate": accumulate, "resize": resize}
    settings_path = cache / "settings.json"
    if settings_path.is_file() and read_json(settings_path) != settings:
        raise DataError("cache folder was built with other settings", path=cache,
                        fix="use another cache folder or delete this one")
    (cache / "shards").mkdir(parents=True, exist_ok=True)
    (cache / "status").mkdir(exist_ok=True)
    _remove_half_written(cache)  # by a killed build; the finished files are complete (atomic)
    shutil.rmtree(cache / WORK_DIR, ignore_errors=True)  # re-encodes left by a killed build of an older edgeml
    write_json(settings_path, settings)

    jobs, reused = [], 0
    entries = []
    for video, cls, s in items:
        rel = str(video.relative_to(source)) if video.is_relative_to(source) else str(video)
        name = _shard_name(rel)
        shard, marker = cache / "shards" / f"{name}.safetensors", cache / "status" / f"{name}.json"
        entries.append((rel, cls, s, shard, marker))
        if shard.is_file() or marker.is_file():
            reused += 1
            continue
        if cls not in classes:
            write_json(marker, {"video": rel, "status": "skipped", "reason": f"class {cls!r} not in the class list"})
            continue
        jobs.append({"video": str(video), "rel": rel, "shard": str(shard), "marker": str(marker), "size": list(size),
                     "clip_len": clip_len, "grid": grid, "accumulate": accumulate, "resize": resize})
    results = run_jobs(_extract_job, jobs, engine=engine, workers=workers, address=address, what="clip cache",
                       progress=progress)
    _remove_half_written(cache)  # by a worker killed mid-video (its task was retried elsewhere); none is running now
    problems = [r for r in results if r["status"] != "ok"]
    for r in problems:
        print(f"edgeml: {r['status']} {r['video']}: {r['reason']}")
    digests = {r["video"]: r["sha256"] for r in results if r["status"] == "ok"}
    build = {"videos_built": len(jobs), "videos_reused": reused}  # not the engine: every engine writes these bytes
    return _write_index(cache, settings, classes, entries, build=build, mirror=mirror, digests=digests)


def _remove_half_written(cache: Path) -> None:
    """Delete the temp files of shard / status writes that never finished (atomic writes leave only these)."""
    for stale in [*(cache / "shards").glob(".*.tmp"), *(cache / "status").glob(".*.tmp")]:
        stale.unlink(missing_ok=True)


def _write_index(cache: Path, settings: dict, classes: list[str], entries: list, *, build: dict,
                 mirror: dict[str, list[int]], digests: dict[str, str]) -> Path:
    """index.json; a shard this build did not write (a resumed one) is hashed here."""
    from safetensors import safe_open

    splits: dict[str, list[dict]] = {s: [] for s in SPLIT_NAMES}
    problems = []
    for rel, cls, s, shard, marker in entries:
        if shard.is_file():
            with safe_open(str(shard), "np") as f:
                n = int(f.metadata()["clips"])
            splits[s].append({"video": rel, "shard": f"shards/{shard.name}", "clips": n, "label": classes.index(cls),
                              "sha256": digests.get(rel) or sha256_file(shard)})
        elif marker.is_file():
            problems.append(read_json(marker))
    h, w = settings["size"]
    meta = {"clip_len": settings["clip_len"], "grid": settings["grid"], "size": [h, w],
            "accumulate": "iframe" if settings["accumulate"] else "previous", "warp": "nearest",
            "residual_space": "yuv (chroma repeated)", "iframe_space": "rgb", "b_frames": "skipped", "mirror": mirror,
            "resize": settings.get("resize", "crop")}
    index = {"format": INDEX_FORMAT, "meta": meta, "settings": settings, "classes": classes, "splits": splits,
             "clips": {s: sum(e["clips"] for e in v) for s, v in splits.items()},
             "broken": [p for p in problems if p["status"] == "broken"],
             "skipped": [p for p in problems if p["status"] == "skipped"],
             "build": build}  # what this run built and reused: the one part a resumed build changes
    write_json(cache / "index.json", index)
    return cache


# --------------------------------------------------------------------------------------------------- dataset


class ClipDataset:
    """torch Dataset over a clip cache. Item: iframe float32 [3,H,W] (RGB 0..255), mv float32 [T,2,H/g,W/g]
    (pixels), residual float32 [T,3,H,W] (signed), frames float32 [T+1,3,H,W] (RGB 0..255), label int64 [],
    video int64 [] (the clip's video, numbered within the split; `edgeml.train.evaluate` averages its clips' logits).
    `augment`: mirror each item at random along the axes the cache's `meta["mirror"]` lists (module docstring)."""

    def __init__(self, cache_dir: str | os.PathLike, split: str = "train", *, augment: bool = False,
                 max_open: int = 16):
        self.root = Path(cache_dir)
        if split not in SPLIT_NAMES:
            raise DataError(f"unknown split {split!r}", fix=f"use one of {', '.join(SPLIT_NAMES)}")
        index_path = self.root / "index.json"
        if not index_path.is_file():
            raise DataError("no clip cache here (index.json missing)", path=self.root,
                            fix="build it with `edgeml data build SOURCE CACHE` (a killed build resumes)")
        index = read_index(self.root)
        self.classes: list[str] = index["classes"]
        self.meta: dict = index["meta"]
        self.split = split
        self.mirror: dict[str, list[int]] = self.meta.get("mirror", {}) if augment else {}
        entries = index["splits"][split]
        self._digests = {e["shard"]: e["sha256"] for e in entries}
        self._items = [(e["shard"], i, e["label"], v) for v, e in enumerate(entries) for i in range(e["clips"])]
        self._cache: dict[str, dict[str, np.ndarray]] = {}
        self._verified: set[str] = set()
        self._max_open = max_open

    def __len__(self) -> int:
        return len(self._items)

    def _shard(self, rel: str) -> dict[str, np.ndarray]:
        """The arrays of one shard; its bytes are checked against the index's sha256 the first time it is opened."""
        if rel not in self._cache:
            from safetensors.numpy import load

            if len(self._cache) >= self._max_open:
                self._cache.pop(next(iter(self._cache)))
            path = self.root / rel
            fix = "delete it and re-run `edgeml data build` into this cache (it rebuilds only what is missing)"
            try:
                data = path.read_bytes()
            except OSError as e:
                raise DataError(f"cannot read clip shard ({e.strerror or e})", path=path, fix=fix) from None
            if rel not in self._verified:
                if hashlib.sha256(data).hexdigest() != self._digests[rel]:
                    raise DataError("clip shard does not match the sha256 in index.json (corrupt or changed)",
                                    path=path, fix=fix)
                self._verified.add(rel)
            try:
                self._cache[rel] = load(data)
            except Exception as e:  # noqa: BLE001 - a damaged shard is a data error with the file named
                raise DataError(f"cannot read clip shard ({e})", path=path, fix=fix) from None
        return self._cache[rel]

    def __getitem__(self, i: int) -> dict[str, Any]:
        import torch

        rel, k, label, video = self._items[i]
        arrays = self._shard(rel)
        item = {name: torch.from_numpy(arrays[name][k].astype(np.float32)) for name in arrays}
        item["label"] = torch.tensor(label, dtype=torch.int64)
        item["video"] = torch.tensor(video, dtype=torch.int64)  # which video of the split: for video-level accuracy
        for axis, perm in self.mirror.items():
            if bool(torch.rand(()) < 0.5):
                item = mirror_clip(item, axis, perm)
        return item

    def labels(self) -> list[int]:
        return [lab for _, _, lab, _ in self._items]


def read_index(root: Path) -> dict:
    """A clip cache's index.json, checked before use: its shard paths stay inside the cache, every shard has a
    sha256, labels name a class. DataError naming the problem otherwise (an index of format 1 has no checksums)."""
    path = root / "index.json"
    index = read_json(path)
    rebuild = "re-run `edgeml data build SOURCE CACHE` into this cache (finished shards are kept and hashed)"
    if not isinstance(index, dict):
        raise DataError("index.json is not a JSON object", path=path, fix=rebuild)
    if index.get("format") == 1:
        raise DataError("clip cache index without shard checksums (built by an older edgeml)", path=path, fix=rebuild)
    if index.get("format") != INDEX_FORMAT:
        raise DataError(f"unknown clip cache index format {index.get('format')!r}", path=path, fix=rebuild)
    classes, splits = index.get("classes"), index.get("splits")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes) or not isinstance(
            index.get("meta"), dict) or not isinstance(splits, dict):
        raise DataError("index.json lacks classes, meta or splits", path=path, fix=rebuild)
    for split in SPLIT_NAMES:
        entries = splits.setdefault(split, [])
        if not isinstance(entries, list):
            raise DataError(f"index.json: splits.{split} is not a list", path=path, fix=rebuild)
        for e in entries:
            ok = (isinstance(e, dict) and isinstance(e.get("shard"), str) and isinstance(e.get("sha256"), str)
                  and type(e.get("clips")) is int and e["clips"] >= 0 and type(e.get("label")) is int
                  and 0 <= e["label"] < len(classes))
            if not ok:
                raise DataError(f"index.json: a {split} entry lacks shard, sha256, clips or a valid label: {e!r:.120}",
                                path=path, fix=rebuild)
            confined(root, e["shard"], what="shard path in index.json")
    return index


def cache_summary(cache_dir: str | os.PathLike) -> str:
    """One line per split and the broken/skipped videos of a built cache."""
    index = read_json(Path(cache_dir) / "index.json")
    lines = [f"{s}: {index['clips'][s]} clips from {len(index['splits'][s])} videos" for s in SPLIT_NAMES]
    lines.append(f"classes: {len(index['classes'])}; broken: {len(index['broken'])}; skipped: {len(index['skipped'])}")
    return "\n".join(lines) + ("\n" + json.dumps(index["build"]) if "build" in index else "")
