"""The degraded-rendering corpus: what our NeRF renders at held-out views after a sparse-view fit, beside the
photographs it should have rendered (``reconfusion data degrade`` writes it, ``train_prior`` reads it).

Layout of a corpus folder::

    scenes/NAME/                 the fitted copy of each scene: transforms.json, images at the corpus size,
                                 train_test_split_{N}.json (train ids: the scene's own split where it has one)
    fits/NAME/N-views/fit.json   one finished fit (written last: a fit folder without it is unfinished)
    fits/NAME/N-views/stop_SSSSSS.npz
                                 the held-out views rendered after SSSSSS training steps: ``ids`` (K,) view ids,
                                 ``rgb`` (K, H, W, 3) uint8, ``depth`` (K, H, W) float16, distance along each
                                 ray in the scene's own units (views of different sizes: ``rgb_k``, ``depth_k``
                                 per view k instead)
    corpus.json                  the plan and what finished: fits, examples, CPU time, throughput

An example is (observed views = the fit's training views, target = a held-out view, the rendering and its
depth at one stop, the photograph). Stops before the end of the schedule are fits stopped early.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reconfusion.files import InputError, atomic_file, read_json
from reconfusion.scene import Scene, load_scene

FORMAT = "reconfusion-degraded/1"
FIT_FILE = "fit.json"
CORPUS_FILE = "corpus.json"
ARC_KEY = "reconfusion_arc"
"""transforms.json key of a forward-facing arc cut from a 360-degree scene: ``of`` (its name), ``degrees``, ``frames``."""
ARC_SUFFIX = "-arc"


def is_held_out(scene_name: str, holdout: tuple[str, ...]) -> bool:
    """Whether a scene is one of the ``holdout`` scenes or the forward-facing arc (NAME-arc) of one."""
    return scene_name in holdout or scene_name.removesuffix(ARC_SUFFIX) in holdout


def stop_file(folder: Path, stop: int) -> Path:
    return Path(folder) / f"stop_{stop:06d}.npz"


def fit_folder(corpus: Path, scene_name: str, views: int) -> Path:
    return Path(corpus) / "fits" / scene_name / f"{views}-views"


def write_renders(path: Path, ids, rgb: list[np.ndarray], depth: list[np.ndarray]) -> None:
    """One stop's renderings (uint8 colour, float16 depth per view), atomically; stacked when they share a size."""
    rgb, depth = [np.asarray(x, np.uint8) for x in rgb], [np.asarray(x, np.float16) for x in depth]
    if len({x.shape for x in rgb}) == 1:
        arrays = {"rgb": np.stack(rgb), "depth": np.stack(depth)}
    else:
        arrays = {**{f"rgb_{k}": x for k, x in enumerate(rgb)}, **{f"depth_{k}": x for k, x in enumerate(depth)}}
    with atomic_file(Path(path)) as tmp:
        with open(tmp, "wb") as handle:
            np.savez_compressed(handle, ids=np.asarray(ids, np.int64), **arrays)


def read_renders(path: Path) -> dict:
    """``ids`` (K,), and ``rgb`` / ``depth``: lists of K arrays (H, W, 3) uint8 / (H, W) float16."""
    with np.load(path) as data:
        ids = data["ids"]
        if "rgb" in data:
            return {"ids": ids, "rgb": list(data["rgb"]), "depth": list(data["depth"])}
        return {"ids": ids, "rgb": [data[f"rgb_{k}"] for k in range(len(ids))],
                "depth": [data[f"depth_{k}"] for k in range(len(ids))]}  # fmt: skip


@dataclass(frozen=True)
class DegradedFit:
    """One finished fit of the corpus: its scene, training views and renderings at each stop."""

    folder: Path
    scene: Scene
    views: int
    train_ids: tuple[int, ...]
    held_out_ids: tuple[int, ...]
    stops: tuple[int, ...]
    iterations: int

    @property
    def examples(self) -> int:
        return len(self.held_out_ids) * len(self.stops)

    def renders(self, stop: int) -> dict[str, np.ndarray]:
        """``ids``, ``rgb`` (K arrays (H, W, 3) uint8) and ``depth`` (K arrays (H, W) float16) of one stop."""
        path = stop_file(self.folder, stop)
        try:
            return read_renders(path)
        except (OSError, KeyError, ValueError) as err:
            raise InputError(f"{path}: unreadable renderings ({err}); delete {self.folder} and rerun "
                             "reconfusion data degrade to fit it again") from err  # fmt: skip

    def rendering(self, stop: int, view: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB float32 (H, W, 3) in [0, 1], depth float32 (H, W)) of held-out ``view`` at ``stop``."""
        data = self.renders(stop)
        position = int(np.flatnonzero(data["ids"] == view)[0])
        return data["rgb"][position].astype(np.float32) / 255.0, data["depth"][position].astype(np.float32)


def load_fit(folder: Path) -> DegradedFit:
    """A finished fit folder (``fit.json`` and one ``stop_*.npz`` per stop); InputError naming what is wrong."""
    folder = Path(folder)
    meta = read_json(folder / FIT_FILE)
    if meta.get("format") != FORMAT:
        raise InputError(f"{folder / FIT_FILE}: format {meta.get('format')!r}, expected {FORMAT!r}; "
                         "rebuild the corpus with this version of reconfusion data degrade")  # fmt: skip
    scene = load_scene((folder / meta["scene"]).resolve(), read_splits=False)
    missing = [stop_file(folder, s).name for s in meta["stops"] if not stop_file(folder, s).is_file()]
    if missing:
        raise InputError(f"{folder}: {missing} missing; delete the folder and rerun reconfusion data degrade")
    return DegradedFit(folder=folder, scene=scene, views=int(meta["views"]), train_ids=tuple(meta["train_ids"]),
                       held_out_ids=tuple(meta["held_out_ids"]), stops=tuple(meta["stops"]),
                       iterations=int(meta["iterations"]))  # fmt: skip


def read_corpus(root: Path) -> list[DegradedFit]:
    """Every finished fit below ``root`` (unfinished ones, without fit.json, are skipped)."""
    root = Path(root)
    if not (root / "fits").is_dir():
        raise InputError(f"{root}: no fits/ folder, so not a degraded-rendering corpus; make one with "
                         "reconfusion data degrade --scenes SCENES --out FOLDER")  # fmt: skip
    fits = [load_fit(path.parent) for path in sorted((root / "fits").glob(f"*/*/{FIT_FILE}"))]
    if not fits:
        raise InputError(f"{root}: no finished fits yet; run (or resume) reconfusion data degrade --out {root}")
    return fits
