"""The ``reconfusion`` command line: the application's front door.

Each subcommand is a frozen dataclass whose ``run()`` imports the package that does the work
lazily (data_tools, train_prior, nerfstudio_plugin), so ``reconfusion --help`` stays fast and no core
module depends on the command line.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import tyro
from tyro.conf import Positional, arg, subcommand

from reconfusion_benchmark.degrade import DegradeConfig
from reconfusion_benchmark.runs import BenchmarkConfig
from reconfusion.files import InputError

logger = logging.getLogger("reconfusion")


@dataclass(frozen=True)
class DataColmap:
    """Pose a folder of photos with COLMAP (pycolmap) and write a scene folder."""

    images: Positional[Annotated[Path, arg(metavar="IMAGES")]]
    """Folder of photos (jpg/png)."""
    out: Positional[Annotated[Path, arg(metavar="OUT")]]
    """Scene folder to write (transforms.json + images/)."""
    matcher: Literal["exhaustive", "sequential"] = "exhaustive"
    """Feature matching strategy; exhaustive is right for the 3-100 photos of a sparse capture."""
    camera_model: Literal["OPENCV", "SIMPLE_RADIAL", "PINHOLE"] = "OPENCV"
    """COLMAP camera model, shared by all photos."""
    min_registered: int = 3
    """Fail unless at least this many photos register."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """SIFT on the GPU when pycolmap was built with CUDA ("auto")."""
    overwrite: bool = False
    """Replace an existing output folder."""

    def run(self) -> None:
        from data_tools.colmap import pose_images

        pose_images(
            self.images,
            self.out,
            matcher=self.matcher,
            camera_model=self.camera_model,
            min_registered=self.min_registered,
            device=self.device,
            overwrite=self.overwrite,
        )


@dataclass(frozen=True)
class DataImport:
    """Import a benchmark scene into a scene folder (transforms.json + images/ + split files)."""

    format: Positional[Literal["llff", "blender", "nerfstudio", "reconfusion", "dtu", "colmap", "strecha"]]
    """Source layout: llff (poses_bounds.npy + images_N/), blender (transforms_{train,val,test}.json),
    nerfstudio (nerfstudio / instant-ngp transforms.json), reconfusion (released split folder), dtu
    (pixelNeRF/IDR cameras.npz + image/), colmap (a COLMAP model in sparse/0/ or sparse/, binary or text,
    beside images/ or images_N/), strecha (images/ + cameras/NAME.camera)."""
    src: Positional[Annotated[Path, arg(metavar="SRC")]]
    """Source scene folder."""
    out: Positional[Annotated[Path, arg(metavar="OUT")]]
    """Scene folder to write."""
    downscale: Optional[int] = None
    """llff / colmap: which images_N folder to read (default: 8 for llff, the 504x378 benchmark images;
    1 for colmap, images/)."""
    background: Literal["white", "black"] = "white"
    """blender: the background declared for the RGBA images (they are kept with their alpha)."""
    overwrite: bool = False
    """Replace an existing output folder."""

    def run(self) -> None:
        from data_tools.importers import import_scene

        import_scene(
            self.format, self.src, self.out, downscale=self.downscale, background=self.background, overwrite=self.overwrite
        )


@dataclass(frozen=True)
class DataSplits:
    """Write train_test_split_{N}.json files for a scene folder."""

    scene: Positional[Annotated[Path, arg(metavar="SCENE")]]
    """Scene folder."""
    protocol: Literal["llff", "dtu", "blender", "auto"] = "auto"
    """llff: RegNeRF's (every 8th image tests, training views spread evenly over the rest); dtu: the
    standard fixed ids; blender: keep the dataset's own test views; auto: every 8th image tests and
    training views by farthest-point sampling of camera centres."""
    views: tuple[int, ...] = (3, 6, 9)
    """Numbers of training views, one split file each."""
    overwrite: bool = False
    """Replace existing split files that hold other ids (or do not load)."""

    def run(self) -> None:
        from data_tools.splits import write_splits

        write_splits(self.scene, self.protocol, self.views, overwrite=self.overwrite)


@dataclass(frozen=True)
class DataSynthetic:
    """Render procedural multiview scenes (textured primitives) with exact cameras, depth and splits."""

    out: Positional[Annotated[Path, arg(metavar="OUT")]]
    """Folder to write the scenes into (one sub-folder per scene)."""
    scenes: int = 8
    """How many scenes."""
    views: int = 24
    """Views per scene."""
    resolution: int = 64
    """Square image side in pixels."""
    layout: Literal["object-360", "forward-facing"] = "object-360"
    """Cameras around an object on a solid background, or a forward-facing arrangement."""
    seed: int = 0
    """Scene i is generated from seed + i: the same seed gives the same scenes."""
    overwrite: bool = False
    """Replace existing scene folders."""

    def run(self) -> None:
        from data_tools.synthetic import generate_scenes

        generate_scenes(
            self.out,
            num_scenes=self.scenes,
            num_views=self.views,
            resolution=self.resolution,
            layout=self.layout,
            seed=self.seed,
            overwrite=self.overwrite,
        )


@dataclass(frozen=True)
class DataRenderMeshes:
    """Render textured glTF/GLB/OBJ meshes into scene folders (RGBA views, exact cameras, splits) on the CPU."""

    paths: Positional[Annotated[tuple[Path, ...], arg(metavar="MESH [MESH ...] OUT")]]
    """Mesh files (.gltf, .glb, .obj with its .mtl and textures), then the output folder: m.obj becomes OUT/m/."""
    views: int = 24
    """Views per mesh."""
    resolution: int = 128
    """Square image side in pixels."""
    layout: Literal["object-360"] = "object-360"
    """Cameras around the normalised mesh (random radius and elevation, +y up) looking at its centre."""
    seed: int = 0
    """Cameras are a function of the seed and the mesh's file name: the same seed gives the same views."""
    supersample: int = 1
    """Anti-aliasing: supersample x supersample rays per pixel (1 = one ray through the pixel centre)."""
    overwrite: bool = False
    """Replace existing scene folders."""

    def run(self) -> None:
        from data_tools.mesh_render import render_meshes

        if len(self.paths) < 2:
            raise InputError("give one or more mesh files and then the output folder: MESH [MESH ...] OUT")
        render_meshes(
            list(self.paths[:-1]),
            self.paths[-1],
            num_views=self.views,
            resolution=self.resolution,
            layout=self.layout,
            seed=self.seed,
            supersample=self.supersample,
            overwrite=self.overwrite,
        )


@dataclass(frozen=True)
class DataDegrade(DegradeConfig):
    """Fit our NeRF on sparse subsets of scenes and render their held-out views at several stops: the corpus of
    degraded renderings beside their photographs that the repairing prior trains on (resumable)."""

    def run(self) -> None:
        from reconfusion_benchmark.degrade import run_degrade

        run_degrade(self)


DataCommand = Union[
    Annotated[DataColmap, subcommand("colmap")],
    Annotated[DataImport, subcommand("import")],
    Annotated[DataSplits, subcommand("splits")],
    Annotated[DataSynthetic, subcommand("synthetic")],
    Annotated[DataRenderMeshes, subcommand("render-meshes")],
    Annotated[DataDegrade, subcommand("degrade")],
]


@dataclass(frozen=True)
class Data:
    """Pose photos, import benchmark scenes, write sparse-view splits, render procedural scenes and meshes."""

    command: tyro.conf.OmitArgPrefixes[DataCommand]

    def run(self) -> None:
        self.command.run()


@dataclass(frozen=True)
class Info:
    """Print versions and what this machine can use (CUDA, pycolmap CUDA)."""

    def run(self) -> None:
        from reconfusion.environment import describe_environment

        for key, value in describe_environment().items():
            logger.info("%-24s %s", key, value)


@dataclass(frozen=True)
class Benchmark(BenchmarkConfig):
    """Fit and evaluate every (scene, views, method) with nerfstudio; write results, tables, plots, grids."""

    def run(self) -> None:
        from reconfusion_benchmark.sweep import run_benchmark

        run_benchmark(self)


@dataclass(frozen=True)
class Demo:
    """The main job at small scale: a held-out procedural scene fitted from 3 views with and without the
    bundled prior on the CPU; prints the table, writes the renders and plots (under 10 minutes on 2 cores)."""

    out: Path = Path("outputs/demo")
    """Output folder (the scene in data/, the fits in runs/, report.md and figures/)."""
    iterations: int = 600
    """Training iterations of each fit (the demo's time budget was measured with this number)."""
    seed: int = 900000
    """Seed of the procedural scene (900000-900007 and 900100-900107 were never seen by the bundled prior)."""
    layout: Literal["object-360", "forward-facing"] = "object-360"
    """Camera layout of the procedural scene."""
    views: int = 3
    """Training views."""

    def run(self) -> None:
        from reconfusion_benchmark.demo import run_demo

        run_demo(self.out, self.iterations, self.seed, self.layout, self.views)


@dataclass(frozen=True)
class Fit:
    """From photos to a result: pose them with COLMAP (unless SOURCE is a scene folder), write the split,
    fit with ns-train reconfusion (GPU preset with CUDA, else the CPU one), score the held-out views with
    ns-eval, render an orbit video; prints where everything is."""

    source: Positional[Annotated[Path, arg(metavar="PHOTOS_OR_SCENE")]]
    """A folder of photos (jpg/png), or a scene folder with transforms.json."""
    views: int = 3
    """Training views (the rest of every 8th image is held out for scoring)."""
    out: Path = Path("outputs/fit")
    """Output folder: scene/ (posed photos), scenes/ (a downscaled copy), runs/ (nerfstudio), eval.json,
    test_renders/, orbit.mp4."""
    preset: Literal["auto", "cpu", "gpu"] = "auto"
    """nerfstudio method size; auto: gpu where CUDA is available."""
    iterations: Optional[int] = None
    """Training iterations (default: the method's own: 30000 on the GPU, 600 on the CPU, the budget measured in
    benchmarks/results/convergence_full.md)."""
    prior: str = "bundled"
    """The diffusion prior: "bundled", a folder written by train_prior, or a hub id."""
    video_frames: int = 60
    """Frames of the orbit video (15 per second; on the CPU preset rendered at most 128 pixels wide)."""
    max_side: Optional[int] = None
    """Fit a copy of the images downscaled to this longest side (in OUT/scenes/) when they are larger;
    default 1600 on the GPU preset (as nerfstudio downscales), 256 on the CPU one; 0 keeps full size."""

    def run(self) -> None:
        from reconfusion_benchmark.fit import fit_photos

        fit_photos(self.source, self.out, self.views, self.preset, self.iterations, self.prior, self.video_frames,
                   self.max_side)


Command = Union[
    Annotated[Fit, subcommand("fit")],
    Annotated[Data, subcommand("data")],
    Annotated[Info, subcommand("info")],
    Annotated[Benchmark, subcommand("benchmark")],
    Annotated[Demo, subcommand("demo")],
]


def main(argv: list[str] | None = None) -> None:
    """Parse ``argv`` and run the chosen subcommand; bad input exits with its message, not a traceback."""
    logging.basicConfig(level=logging.INFO, handlers=[log_handler()])
    command = tyro.cli(Command, args=argv, config=(tyro.conf.OmitSubcommandPrefixes,))
    try:
        command.run()
    except (InputError, FileNotFoundError) as err:
        sys.stderr.write(f"reconfusion: error: {one_line(str(err))}\n")  # never wrapped: paths stay whole
        sys.exit(2)


def log_handler() -> logging.Handler:
    """Logs go to stdout (errors to stderr): rich's handler when stdout is a terminal; elsewhere (a log file,
    CI) one plain line per record, so that long paths stay whole and can be grepped."""
    if sys.stdout.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))  # rich shows the time and level itself
        return handler
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    return handler


def one_line(message: str) -> str:
    """A message on one line (newlines and runs of spaces collapsed), so it can be copied and grepped."""
    return " ".join(message.split())


def entrypoint() -> None:
    main()
