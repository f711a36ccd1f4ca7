"""``bioimgzoo predict`` for images larger than memory: zarr / OME-Zarr / TIFF in, OME-Zarr out, clusters.

:func:`zarr_options` adds the options; :func:`wants_zarr` tells whether a
command line is for this path (an output ending in ``.zarr``, or a zarr
input); :func:`predict_zarr` runs it through
:func:`bioimgzoo.runtime.outofcore.predict_lazy`.
"""

from __future__ import annotations

from pathlib import Path

import click

from ..descr.axes import axis_letter
from ..errors import InputError

__all__ = ["zarr_options", "wants_zarr", "predict_zarr", "pop_options", "predict_files_on_cluster"]

_OPTIONS = [
    click.option("--ngff", type=click.Choice(["0.4", "0.5"]), default=None,
                 help="OME-Zarr output version: 0.4 (zarr v2, default, read by most viewers) or 0.5 (zarr v3, "
                      "shards)."),
    click.option("--work-unit", "work_unit", type=int, default=None,
                 help="Work unit edge in input pixels per tiled axis (default 1024 in 2D, 128 in 3D)."),
    click.option("--scheduler", default=None, help="dask.distributed scheduler address (tcp://host:8786)."),
    click.option("--workers", type=int, default=None, help="Run on a LocalCluster of N worker processes."),
    click.option("--threads", type=int, default=None, help="Threads per cluster worker (default 1)."),
    click.option("--resume", is_flag=True, help="Continue an interrupted OME-Zarr output from its finished "
                                                "work units."),
    click.option("--raw-output", "raw_output", is_flag=True,
                 help="Write the network's output before postprocessing (how to stream a model with an instance "
                      "decoder such as stardist or cellpose: decode the result afterwards)."),
]
_NAMES = ("ngff", "work_unit", "scheduler", "workers", "threads", "resume", "raw_output")


def zarr_options(f):
    for opt in reversed(_OPTIONS):
        f = opt(f)
    return f


def wants_zarr(inputs, out: str, options: dict) -> bool:
    """True when the output is a zarr store, or an input is one; the options then are this module's."""
    from ..io.zarr import is_zarr_path

    return is_zarr_path(out) or any(is_zarr_path(i) for i in inputs)


#: options of the files path that an OME-Zarr output cannot take, and why (said before the run, never dropped)
_NOT_FOR_ZARR = {
    "channel": "--channel", "rgb": "--rgb", "fmt": "--format", "skip_existing": "--skip-existing",
    "isolated": "--isolated",
}
_ZARR_FIXES = {"--format": "an OME-Zarr output is its own format", "--skip-existing": "use --resume",
               "--channel": "write plain files (-o FOLDER) to pick channels",
               "--rgb": "write plain files (-o FOLDER) to convert RGB",
               "--isolated": "write plain files (-o FOLDER), or install the model's dependencies here"}


def refuse_unused(options: dict, *, where: str, also: dict | None = None, fixes: dict | None = None) -> None:
    """An InputError naming every option given that ``where`` cannot apply, before anything runs."""
    names = {**_NOT_FOR_ZARR, **(also or {})}
    given = [flag for key, flag in names.items() if options.get(key) not in (None, False)]
    if options.get("threshold") is not None and not options.get("labels"):
        given.append("--threshold")
    if options.get("labels_3d") and not options.get("labels"):
        given.append("--labels-3d")
    if given:
        fixes = {"--threshold": "add --labels, or drop it", "--labels-3d": "add --labels, or drop it", **(fixes or {})}
        how = "; ".join(f"{g}: {fixes.get(g, 'drop it')}" for g in given)
        raise InputError(f"{', '.join(given)} cannot apply to {where}: nothing was run ({how})")


def pop_options(options: dict) -> dict:
    """Remove this module's options from ``options`` (for the plain-files path); refuse them there when set."""
    mine = {k: options.pop(k, None) for k in _NAMES}
    given = [k for k, v in mine.items() if v not in (None, False)]
    if given and not mine.get("scheduler") and not mine.get("workers"):
        names = ", ".join("--" + k.replace("_", "-") for k in given)
        raise InputError(f"{names} apply to OME-Zarr outputs: name the output out.ome.zarr (-o out.ome.zarr)")
    return mine


def predict_zarr(source: str, inputs, out: str, options: dict) -> None:
    """Predict one image (zarr, OME-Zarr or TIFF) into the OME-Zarr store ``out``."""
    from .. import load
    from ..io.zarr import is_zarr_path
    from ._options import hub_kwargs, parse_tile

    if len(inputs) != 1:
        raise InputError(f"an OME-Zarr output holds one image, {len(inputs)} inputs were given: predict them one at "
                         "a time, or write plain files into a folder (-o FOLDER)")
    refuse_unused(options, where="an OME-Zarr output", fixes=_ZARR_FIXES)
    image = Path(inputs[0])
    if not image.exists():
        raise InputError(f"input {image} does not exist: check the path")
    if not is_zarr_path(out):
        raise InputError(f"-o {out}: a zarr input is written as OME-Zarr; name the output out.ome.zarr")
    out_path = Path(out)
    if options.get("overwrite") and options.get("resume"):
        raise InputError("--overwrite and --resume contradict each other: give one of them")
    tile = parse_tile(options.get("tile"))
    # open the image before the model: a bad input is said before any download
    from ..io.zarr import check_output_store, open_image

    lazy = open_image(image)
    # an output that is the input, inside it or holding it, or a folder that is not ours: refused before anything
    check_output_store(out_path, inputs=[image, lazy], overwrite=bool(options.get("overwrite")),
                       resume=bool(options.get("resume")))
    isolated = {"isolated": True, "wheels": options.get("wheels")} if options.get("isolated") else {}
    model = load(source, weights=options.get("weights"), device=options.get("device") or "auto",
                 trust_code=bool(options.get("trust_code")), **isolated,
                 **hub_kwargs(options.get("hub"), options.get("offline")))
    model.strict_sizes = bool(options.get("strict_sizes"))
    plan = _labels_before_run(model, lazy, options) if options.get("labels") else None
    done = {"computed": 0, "skipped": 0}

    def count(_sample, _unit, computed):
        done["computed" if computed else "skipped"] += 1

    model.predict(lazy, axes=options.get("axes"), tile=tile, halo=options.get("halo"),
                  batch_size=options.get("batch_size"), nan_policy=options.get("nan_policy") or "warn",
                  progress=True, out=out_path, ngff=options.get("ngff") or "0.4",
                  work_unit=options.get("work_unit"), overwrite=bool(options.get("overwrite")),
                  resume=bool(options.get("resume")), scheduler=options.get("scheduler"),
                  workers=options.get("workers"), threads=options.get("threads"), on_unit=count,
                  raw_output=bool(options.get("raw_output")))
    click.echo(f"Wrote {out_path} (OME-Zarr {options.get('ngff') or '0.4'}): computed {done['computed']} work "
               f"unit(s), {done['skipped']} already done.")
    if plan is not None:
        from ..runtime.stored_labels import add_label_image
        from ._progress import BatchProgress

        with BatchProgress(1) as progress:
            where = add_label_image(out_path, output=plan.output, channels=plan.channels,
                                    spatial=[axis_letter(a) for a in plan.spatial],
                                    threshold=0.5 if options.get("threshold") is None else options["threshold"],
                                    link=plan.link, progress=progress.stage(str(out_path), "Labels"))
        click.echo(f"Wrote the instance labels as the NGFF label image {out_path / where}.")


def _labels_before_run(model, lazy, options: dict):
    """What --labels reads, checked before the run: the store's image, and one slice that fits in memory."""
    from ..descr.axes import axis_letter
    from ..runtime.stored_labels import check_labels_fit
    from ..runtime.outputs import labels_plan

    if options.get("raw_output"):
        raise InputError("--labels reads the model's probabilities, --raw-output writes the network's output before "
                         "them: give one of the two")
    threshold = options.get("threshold")
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise InputError(f"--threshold {threshold} is not valid: give a probability between 0 and 1 (e.g. 0.5)")
    plan = labels_plan(model.package, link=bool(options.get("labels_3d")))
    floats = [o.id for o in model.outputs if not str(o.dtype).startswith(("int", "uint", "bool"))]
    if floats and floats[0] != plan.output:
        raise InputError(f"--labels reads output '{plan.output}', but an OME-Zarr output holds '{floats[0]}' as its "
                         "image: write plain files (-o FOLDER) for --labels")
    axes = options.get("axes") or lazy.axes
    letters = [axis_letter(a) for a in plan.spatial]
    if axes and all(a in axes for a in letters):
        shape = [lazy.shape[axes.index(a)] for a in letters]
    else:  # no names: the last axes are the model's space axes
        shape = list(lazy.shape[-len(letters):])
    out = next(o for o in model.outputs if o.id == plan.output)
    shape = [int(round(n * float(out.scale.get(a, 1.0)) / float(model.inputs[0].scale.get(a, 1.0) or 1.0)))
             for n, a in zip(shape, plan.spatial)]
    check_labels_fit(shape)
    return plan


def predict_files_on_cluster(source: str, inputs, out_dir: str, options: dict, cluster: dict) -> None:
    """Many image files through a dask cluster (--scheduler / --workers): OUT/{image}_{output}.tif as each finishes."""
    from .. import load
    from ..io import find_images
    from ..runtime.executor.distributed import predict_files
    from ._options import hub_kwargs, parse_tile, writable_out_dir

    if cluster.get("raw_output"):
        raise InputError("--raw-output applies to OME-Zarr outputs: name the output out.ome.zarr (-o out.ome.zarr)")
    refuse_unused(options, where="many files on a cluster (--scheduler / --workers)",
                  also={"labels": "--labels", "strict_sizes": "--strict-sizes"},
                  fixes={g: "drop it, or run without --workers / --scheduler" for g in
                         ("--channel", "--rgb", "--format", "--skip-existing", "--isolated", "--labels",
                          "--strict-sizes")})
    from ._inputs import input_files

    find_images(inputs)  # a missing input is said before the model is opened (a download)
    out_root = writable_out_dir(out_dir)
    model = load(source, weights=options.get("weights"), device=options.get("device") or "auto",
                 trust_code=bool(options.get("trust_code")), **hub_kwargs(options.get("hub"), options.get("offline")))
    files = input_files(inputs, out_root, model)
    dests = []
    sources = {f.resolve(): f for f in files}
    for f in files:
        stem = f.name.split(".")[0]
        dest = out_root / f"{stem}_{{output}}.tif"
        if not options.get("overwrite") and any(out_root.glob(f"{stem}_*.tif")):
            raise InputError(f"outputs of {f.name} exist in {out_root}: pass --overwrite to replace them")
        dests.append(str(dest))
    for f, dest in zip(files, dests):
        for o in model.outputs:
            target = Path(dest.replace("{output}", o.id)).resolve()
            if target in sources:  # an output is never an input: --overwrite would destroy it
                raise InputError(f"the output {target.name} of {f} would replace the input {sources[target]}: choose "
                                 "another -o folder (nothing was written)")
    n = [0]

    def done(_f, _w):
        n[0] += 1

    predict_files(model, [str(f) for f in files], dests, scheduler=cluster.get("scheduler"),
                  workers=cluster.get("workers"), threads=cluster.get("threads"), on_done=done,
                  axes=options.get("axes"), tile=parse_tile(options.get("tile")), halo=options.get("halo"),
                  batch_size=options.get("batch_size"), nan_policy=options.get("nan_policy") or "warn")
    click.echo(f"Wrote the outputs of {n[0]} image(s) to {out_root} (on the cluster)")
