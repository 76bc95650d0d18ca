"""Import every training capture of ../shared/data/train/ with `reconfusion data import`, one command each.

Prints each command before running it, skips scenes already imported (rerun it to resume), loads every
scene the way `python -m train_prior` does (train_prior.readers.read_scene_folders), and writes a count per source to
docs/training_data.md. The meshes are rendered with `reconfusion data render-meshes` when --meshes is given.

    .venv/bin/python scripts/import_training_data.py --out outputs/train-scenes
    python -m train_prior small --data outputs/train-scenes ...
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO.parent / "shared" / "data" / "train"
BIN = Path(sys.executable).parent


def downscale_of(capture: Path, prefix: str = "images_") -> list[str]:
    """--downscale F for the capture's single images_F/ folder (none for images/)."""
    factors = sorted(p.name[len(prefix):] for p in capture.glob(f"{prefix}*") if p.is_dir() and p.name[len(prefix):].isdigit())
    return ["--downscale", factors[0]] if factors else []


def commands(train: Path, out: Path) -> list[tuple[str, Path, list[str]]]:
    """(source, scene folder, command) for every capture: the layout decides the importer."""
    found = []

    def add(source: str, capture: Path, words: list[str]) -> None:
        scene = out / source.split()[0] / capture.name  # the label's first word names the folder
        found.append((source, scene, [str(BIN / "reconfusion"), "data", *words[:2], str(capture), str(scene), *words[2:]]))

    for capture in sorted((train / "photos").glob("*/poses_bounds.npy")):
        add("photos (llff)", capture.parent, ["import", "llff", *downscale_of(capture.parent)])
    for capture in sorted((train / "photos" / "strecha").glob("*/cameras")):
        add("strecha", capture.parent, ["import", "strecha"])
    for capture in sorted((train / "captures").glob("*/transforms.json")):
        add("captures (nerfstudio)", capture.parent, ["import", "nerfstudio"])
    for capture in sorted((train / "colmap").glob("*/sparse")):
        add("colmap", capture.parent, ["import", "colmap", *downscale_of(capture.parent)])
    for capture in sorted((train / "h3ds").glob("*/cameras.npz")):
        add("h3ds (idr)", capture.parent, ["import", "dtu"])
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, default=TRAIN, help="the shared training material")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "train-scenes")
    parser.add_argument("--meshes", action="store_true", help="also render the textured meshes (CPU minutes)")
    parser.add_argument("--report", type=Path, default=REPO / "docs" / "training_data.md")
    args = parser.parse_args()
    if not args.train.is_dir():
        parser.error(f"{args.train}: training material not found; pass --train ../shared/data/train")
    todo = commands(args.train, args.out)
    if args.meshes:
        meshes = sorted(p for p in (args.train / "meshes").glob("*/*") if p.suffix in (".gltf", ".glb", ".obj"))
        todo.append(("meshes (rendered)", args.out / "meshes", [str(BIN / "reconfusion"), "data", "render-meshes",
                     *map(str, meshes), str(args.out / "meshes"), "--views", "24", "--resolution", "128"]))  # fmt: skip
    for source, scene, command in todo:
        if (scene / "transforms.json").is_file() or (source.startswith("meshes") and scene.is_dir()):
            print(f"# done: {scene}")
            continue
        print("$", shlex.join(command), flush=True)
        subprocess.run(command, check=True)
    write_report(args, todo)


def write_report(args: argparse.Namespace, todo: list[tuple[str, Path, list[str]]]) -> None:
    sys.path.insert(0, str(REPO))
    from train_prior.readers import read_scene_folders

    scenes, frames = Counter(), Counter()
    for source, folder, _ in todo:
        for scene in read_scene_folders(folder) if folder.is_dir() else []:
            scenes[source] += 1
            frames[source] += len(scene)
    lines = ["# Training material imported", "", "Written by `scripts/import_training_data.py` (every capture of "
             "`../shared/data/train/` imported with `reconfusion data import`, then loaded as `python -m train_prior` "
             "loads scene folders):", "", "```bash", shlex.join(["python", "scripts/import_training_data.py", *sys.argv[1:]]),
             "```", "", "| source | scenes | frames |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {source} | {scenes[source]} | {frames[source]} |" for source in dict.fromkeys(s for s, _, _ in todo)]
    lines += [f"| all | {sum(scenes.values())} | {sum(frames.values())} |", "",
              "Licences per source: `../shared/data/README.md` (several are non-commercial or state none)."]
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
