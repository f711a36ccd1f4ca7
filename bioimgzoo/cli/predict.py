"""``bioimgzoo predict``: run a model on image files, losing nothing.

The command runs in steps, one helper each, so options slot in where they belong:

1. :func:`_check_options`: every check of the command line, before the model
   is opened (a download) or anything written;
2. :func:`_plan_outputs`: one unique output path per image and output (same
   names from different folders keep their folders under ``-o``), checked
   against what exists (``--overwrite``, ``--skip-existing``) before any
   prediction;
3. :func:`_predict_all`: the images stream through one loaded model; an image
   that cannot be read or does not fit the model is reported with its file
   name and the run goes on;
4. :func:`_write_outputs`: Fiji-ready TIFF (ImageJ hyperstack, the input's
   calibration), OME-TIFF, PNG or ``.npy``, and instance labels (``--labels``);
5. :func:`_write_manifest` and :func:`_summary`: ``bioimgzoo-results.csv``
   next to the outputs, and a summary naming every failure (exit status 1).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import click

from ._messages import cli_spelling
from ._inputs import input_files
from ._progress import BatchProgress
from ._zarr_predict import pop_options, predict_files_on_cluster, predict_zarr, wants_zarr, zarr_options
from ._options import hub_kwargs, hub_opts, parse_tile, writable_out_dir

MANIFEST_NAME = "bioimgzoo-results.csv"
FORMATS = ("tif", "ome-tiff", "png", "npy")
RGB_CHOICES = ("luminance", "red", "green", "blue")
#: axis letters --axes accepts (s: samples, read as channel; q: an unnamed axis of size 1)
AXIS_LETTERS = "btczyxisq"


@dataclass
class ImageJob:
    """One input file: where its outputs go, and what happened to it."""

    path: Path
    label: str  # how messages name it (the path as given)
    outputs: dict[str, Path]  # output id (or "labels") -> file
    status: str = "pending"  # pending | done | failed | skipped
    message: str = ""
    seconds: float = 0.0
    written: list[Path] = field(default_factory=list)


@dataclass
class PredictOptions:
    """The command line, checked (see :func:`_check_options`)."""

    tile: Any
    channels: tuple[int, ...] | None
    rgb: str | None
    axes: str | None
    fmt: str | None
    labels: bool
    threshold: float
    labels_3d: bool
    overwrite: bool
    skip_existing: bool
    extra: dict = field(default_factory=dict)  # options of other steps, by name


@click.command()
@click.argument("source")
@click.argument("inputs", nargs=-1, required=True)
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(), help="Output folder (created if missing).")
@click.option("--weights", default=None, help="Weight format: onnx, torchscript or pytorch_state_dict.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda or auto.")
@click.option("--axes", default=None, help="Layout of the images, e.g. yx, cyx, zyx (default: from the file).")
@click.option("--channel", "channel", default=None, metavar="N[,M...]",
              help="Channels of the images to use, counted from 0 (e.g. 1, or 0,2).")
@click.option("--rgb", type=click.Choice(RGB_CHOICES), default=None,
              help="Turn RGB images into one channel: luminance, or one colour.")
@click.option("--tile", default=None, help="Window size: 512, or per axis y=256,x=512 (default: automatic).")
@click.option("--halo", type=int, default=None, help="Input pixels dropped at inner window edges (default: the model's).")
@click.option("--batch-size", type=int, default=None, help="Windows per engine call (default: automatic).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default=None,
              help="Output file type: tif (ImageJ hyperstack), ome-tiff, png (2D or RGB, scaled), npy "
                   "(default: tif; npy for .npy inputs).")
@click.option("--labels", is_flag=True,
              help="Also write instance labels ({image}_labels): foreground probabilities thresholded, touching "
                   "objects split by the boundary channel or the distance transform; for a StarDist package "
                   "(config.stardist), StarDist's own decoder with the package's thresholds.")
@click.option("--threshold", type=float, default=None,
              help="Foreground (and boundary) probability threshold for --labels (default 0.5).")
@click.option("--labels-3d", "labels_3d", is_flag=True,
              help="With --labels on a z stack through a 2D model: link the objects of neighbouring slices that "
                   "overlap into 3D objects (default: each slice labelled on its own, labels numbered on).")
@click.option("--overwrite", is_flag=True, help="Replace outputs that already exist.")
@click.option("--skip-existing", is_flag=True, help="Skip images whose outputs all exist (resume a batch).")
@click.option("--nan-policy", type=click.Choice(["warn", "fail", "zero"]), default="warn", show_default=True,
              help="NaN/inf pixels: warn (statistics skip them), fail, or zero (replace by 0).")
@click.option("--trust-code", is_flag=True, help="Allow running Python code shipped in the package.")
@click.option("--strict-sizes", is_flag=True,
              help="Keep to the declared window sizes and halo (default: tiles of a package declaring no halo "
                   "overlap by the network's measured receptive field, in larger windows where it takes them).")
@click.option("--isolated", is_flag=True,
              help="Run pytorch_state_dict weights in a virtual environment with the packages the model declares "
                   "(built once, cached; installing them runs their code: needs --trust-code).")
@click.option("--wheels", default=None, type=click.Path(), metavar="DIR",
              help="With --isolated: install the model's dependencies from the wheels in DIR instead of the index.")
@hub_opts
@zarr_options
def predict(source, inputs, out_dir, **options):
    """Run model SOURCE (folder, rdf.yaml, .zip, URL or zoo id) on INPUTS (files, folders, globs).

    Writes OUT/{image}_{output_id}.tif for every image and output (ImageJ
    hyperstacks with the input's pixel sizes), keeps the folders of inputs
    whose names repeat, never replaces an existing file without --overwrite,
    and lists every image in OUT/bioimgzoo-results.csv.  An image that fails
    is reported and the others go on; the exit status is 1 if any failed.
    """
    if wants_zarr(inputs, out_dir, options):  # images larger than memory: OME-Zarr out (cli/_zarr_predict.py)
        return predict_zarr(source, inputs, out_dir, options)
    cluster = pop_options(options)
    if cluster.get("scheduler") or cluster.get("workers"):  # many files through a dask cluster
        return predict_files_on_cluster(source, inputs, out_dir, options, cluster)
    with cli_spelling(), _warnings_to_terminal() as warnings:
        jobs = _run(source, inputs, out_dir, options, warnings)
    if any(j.status == "failed" for j in jobs):
        raise SystemExit(1)


def _run(source: str, inputs: tuple[str, ...], out_dir: str, options: dict,
         warnings: "_warnings_to_terminal | None" = None) -> list[ImageJob]:
    from ..io import find_images
    from ..package import open_package
    from ..runtime.outputs import labels_plan

    opts = _check_options(options)
    find_images(inputs)  # a missing input is said before the model is opened (a download)
    out_root = writable_out_dir(out_dir)
    package = open_package(source, **hub_kwargs(options.get("hub"), options.get("offline")))
    files = input_files(inputs, out_root, package)
    labels_from = labels_plan(package, link=opts.labels_3d) if opts.labels else None
    jobs = _plan_outputs(files, out_root, package, opts, labels=labels_from is not None)
    todo = _check_existing(jobs, opts)
    if warnings is not None:
        warnings.names = [j.label for j in jobs]
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        if todo:
            model = _load(package, options)
            _predict_all(model, todo, opts, options, labels_from)
    finally:
        if warnings is not None:
            warnings.flush(jobs)
        # also after an interruption or an error of the whole run: the record of what was done
        # is what --skip-existing resumes from (a run that did nothing leaves the folder untouched)
        if any(j.status != "pending" for j in jobs):
            _write_manifest(out_root, jobs, started=started)
    _summary(jobs, out_root)
    return jobs


# --------------------------------------------------------------------------- 1. options
def _check_options(options: dict) -> PredictOptions:
    """Everything the command line can get wrong, said before anything is opened or written."""
    from ..errors import InputError
    from ..runtime.channels import parse_channels

    tile = parse_tile(options.get("tile"))
    axes = options.get("axes")
    if axes is not None:
        bad = sorted({ch for ch in axes.lower() if ch not in AXIS_LETTERS and not ch.isspace()})
        if bad or not axes.strip():
            raise InputError(f"--axes {axes!r}: unknown axis {', '.join(repr(b) for b in bad) or '(none given)'}; "
                             "use one letter per image dimension: b (batch), c (channel), t (time), z, y, x")
        if len(set(axes.lower())) != len(axes.lower()):
            raise InputError(f"--axes {axes!r} repeats an axis: name each axis once, e.g. cyx")
    channels = parse_channels(options.get("channel"), option="--channel ")
    rgb = options.get("rgb")
    if channels is not None and rgb is not None:
        raise InputError("--channel and --rgb both choose channels: give one of them")
    threshold = options.get("threshold")
    labels = bool(options.get("labels"))
    # an option that cannot apply is said before the run, never silently dropped
    if threshold is not None and not labels:
        raise InputError(f"--threshold {threshold} applies to --labels only: add --labels, or drop --threshold")
    if options.get("labels_3d") and not labels:
        raise InputError("--labels-3d links the objects of --labels across z: add --labels, or drop --labels-3d")
    threshold = 0.5 if threshold is None else threshold
    if not 0.0 < threshold < 1.0:
        raise InputError(f"--threshold {threshold} is not valid: give a probability between 0 and 1 (e.g. 0.5)")
    if options.get("overwrite") and options.get("skip_existing"):
        raise InputError("--overwrite and --skip-existing contradict each other: give one of them")
    known = {"tile", "axes", "channel", "rgb", "fmt", "labels", "threshold", "overwrite", "skip_existing",
             "labels_3d"}
    return PredictOptions(tile=tile, channels=channels, rgb=rgb, axes=axes, fmt=options.get("fmt"),
                          labels=labels, threshold=float(threshold), labels_3d=bool(options.get("labels_3d")),
                          overwrite=bool(options.get("overwrite")), skip_existing=bool(options.get("skip_existing")),
                          extra={k: v for k, v in options.items() if k not in known})


# --------------------------------------------------------------------------- 2. outputs
def _plan_outputs(files: list[Path], out_root: Path, package, opts: PredictOptions, *,
                  labels: bool) -> list[ImageJob]:
    """One unique output path per image and output, or an InputError before anything is written.

    Names stay flat (``out/x_probability.tif``) while every image's name is
    unique; when two inputs share a name, every output keeps its input's
    folder relative to the inputs' common folder (``out/a/x_...``, ``out/b/x_...``).
    """
    from ..descr.tensors import tensor_specs
    from ..errors import InputError
    from ..io import image_stem, output_path

    _, outs = tensor_specs(package.descr)
    keys = [o.id for o in outs] + (["labels"] if labels else [])
    resolved = [f.resolve() for f in files]
    seen: dict[Path, Path] = {}
    for f, r in zip(files, resolved):
        if r in seen:
            raise InputError(f"{f} is given twice (also as {seen[r]}): name each image once")
        seen[r] = f
    stems = [image_stem(f).lower() for f in files]
    keep_folders = len(set(stems)) != len(stems)
    common = Path(os.path.commonpath([str(r.parent) for r in resolved])) if keep_folders else None
    jobs, taken = [], {}
    for f, r in zip(files, resolved):
        sub = r.parent.relative_to(common) if common is not None else None
        paths = {k: output_path(out_root, f, k, fmt=_extension(opts.fmt, f), subfolder=sub) for k in keys}
        for k, p in paths.items():
            if p.resolve() in seen:  # an output is never an input (links resolved): --overwrite would destroy it
                raise InputError(f"the output {p} of {f} would replace the input {seen[p.resolve()]}: choose another "
                                 "-o folder (nothing was written)")
            key = str(p).lower()  # case-insensitive file systems (macOS, Windows) collide too
            if key in taken:
                raise InputError(f"{f} and {taken[key]} would both write {p}: rename one of them (nothing was "
                                 "written)")
            taken[key] = f
        jobs.append(ImageJob(f, str(f), paths))
    return jobs


def _extension(fmt: str | None, image: Path) -> str:
    if fmt is not None:
        return fmt
    return "npy" if image.name.lower().endswith(".npy") else "tif"


def _check_existing(jobs: list[ImageJob], opts: PredictOptions) -> list[ImageJob]:
    """The jobs to run: existing outputs are an error unless --overwrite or --skip-existing."""
    from ..errors import InputError

    existing = [(j, p) for j in jobs for p in j.outputs.values() if p.exists()]
    if existing and not opts.overwrite and not opts.skip_existing:
        shown = ", ".join(str(p) for _, p in existing[:3]) + (f" and {len(existing) - 3} more"
                                                              if len(existing) > 3 else "")
        raise InputError(f"{len(existing)} output file(s) already exist ({shown}): nothing was written. Pass "
                         "--overwrite to replace them, --skip-existing to predict only the images without "
                         "results, or choose another -o folder")
    todo = []
    for j in jobs:
        if opts.skip_existing and all(p.exists() for p in j.outputs.values()):
            j.status, j.message = "skipped", "outputs exist (--skip-existing)"
            j.written = list(j.outputs.values())
        else:
            todo.append(j)
    return todo


# --------------------------------------------------------------------------- 3. prediction
def _load(package, options: dict):
    from .. import load
    from ..descr.weights import runnable_formats

    isolated = {"isolated": True, "wheels": options.get("wheels")} if options.get("isolated") else {}
    if options.get("wheels") and not options.get("isolated"):
        from ..errors import InputError

        raise InputError("--wheels names the wheels of an isolated environment: pass it with --isolated")
    model = load(package, weights=options.get("weights"), device=options.get("device"),
                 trust_code=bool(options.get("trust_code")), **isolated)
    model.strict_sizes = bool(options.get("strict_sizes"))
    if options.get("weights") is None:
        avail = runnable_formats(model.descr)
        click.echo(f"Using {model.weights_format} weights on {model.device} "
                   f"(available: {', '.join(avail)}; choose with --weights).", err=True)
    return model


class _Reader:
    """The jobs' images, read one at a time; re-iterable (per-dataset statistics take a first pass).

    ``fed`` lists the jobs handed to the model in the current pass, so a
    failure inside the model's stream is pinned on the image it was reading.
    """

    def __init__(self, jobs: list[ImageJob], opts: PredictOptions, on_error: Callable[[ImageJob, str], None],
                 model: Any = None):
        self.jobs, self.opts, self.on_error, self.model = jobs, opts, on_error, model
        self.fed: list[ImageJob] = []

    def __iter__(self) -> Iterator[Any]:
        self.fed = []
        for job in self.jobs:
            if job.status == "failed":
                continue
            try:
                image = _read(job.path, self.opts, self.model)
            except Exception as e:  # noqa: BLE001 -- one bad file never stops the batch
                self.on_error(job, _why(e))
                continue
            self.fed.append(job)
            yield image


def _read(path: Path, opts: PredictOptions, model: Any = None) -> Any:
    """One image as a DataArray in its file's (or --axes') layout, --rgb applied."""
    import xarray as xr

    from ..descr.axes import parse_axes
    from ..errors import InputError
    from ..io import read_image
    from ..runtime.channels import rgb_to_one_channel

    array, file_axes = read_image(path)
    ax = opts.axes or file_axes
    if ax is None and model is not None and opts.channels is None and not opts.rgb:
        ax = stack_axes(array.shape, model.inputs)
        if ax is not None:
            logging.getLogger("bioimgzoo").warning(
                "%s has no axis metadata and its first axis (%d) cannot be the model's %s: read as a z stack "
                "(axes %s); pass --axes to say otherwise (e.g. --axes cyx)", path, array.shape[0],
                _channels_text(model.inputs[0]), ax)
    if ax is None:
        if opts.rgb or opts.channels is not None:
            raise InputError(f"{path}: the file does not say which axis holds the channels: pass --axes "
                             f"(e.g. --axes cyx for {array.ndim} dimensions)")
        return array
    dims = parse_axes(ax, ndim=array.ndim, what=f"image {path.name}")
    if opts.rgb:
        array, dims = rgb_to_one_channel(array, dims, opts.rgb, what=str(path))
    return xr.DataArray(array, dims=dims)


def stack_axes(shape: tuple[int, ...], inputs) -> str | None:
    """``"zyx"`` for an image of ``shape`` without axis metadata that can only be a z stack, else None.

    A 2D model taking ``channel, y, x`` would read a 3D array as channels first;
    when that first axis cannot be its channels (a fixed count the array does
    not have), the array is a stack of slices.
    """
    if len(inputs) != 1 or len(shape) != 3:
        return None
    axes = [a for a in inputs[0].axes if a.kind != "batch"]
    kinds = [a.kind for a in axes]
    if kinds != ["channel", "space", "space"] or axes[0].size is None or axes[0].size == shape[0]:
        return None
    return "z" + "".join(a.id for a in axes[1:])


def _channels_text(spec) -> str:
    n = next((a.size for a in spec.axes if a.kind == "channel"), None)
    return f"{n} channel{'s' if n != 1 else ''}" if n is not None else "channels"


def _why(e: BaseException) -> str:
    from ..errors import BioimgzooError
    from ._messages import to_cli

    text = str(e) if isinstance(e, BioimgzooError) else f"{type(e).__name__}: {e}"
    return to_cli(text)


def _predict_all(model, jobs: list[ImageJob], opts: PredictOptions, options: dict, labels_from) -> None:
    """Predict every job, writing each result as it comes; a failing image is reported and skipped.

    The model's stream stops at an image that does not fit; the images after
    it are fed again in a fresh stream, so one bad file costs only itself.
    """
    from ..errors import BioimgzooError

    def fail(job: ImageJob, why: str) -> None:
        why = why[len(job.label) + 2:] if why.startswith(job.label + ": ") else why
        job.status, job.message = "failed", why
        click.secho(f"Error: {why if job.label in why else f'{job.label}: {why}'}", fg="red", err=True)

    with BatchProgress(len(jobs)) as progress:
        pending = [j for j in jobs if j.status == "pending"]
        while pending:
            reader = _Reader(pending, opts, fail, model)
            stream = model.iter_predict(reader, tile=opts.tile, halo=options.get("halo"),
                                        batch_size=options.get("batch_size"),
                                        nan_policy=options.get("nan_policy") or "warn",
                                        channels=opts.channels, on_window=progress.windows,
                                        on_plan=progress.planned,
                                        # the image decoded is the next to come out (late-bound `done`)
                                        on_post=lambda steps: progress.decoding(
                                            reader.fed[done].label if done < len(reader.fed) else "image", steps),
                                        names=_Names(reader))
            done = 0
            last = time.perf_counter()
            try:
                for result in stream:
                    job = reader.fed[done]
                    done += 1
                    now = time.perf_counter()
                    job.seconds, last = now - last, now
                    try:
                        _write_outputs(model, job, result, opts, labels_from, progress)
                        job.status = "done"
                    except BioimgzooError as e:
                        fail(job, _why(e))
                    progress.image_done()
            except BioimgzooError as e:
                # the model maps each image as it pulls it: the one pulled last is the one that failed
                culprit = reader.fed[-1] if len(reader.fed) > done else None
                if culprit is None:
                    raise  # not about one image (an option, the engine): the whole run stops
                fail(culprit, _why(e))
                progress.image_done()
            pending = [j for j in pending if j.status == "pending"]


class _Names:
    """Labels for the model's messages: the file of the i-th image fed (the reader skips unreadable files)."""

    def __init__(self, reader: _Reader):
        self.reader = reader

    def __getitem__(self, index: int) -> str:
        return self.reader.fed[index].label


# --------------------------------------------------------------------------- 4. writing
def _write_outputs(model, job: ImageJob, result: Any, opts: PredictOptions, labels_from,
                   progress: "BatchProgress | None" = None) -> None:
    import numpy as np

    from ..io import png_ready, read_calibration, write_image
    from ..runtime.outputs import output_calibration

    def stage(what: str) -> Callable[[float], None]:
        return progress.stage(job.label, what) if progress is not None else (lambda fraction: None)

    outs = result if isinstance(result, dict) else {model.outputs[0].id: result}
    calibration = read_calibration(job.path)
    arrays = {}
    for oid, arr in outs.items():
        dims = tuple(arr.dims) if hasattr(arr, "dims") else model.output_axes(oid)
        arrays[oid] = (np.asarray(arr), dims)
    if labels_from is not None:
        from ..runtime.labels import output_to_labels

        prob, dims = arrays[labels_from.output]
        if labels_from.stardist:  # the stitched whole-image output, decoded with the package's thresholds
            lab, lab_dims = model.labels_of(prob, dims)
        else:
            _warn_not_probabilities(prob, labels_from.output, job.label)
            link = labels_from.link
            if link is not None and link not in dims:
                logging.getLogger("bioimgzoo").warning(
                    "%s has no z axis: --labels-3d has no slices to link, its labels are 2D", job.label)
                link = None
            lab, lab_dims = output_to_labels(prob, dims, spatial=labels_from.spatial, channels=labels_from.channels,
                                             threshold=opts.threshold, link=link, progress=stage("Labels"))
        arrays["labels"] = (lab, lab_dims)
    writing = stage("Writing")
    for i, (key, (arr, dims)) in enumerate(arrays.items()):
        writing(i / len(arrays))
        dest = job.outputs[key]
        cal = output_calibration(model, key if key != "labels" else labels_from.output, calibration,
                                  channels=key != "labels")
        if dest.suffix.lower() == ".png":
            arr, how = png_ready(arr, dims)
            if key != "labels":
                logging.getLogger("bioimgzoo").info("%s: %s", dest.name, how)
                job.message = (job.message + "; " if job.message else "") + f"PNG {dest.name}: {how}"
            dims = "yxc" if arr.ndim == 3 else "yx"
        write_image(dest, arr, axes=dims, calibration=cal)
        job.written.append(dest)
    if progress is not None:
        progress.stage_done()


def _warn_not_probabilities(prob, output: str, label: str) -> None:
    import numpy as np

    if not prob.size:
        return
    # no copy of the output (a large image's is hundreds of MB): NaN-aware minimum and maximum
    lo, hi = float(np.nanmin(prob)), float(np.nanmax(prob))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        finite = prob[np.isfinite(prob)]
        if not finite.size:
            return
        lo, hi = float(finite.min()), float(finite.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        logging.getLogger("bioimgzoo").warning(
            "%s: output '%s' holds values from %.3g to %.3g, not probabilities in 0..1: --threshold may not "
            "mean what it should", label, output, lo, hi)


# --------------------------------------------------------------------------- 5. record
MANIFEST_COLUMNS = ["run", "started", "input", "status", "outputs", "seconds", "message"]


def _write_manifest(out_root: Path, jobs: list[ImageJob], *, started: str = "") -> Path:
    """``bioimgzoo-results.csv``: this run's rows appended to the earlier runs' (run number, start time, input,
    status, outputs, seconds, message); written atomically, so a record is never lost or half written.

    Every run keeps its record: a later run, failed or not, never replaces an earlier one's rows
    (a file of the older layout without ``run`` keeps its rows as run 1).
    """
    import csv

    from .._files import atomic_path

    path = out_root / MANIFEST_NAME
    earlier: list[list[str]] = []
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if rows and rows[0] == MANIFEST_COLUMNS:
            earlier = rows[1:]
        elif rows:  # the older layout: input, status, outputs, seconds, message
            earlier = [["1", ""] + r for r in rows[1:]]
    run = max((int(r[0]) for r in earlier if r and r[0].isdigit()), default=0) + 1
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(MANIFEST_COLUMNS)
            w.writerows(earlier)
            for j in jobs:
                w.writerow([run, started, str(j.path), j.status, ";".join(str(p) for p in j.written),
                            f"{j.seconds:.3f}" if j.status == "done" else "", j.message])
    return path


def _summary(jobs: list[ImageJob], out_root: Path) -> None:
    done = [j for j in jobs if j.status == "done"]
    skipped = [j for j in jobs if j.status == "skipped"]
    failed = [j for j in jobs if j.status == "failed"]
    n_files = sum(len(j.written) for j in done)
    line = f"Wrote {n_files} file(s) for {len(done)} image(s) to {out_root}"
    if skipped:
        line += f"; skipped {len(skipped)} with existing outputs"
    click.echo(line + f" (list: {out_root / MANIFEST_NAME})")
    for j in done:
        if "PNG" in j.message:
            click.echo(f"  {j.label}: {j.message}")
            break
    if failed:
        # each error was printed once, as it happened; the summary names the files
        names = ", ".join(j.label for j in failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10
                                                           else "")
        click.secho(f"{len(failed)} of {len(jobs)} image(s) failed: {names} (the reasons are above and in "
                    f"{out_root / MANIFEST_NAME})", fg="red", err=True)


class _warnings_to_terminal:
    """bioimgzoo's warnings (padding, NaN pixels, ...) as ``Warning: ...`` lines on stderr, each said once.

    A warning that repeats for several images (the same text once the image's name is taken out:
    a batch of small images is padded the same way) is printed the first time only; :meth:`flush`
    then prints one line with how many images it concerned, and adds the warning to each job's
    message (the results CSV).  ``names``: the labels of the run's images.
    """

    class _Echo(logging.Handler):
        def __init__(self, owner: "_warnings_to_terminal"):
            super().__init__(level=logging.WARNING)
            self.owner = owner

        def emit(self, record: logging.LogRecord) -> None:
            self.owner.say(record.getMessage())

    def __init__(self):
        self.names: list[str] = []
        self.seen: dict[str, list[str]] = {}  # the text without the image's name -> the images it was said of

    def say(self, message: str) -> None:
        from ._messages import to_cli

        text = to_cli(message)
        name = next((n for n in sorted(self.names, key=len, reverse=True) if n and n in text), "")
        key = text.replace(name, "{image}") if name else text
        first = key not in self.seen
        self.seen.setdefault(key, []).append(name)
        if first:
            click.secho(f"Warning: {text}", fg="yellow", err=True)

    def flush(self, jobs: list[ImageJob]) -> None:
        """One line per warning said of several images (or several times); each job's message gets its own."""
        by_label = {j.label: j for j in jobs}
        for key, names in self.seen.items():
            for n in names:
                job = by_label.get(n)
                if job is not None:
                    text = key.replace("{image}", n)
                    job.message = (job.message + "; " if job.message else "") + f"warning: {text}"
            if len(names) > 1:
                images = [n for n in dict.fromkeys(names) if n]
                if len(images) > 1:
                    shown = ", ".join(images[:3]) + (f" and {len(images) - 3} more" if len(images) > 3 else "")
                    click.secho(f"Warning (x{len(names)}): the same warning for {len(images)} images in all "
                                f"({shown}); each image's is in the results CSV", fg="yellow", err=True)
                else:
                    click.secho(f"Warning (x{len(names)}): the warning above was said {len(names)} times",
                                fg="yellow", err=True)
        self.seen.clear()

    def __enter__(self):
        self.logger = logging.getLogger("bioimgzoo")
        self.handler = self._Echo(self)
        self.level = self.logger.level
        self.logger.setLevel(logging.WARNING)
        self.logger.addHandler(self.handler)
        self.propagate = self.logger.propagate
        self.logger.propagate = False
        return self

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.level)
        self.logger.propagate = self.propagate
        return False


COMMANDS = [predict]
