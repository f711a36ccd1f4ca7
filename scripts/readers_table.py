"""Readers x package kinds, as measured: does every kind of package bioimgzoo makes open in the deployed readers?

Makes one package of each kind -- ``export`` from a script, ``bioimgzoo export`` (CLI), ``bioimgzoo train
segmentation``, ``bioimgzoo finetune`` and the demo's package (``bioimgzoo demo``'s export) -- with tiny
settings, then asks every reader: JDLL's parser (replayed), PyYAML's YAML 1.1, bioimageio.spec 0.5.7.4 (as BiaPy
pins it), bioimageio.core 0.10.4 (zoo CI) opening it, bioimageio.core 0.10.4's ``test_description``, and BiaPy
3.7.1's ``check_bmz_model_compatibility`` plus its model loading compared with bioimgzoo's network output.
Prints a Markdown table.  The readers' environments are built once (first run: a few minutes).

    python scripts/readers_table.py [--out DIR] [--envs DIR]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np


def _packages(out: Path) -> dict[str, Path]:
    import torch
    from click.testing import CliRunner

    from bioimgzoo.cli import main
    from bioimgzoo.exporter import export_package
    from bioimgzoo.testing import checks as C
    from bioimgzoo.testing import nets as N
    from bioimgzoo.train.data import synthetic_nuclei
    from bioimgzoo.train.demo import run_demo

    made: dict[str, Path] = {}
    rng = np.random.default_rng(0)
    # export from a script: a network of the test-suite (its source is extracted)
    module = C.seeded(N.UNet2d, depth=2)
    made["export (script)"] = export_package(
        module, rng.random((1, 1, 64, 64)).astype(np.float32), out / "script.zip", name="Script UNet 2D",
        **C.meta(), preprocessing=[{"id": "zero_mean_unit_variance", "kwargs": {"axes": ["x", "y"]}}],
        postprocessing=[{"id": "sigmoid"}], task="semantic-segmentation").path
    # export from the command line
    torch.manual_seed(0)
    ckpt, example = out / "ckpt.pt", out / "ex.npy"
    torch.save(N.UNet2d(depth=1).state_dict(), ckpt)
    np.save(example, (rng.random((1, 1, 32, 32)) * 4000).astype(np.uint16))
    r = CliRunner().invoke(main, ["export", "--module", "bioimgzoo.testing.nets:UNet2d", "--kwargs", '{"depth": 1}',
                                  "--checkpoint", str(ckpt), "--example", str(example), "--name", "CLI UNet 2D",
                                  "--description", "Exported from the command line.", "--author", "Test Author",
                                  "--maintainer", "Test Author:bioimageiobot", "--task", "semantic-segmentation",
                                  "--preprocessing", "zero_mean_unit_variance", "--postprocessing", "sigmoid",
                                  "--out", str(out / "cli.zip")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    made["export (CLI)"] = out / "cli.zip"
    # the demo (trains bioimgzoo's own UNet2d; its package ships that network's source)
    demo = run_demo(out / "demo", steps=20, progress=False, device="cpu", big_size=256, n_train=6,
                    echo=lambda m: None)
    made["demo"] = Path(demo.package)
    # train from the command line
    images, labels = synthetic_nuclei(6, (96, 96), seed=3)
    import tifffile

    for sub, arrays in (("img", images), ("lab", labels)):
        (out / sub).mkdir(exist_ok=True)
        for i, a in enumerate(arrays):
            tifffile.imwrite(out / sub / f"{i}.tif", a)
    r = CliRunner().invoke(main, ["train", "segmentation", "--images", str(out / "img"), "--labels",
                                  str(out / "lab"), "--out", str(out / "train.zip"), "--steps", "10", "--depth", "2",
                                  "--base", "4", "--patch", "64", "--batch-size", "4", "--device", "cpu",
                                  "--name", "Trained nuclei U-Net", "--description", "Trained by the readers table.",
                                  "--author", "Test Author", "--maintainer", "Test Author:bioimageiobot", "-q"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    made["train"] = out / "train.zip"
    r = CliRunner().invoke(main, ["finetune", str(made["train"]), "--images", str(out / "img"), "--labels",
                                  str(out / "lab"), "--out", str(out / "finetune.zip"), "--steps", "5", "--patch",
                                  "64", "--batch-size", "4", "--device", "cpu", "-q"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    made["finetune"] = out / "finetune.zip"
    return made


def _network_input(pkg: Path) -> tuple[np.ndarray, np.ndarray]:
    """The test input after the package's preprocessing (bioimageio.core's), and bioimgzoo's state-dict network
    output on it."""
    from bioimageio.core import create_prediction_pipeline
    from bioimageio.core.digest_spec import create_sample_for_model
    from bioimageio.spec import load_description

    from bioimgzoo.package import open_package
    from bioimgzoo.runtime.engines import create_engine

    descr = load_description(pkg)
    with zipfile.ZipFile(pkg) as zf:
        x = np.load(io.BytesIO(zf.read("test_input.npy")))
    tid = descr.inputs[0].id
    pipeline = create_prediction_pipeline(descr, weight_format="onnx" if descr.weights.onnx else None)
    sample = create_sample_for_model(descr, inputs={tid: x}, stat={})
    pipeline.apply_preprocessing(sample)
    order = [a.id for a in descr.inputs[0].axes]
    pre = np.ascontiguousarray(sample.members[tid].transpose(order).data.to_numpy(), dtype=np.float32)
    # these packages were made here: an extracted architecture file is our own code
    engine = create_engine(open_package(pkg), "pytorch_state_dict", device="cpu", trust_code=True, n_outputs=1)
    return pre, engine.run([pre])[0]


def main(argv=None) -> int:
    from bioimgzoo.testing.reader_venvs import VenvUnavailable, run_biapy, run_core_test
    from bioimgzoo.validation.consumers.readers import reader_results

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--envs", type=Path, default=Path.home() / ".cache" / "bioimgzoo-tests" / "venvs")
    args = ap.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="bioimgzoo-readers-table-"))
    out.mkdir(parents=True, exist_ok=True)
    done = {"export (script)": out / "script.zip", "export (CLI)": out / "cli.zip",
            "demo": next(iter(sorted((out / "demo").glob("*.zip"))), out / "demo" / "missing.zip"),
            "train": out / "train.zip", "finetune": out / "finetune.zip"}
    # --out with the packages of an earlier run: measured again, not made again
    packages = done if all(p.is_file() for p in done.values()) else _packages(out)
    rows = {}
    for kind, pkg in packages.items():
        with zipfile.ZipFile(pkg) as zf:
            rdf_text = zf.read("rdf.yaml").decode()
        import yaml

        rdf = yaml.safe_load(rdf_text)
        arch = (rdf["weights"].get("pytorch_state_dict") or {}).get("architecture", {})
        row = {"format": rdf["format_version"], "architecture": arch.get("import_from") or arch.get("source")}
        for r in reader_results(pkg):
            row[r.reader] = r.status + ("" if r.status == "passed" else f" ({r.field}: {r.message[:80]})")
        try:
            core = run_core_test(pkg, args.envs, github_users=["bioimageiobot"])
            failed = [d for d in core.get("details", []) if d["status"] == "failed"]
            row["core 0.10 test"] = core.get("status", core.get("error")) + \
                (f" ({failed[0]['name'][:60]}: {failed[0]['errors'][:1]})" if failed else "")
        except VenvUnavailable as e:
            row["core 0.10 test"] = f"not run: {e}"
        try:
            x, ours = _network_input(pkg)
            np.save(out / "x.npy", x)
            b = run_biapy(pkg, out / "x.npy", out / "y.npy", args.envs, github_users=["bioimageiobot"])
            if "error" in b:
                row["BiaPy check"] = row["BiaPy load"] = f"error: {b['error'][:120]}"
            else:
                row["BiaPy check"] = "accepted" if not b["check"]["error"] else f"refused: {b['check']['reason_message']}"
                diff = float(np.abs(np.load(out / "y.npy") - ours).max()) if b.get("ran") else None
                row["BiaPy load"] = f"max |diff| {diff:.2g}" if diff is not None else f"not run ({b['load_description']})"
        except VenvUnavailable as e:
            row["BiaPy check"] = row["BiaPy load"] = f"not run: {e}"
        rows[kind] = row
    cols = ["format", "architecture", "jdll", "yaml-1.1", "biapy", "zoo-ci", "core 0.10 test", "BiaPy check",
            "BiaPy load"]
    print("| package | " + " | ".join(cols) + " |")
    print("|---|" + "---|" * len(cols))
    for kind, row in rows.items():
        print(f"| {kind} | " + " | ".join(str(row.get(c, "")) for c in cols) + " |")
    (out / "readers_table.json").write_text(json.dumps(rows, indent=2))
    print(f"\npackages and results in {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
