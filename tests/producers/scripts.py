"""The producers' build scripts, run in their own environments by :mod:`._build` (source text, not imported).

Each writes into ``sys.argv[1]``: the package (``package/`` folder or a
``.zip``), ``reference.npz`` with the producer's own predictions, and
``producer.json`` with the versions that made them.
"""

from __future__ import annotations

# the environments (requirements; see tests/producers/README in the module docs of the tests)
TF_REQUIREMENTS = ["tensorflow-cpu==2.21.0", "tf_keras==2.21.0", "stardist[bioimageio]==0.9.2",
                   "bioimageio.core==0.5.11"]

COMMON = r'''
import json, os, sys, time, zipfile
from pathlib import Path
os.environ["TF_USE_LEGACY_KERAS"] = "1"  # Keras 2 (tf-keras): StarDist's export_TF refuses Keras 3
import numpy as np

OUT = Path(sys.argv[1])
rng = np.random.default_rng(0)


def blobs(shape, n, rng):
    """Bright round nuclei on a noisy background, and their labels."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = np.zeros(shape, np.float32)
    lab = np.zeros(shape, np.uint16)
    for k in range(1, n + 1):
        cy, cx = rng.integers(6, shape[0] - 6), rng.integers(6, shape[1] - 6)
        r = rng.uniform(4, 8)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        lab[m & (lab == 0)] = k
        img[m] += 1.0
    img = 100 + 400 * img + 20 * rng.standard_normal(shape).astype(np.float32)
    return img.astype(np.float32), lab


def no_network_macros():
    """bioimageio.core 0.5's build_model downloads DeepImageJ's macros from GitHub: write a stand-in instead."""
    import bioimageio.core.build_spec  # noqa: F401  (its build_model function shadows the module's name)

    bm = sys.modules["bioimageio.core.build_spec.build_model"]

    def macro(name, kwargs, export_folder):
        fname = {"scale_range": "per_sample_scale_range.ijm", "scale_linear": "scale_linear.ijm",
                 "zero_mean_unit_variance": "zero_mean_unit_variance.ijm", "binarize": "binarize.ijm"}[name]
        Path(export_folder, fname).write_text("// stand-in for DeepImageJ's " + fname + " (no network here)\n")
        return {"spec": "ij.IJ::runMacroFile", "kwargs": fname}

    bm._get_deepimagej_macro = macro


def cover(folder):
    from PIL import Image

    path = Path(folder) / "cover.png"
    Image.fromarray((rng.random((64, 128)) * 255).astype(np.uint8)).save(path)
    return str(path)


def versions(*dists):
    import importlib.metadata as md

    return {d: md.version(d) for d in dists}
'''

STARDIST = COMMON + r'''
from csbdeep.utils import normalize
from stardist import export_bioimageio
from stardist.models import Config2D, StarDist2D

X, Y = zip(*(blobs((64, 64), 6, rng) for _ in range(6)))
X = [normalize(x, 1, 99.8) for x in X]
conf = Config2D(n_rays=16, grid=(2, 2), n_channel_in=1, unet_n_depth=2, unet_n_filter_base=8,
                train_patch_size=(64, 64), train_batch_size=2, train_tensorboard=False, use_gpu=False)
model = StarDist2D(conf, name="tiny", basedir=str(OUT / "stardist-model"))
t = time.time()
model.train(list(X), list(Y), validation_data=(list(X[:2]), list(Y[:2])), epochs=25, steps_per_epoch=10)
model.thresholds = {"prob": 0.45, "nms": 0.35}  # declared in config.stardist; the decoder must use these
train_seconds = time.time() - t

# StarDist's own predictions (before export_TF, which leaves the Keras model unusable under TF 2.21)
images = {"test": blobs((192, 192), 30, rng)[0], "other": blobs((256, 224), 40, rng)[0]}
ref = {}
for key, img in images.items():
    norm = normalize(img, 1, 99.8)
    labels, _ = model.predict_instances(norm)
    prob, dist = model.predict(norm)
    ref.update({f"{key}_image": img, f"{key}_labels": labels.astype(np.int32), f"{key}_prob": prob,
                f"{key}_dist": dist})
ref["tiled_labels"] = model.predict_instances(normalize(images["other"], 1, 99.8), n_tiles=(2, 2))[0]

model._axes_tile_overlap("SYXC")  # else "Layer or Model is in an invalid state" under TF 2.21
no_network_macros()
t = time.time()
export_bioimageio(model, OUT / "stardist.zip", test_input=images["test"], test_input_axes="YX",
                  overwrite_spec_kwargs={"covers": [cover(OUT)]})
export_seconds = time.time() - t

# TensorFlow's own output of the exported SavedModel on the other image (what bioimgzoo must give)
import tensorflow as tf

with zipfile.ZipFile(OUT / "stardist.zip") as z:
    z.extract("TF_SavedModel.zip", OUT / "tf")
with zipfile.ZipFile(OUT / "tf" / "TF_SavedModel.zip") as z:
    z.extractall(OUT / "tf" / "saved_model")
sig = tf.saved_model.load(str(OUT / "tf" / "saved_model")).signatures["serving_default"]
for key, img in images.items():
    x = normalize(img, 1, 99.8, axis=(0, 1))[None, ..., None].astype(np.float32)
    ref[f"{key}_tf_output"] = sig(input=tf.constant(x))["output"].numpy()
np.savez(OUT / "reference.npz", **ref)
(OUT / "producer.json").write_text(json.dumps({
    "versions": versions("stardist", "tensorflow", "tf_keras", "csbdeep", "bioimageio.core", "bioimageio.spec"),
    "train_seconds": train_seconds, "export_seconds": export_seconds,
    "thresholds": {"prob": 0.45, "nms": 0.35}}))
'''

KERAS_UNET = COMMON + r'''
# A 2D U-Net in tf.keras 2, packaged the way ZeroCostDL4Mic's U-Net notebook (and DeepImageJ's) does:
# bioimageio.core 0.5's build_model with keras_hdf5 weights, then add_weights with the SavedModel bundle.
import shutil
import tensorflow as tf
import tf_keras as keras
from bioimageio.core.build_spec import add_weights, build_model

keras.utils.set_random_seed(0)
L = keras.layers
inp = L.Input((None, None, 1), name="input")
c1 = L.Conv2D(8, 3, padding="same", activation="relu")(inp)
c1 = L.Conv2D(8, 3, padding="same", activation="relu")(c1)
p1 = L.MaxPooling2D(2)(c1)
c2 = L.Conv2D(16, 3, padding="same", activation="relu")(p1)
c2 = L.Conv2D(16, 3, padding="same", activation="relu")(c2)
p2 = L.MaxPooling2D(2)(c2)
b = L.Conv2D(32, 3, padding="same", activation="relu")(p2)
u2 = L.concatenate([L.Conv2DTranspose(16, 2, strides=2, padding="same")(b), c2])
c3 = L.Conv2D(16, 3, padding="same", activation="relu")(u2)
u1 = L.concatenate([L.Conv2DTranspose(8, 2, strides=2, padding="same")(c3), c1])
c4 = L.Conv2D(8, 3, padding="same", activation="relu")(u1)
out = L.Conv2D(1, 1, activation="sigmoid", name="output")(c4)
net = keras.Model(inp, out)
net.compile(optimizer="adam", loss="binary_crossentropy")
X, Y = zip(*(blobs((64, 64), 6, rng) for _ in range(8)))
xs = np.stack([(x - x.min()) / (x.max() - x.min()) for x in X])[..., None]
net.fit(xs, (np.stack(Y) > 0).astype(np.float32)[..., None], epochs=2, batch_size=4, verbose=0)

work = OUT / "work"
work.mkdir()
h5 = work / "weights_best.h5"
net.save(str(h5))  # a Keras 2 HDF5 file, as ZeroCostDL4Mic saves it
# the SavedModel bundle DeepImageJ runs: the model's serving signature, zipped
sm = work / "saved_model"
tf.saved_model.save(net, str(sm))
shutil.make_archive(str(work / "tf_saved_model_bundle"), "zip", sm)

test_img, _ = blobs((128, 128), 12, rng)
x = test_img[None, ..., None]
norm = (x - np.percentile(x, 1)) / (np.percentile(x, 99.8) - np.percentile(x, 1) + 1e-6)
np.save(work / "test_input.npy", x.astype(np.float32))
np.save(work / "test_output.npy", net.predict(norm.astype(np.float32), verbose=0).astype(np.float32))
(work / "README.md").write_text("# 2D U-Net (ZeroCostDL4Mic style)\nA tiny U-Net for tests.\n")
other, _ = blobs((160, 192), 14, rng)
xo = other[None, ..., None]
normo = (xo - np.percentile(xo, 1)) / (np.percentile(xo, 99.8) - np.percentile(xo, 1) + 1e-6)
np.savez(OUT / "reference.npz", other_image=other, other_output=net.predict(normo.astype(np.float32), verbose=0))

no_network_macros()
pkg = OUT / "unet_keras.zip"
build_model(weight_uri=str(h5), test_inputs=[str(work / "test_input.npy")],
            test_outputs=[str(work / "test_output.npy")], input_axes=["byxc"], output_axes=["byxc"],
            output_path=str(OUT / "tmp.zip"), name="ZeroCostDL4Mic style U-Net",
            description="A 2D U-Net trained in ZeroCostDL4Mic style (test)",
            authors=[{"name": "Test Author"}], license="MIT", documentation=str(work / "README.md"),
            covers=[cover(work)], tags=["zerocostdl4mic", "deepimagej", "segmentation", "unet"],
            cite=[{"text": "ZeroCostDL4Mic", "doi": "10.1038/s41467-021-22518-0"}],
            preprocessing=[[{"name": "scale_range", "kwargs": {"mode": "per_sample", "axes": "xyc",
                                                               "min_percentile": 1, "max_percentile": 99.8}}]],
            input_names=["input"], output_names=["output"], input_min_shape=[[1, 32, 32, 1]],
            input_step=[[0, 8, 8, 0]], output_reference=["input"], output_scale=[[1, 1, 1, 1]],
            output_offset=[[0, 0, 0, 0]], halo=[[0, 8, 8, 0]], tensorflow_version=tf.__version__,
            weight_type="keras_hdf5", add_deepimagej_config=True, root=str(work))
add_weights(str(OUT / "tmp.zip"), str(work / "tf_saved_model_bundle.zip"), str(pkg),
            weight_type="tensorflow_saved_model_bundle", tensorflow_version=tf.__version__)
(OUT / "tmp.zip").unlink()
(OUT / "producer.json").write_text(json.dumps({"versions": versions("tensorflow", "tf_keras",
                                                                     "bioimageio.core", "bioimageio.spec")}))
'''

# torch-em, BiaPy and CAREamics import torchvision, and PyPI's torchvision does not load beside this machine's
# torch 2.13.0 CPU build ("operator torchvision::nms does not exist").  torch 2.14.1 with torchvision 0.29.1
# (both on this machine's disk, a CUDA build that runs on the CPU: ~5.5 GB) is the pair that installs and
# imports here: one venv holds it and the producers' venvs layer on it (_build.layered_python); never an
# unpinned torch (GBs of CUDA downloads).
TORCH_PAIR = ["torch==2.14.1", "torchvision==0.29.1"]
# torch-em 0.10.9 leaves bioimageio.core unpinned; 0.10.4 is what its export code (spec 0.5 classes,
# core.backends.pytorch_backend) was written against; pydantic<2.14: bioimageio.spec 0.5.x breaks with 2.14
TORCH_EM_REQUIREMENTS = ["torch_em==0.10.9", "bioimageio.core==0.10.4", "pydantic<2.14"]

TORCH_EM = r'''
# A torch-em UNet2d trained for a couple of iterations by torch-em's own trainer (which writes the checkpoint
# torch-em's export reads), exported with torch_em.util.modelzoo.export_bioimageio_model, and torch-em's own
# prediction: the trainer's normalizer and torch_em.util.prediction.predict_with_padding, on the checkpoint's
# model and on the model torch-em imports back from the package (import_bioimageio_model).
import json, sys, time
from pathlib import Path
import h5py
import numpy as np
import torch
import torch_em
from torch_em.model import UNet2d
from torch_em.transform.label import labels_to_binary
from torch_em.util.modelzoo import export_bioimageio_model, import_bioimageio_model, normalize_with_batch
from torch_em.util.prediction import predict_with_padding
from torch_em.util.util import get_normalizer, get_trainer

OUT = Path(sys.argv[1])
torch.manual_seed(0)
rng = np.random.default_rng(0)


def blobs(shape, n):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = np.zeros(shape, np.float32)
    lab = np.zeros(shape, np.uint16)
    for k in range(1, n + 1):
        cy, cx = rng.integers(6, shape[0] - 6), rng.integers(6, shape[1] - 6)
        m = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(4, 8) ** 2
        lab[m & (lab == 0)] = k
        img[m] += 1.0
    return (100 + 400 * img + 20 * rng.standard_normal(shape)).astype(np.float32), lab


data = OUT / "data.h5"
with h5py.File(data, "w") as f:
    raw, lab = blobs((128, 128), 20)
    f["raw"], f["labels"] = raw, lab
loader = dict(raw_paths=str(data), raw_key="raw", label_paths=str(data), label_key="labels", patch_shape=(64, 64),
              batch_size=2, label_transform=labels_to_binary, n_samples=4, ndim=2)
train_loader = torch_em.default_segmentation_loader(**loader)
val_loader = torch_em.default_segmentation_loader(**loader)
model = UNet2d(in_channels=1, out_channels=1, depth=2, initial_features=8, final_activation="Sigmoid")
trainer = torch_em.default_segmentation_trainer(
    name="tiny-unet", model=model, train_loader=train_loader, val_loader=val_loader, device="cpu",
    mixed_precision=False, logger=None, save_root=str(OUT / "train"), compile_model=False)
t = time.time()
trainer.fit(iterations=4)
train_seconds = time.time() - t
checkpoint = OUT / "train" / "checkpoints" / "tiny-unet"

test_image = blobs((128, 128), 24)[0]
other_image = blobs((96, 160), 20)[0]
t = time.time()
ok = export_bioimageio_model(
    str(checkpoint), str(OUT / "torch_em.zip"), input_data=test_image, name="tiny torch-em unet",
    description="A tiny torch-em UNet2d (test)", authors=[{"name": "Test Author"}], tags=["unet", "test"],
    license="MIT", documentation="# tiny torch-em UNet2d\nTrained for four iterations in a test.\n",
    cite=[{"text": "torch-em", "doi": "10.5281/zenodo.5108853"}], maintainers=[{"github_user": "constantinpape"}],
    input_optional_parameters=False)
export_seconds = time.time() - t
if not ok:
    raise SystemExit("torch-em's own validation of its export failed")

# torch-em's own predictions: the trained model from its checkpoint, with the trainer's normalizer
trainer = get_trainer(str(checkpoint), name="best", device="cpu")
net = trainer.model.eval()
normalizer = get_normalizer(trainer)
ref = {"test_image": test_image, "other_image": other_image}
for key in ("test", "other"):
    ref[f"{key}_output"] = predict_with_padding(net, normalizer(ref[f"{key}_image"]), min_divisible=(4, 4),
                                                device="cpu")
# and the model torch-em reads back from its own package (torch-em's import_bioimageio_model)
back, back_norm = import_bioimageio_model(str(OUT / "torch_em.zip"), device="cpu")
with torch.no_grad():
    ref["other_output_imported"] = back(torch.from_numpy(
        normalize_with_batch(other_image[None, None], back_norm))).numpy()
# TorchScript written by this torch (2.14.1): does the test's torch read it?
torch.jit.save(torch.jit.trace(net, torch.from_numpy(normalizer(test_image)[None, None])), str(OUT / "traced.pt"))
np.savez(OUT / "reference.npz", **ref)
import importlib.metadata as md
(OUT / "producer.json").write_text(json.dumps({
    "versions": {d: md.version(d) for d in ("torch_em", "torch", "torchvision", "bioimageio.core", "bioimageio.spec")},
    "train_seconds": train_seconds, "export_seconds": export_seconds}))
'''

# BiaPy 3.7.1 pins bioimageio.core 0.9.6 (spec 0.5.7.x), timm and torchmetrics; its package root imports its
# training engine (timm, torchvision): layered on the torch 2.14.1/torchvision 0.29.1 pair (TORCH_PAIR).
BIAPY_REQUIREMENTS = ["biapy==3.7.1", "pydantic<2.14"]

BIAPY = r'''
# A tiny 2D semantic-segmentation U-Net trained for one epoch by BiaPy's own API (BiaPy.train), exported
# with BiaPy.export_model_to_bmz (its model.py of collected sources, the state dict, its test tensors), and
# BiaPy's own predictions: the test output its export writes, and BiaPy.predict on other images.
import json, sys, time
from pathlib import Path
import numpy as np
import tifffile
import torch
from biapy import BiaPy, build_config

OUT = Path(sys.argv[1])
rng = np.random.default_rng(0)
torch.manual_seed(0)


def blobs(shape, n):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = np.zeros(shape, np.float32)
    for _ in range(n):
        cy, cx = rng.integers(6, shape[0] - 6), rng.integers(6, shape[1] - 6)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(4, 8) ** 2] = 1.0
    mask = img.astype(np.uint8)
    return (100 + 400 * img + 20 * rng.standard_normal(shape)).astype(np.float32), mask


for split, n in (("train", 8),):
    for sub in ("x", "y"):
        (OUT / "data" / split / sub).mkdir(parents=True)
    for i in range(n):
        img, mask = blobs((64, 64), 6)
        tifffile.imwrite(OUT / "data" / split / "x" / f"img{i}.tif", img)
        tifffile.imwrite(OUT / "data" / split / "y" / f"img{i}.tif", mask)

cfg = build_config(
    "SEMANTIC_SEG", "2D", phase="train", patch_size=(64, 64, 1),
    model={"architecture": "unet", "feature_maps": [8, 16, 32], "dropout_values": [0.0, 0.0, 0.0],
           "z_down": [0, 0], "isotropy": [True, True, True], "conv_layers": [2, 2, 2]},
    train_data={"path": str(OUT / "data" / "train" / "x"), "gt_path": str(OUT / "data" / "train" / "y")},
    extra_config={"TRAIN": {"EPOCHS": 1, "BATCH_SIZE": 2}, "SYSTEM": {"NUM_CPUS": 2, "NUM_WORKERS": 0},
                  "DATA": {"VAL": {"SPLIT_TRAIN": 0.25}}})
t = time.time()
job = BiaPy(cfg, result_dir=str(OUT / "results"), name="tiny", run_id=1, gpu="")
job.train()
train_seconds = time.time() - t

t = time.time()
job.export_model_to_bmz(str(OUT / "bmz"), bmz_cfg={
    "description": "A tiny BiaPy 2D semantic segmentation U-Net (test)",
    "authors": [{"name": "Test Author", "github_user": "danifranco"}], "license": "MIT",
    "tags": ["test", "nuclei"], "model_name": "tiny-biapy-unet",
    "data": {"name": "synthetic blobs", "doi": "10.5281/zenodo.5108853", "image_modality": "fluorescence"},
    "cite": [{"text": "BiaPy: accessible deep learning on bioimages", "doi": "10.1038/s41592-025-02699-y"}]})
export_seconds = time.time() - t
(package,) = (OUT / "bmz").glob("*.zip")
package.rename(OUT / "biapy.zip")

# BiaPy's own prediction of other images of the patch size (its in-memory predict: its normalization, its model)
ref = {}
for i in range(2):
    img = blobs((64, 64), 6)[0]
    ref[f"other{i}_image"] = img
    pred = job.predict(img)
    ref[f"other{i}_biapy"] = np.asarray(pred)
np.savez(OUT / "reference.npz", **ref)
import importlib.metadata as md
(OUT / "producer.json").write_text(json.dumps({
    "versions": {d: md.version(d) for d in ("biapy", "torch", "torchvision", "bioimageio.core", "bioimageio.spec")},
    "train_seconds": train_seconds, "export_seconds": export_seconds}))
'''

# CAREamics 0.3.5 pins torch<2.14 and torchvision<=0.26 (and its microssim 0.0.5 torch<=2.14.0), and its BMZ
# export imports torchvision (for the version it writes in its env file): no pair of those installs from this
# machine's disk (torch 2.13.0's PyPI torchvision does not load beside its CPU build; an older pair is a
# multi-GB CUDA download).  So CAREamics is layered on the torch 2.14.1/torchvision 0.29.1 pair (TORCH_PAIR),
# careamics and microssim installed with --no-deps after the rest of what they require: one minor release
# past their torch pins.  bioimageio.core 0.11.0: careamics' upper bound.
CAREAMICS_REQUIREMENTS = ["lightning>=2.2,<=2.6.6,!=2.6.2,!=2.6.3", "psutil<=7.2.2", "matplotlib<=3.11.2",
                          "scikit-image<=0.26.0", "scipy<=1.17.1", "tifffile<=2026.3.3", "tqdm<=4.70.0",
                          "torchmetrics>0.7.0,<=1.8.2", "zarr>=3.0.0,<4.0.0", "pydantic>=2.11,<2.14",
                          "bioimageio.core==0.11.0", "pyyaml!=6.0.0,<=6.0.3"]
CAREAMICS_NO_DEPS = ["careamics==0.3.5", "microssim==0.0.5"]

CAREAMICS = r'''
# An N2V model trained for one epoch by CAREamics' own API (create_n2v_config, CAREamist.train), exported
# with CAREamist.export_to_bmz, and CAREamics' own prediction (CAREamist.predict, untiled) of other images.
import json, sys, time
from pathlib import Path
import numpy as np
import torch
from careamics import CAREamist
from careamics.config import create_n2v_config

OUT = Path(sys.argv[1])
rng = np.random.default_rng(0)
torch.manual_seed(0)


def noisy(shape):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    clean = 100 + 50 * np.sin(yy / 5.0) * np.cos(xx / 7.0)
    return (clean + 10 * rng.standard_normal(shape)).astype(np.float32)


train = noisy((128, 128))
val = noisy((64, 64))
config = create_n2v_config(experiment_name="tiny_n2v", data_type="array", axes="YX", patch_size=[32, 32],
                           batch_size=4, num_epochs=1)
t = time.time()
careamist = CAREamist(config, work_dir=str(OUT / "work"), enable_progress_bar=False)
careamist.train(train_data=train, val_data=val)
train_seconds = time.time() - t
test_image = noisy((64, 64))
t = time.time()
careamist.export_to_bmz(OUT / "careamics.zip", friendly_model_name="tiny_n2v", input_array=test_image,
                        authors=[{"name": "Test Author"}], general_description="A tiny N2V model (test)",
                        data_description="Synthetic noisy sine patterns")
export_seconds = time.time() - t
ref = {}
for key, shape in (("test", (64, 64)), ("other", (96, 128))):
    img = test_image if key == "test" else noisy(shape)
    pred, _ = careamist.predict(pred_data=img, data_type="array", axes="YX")
    ref[f"{key}_image"] = img
    ref[f"{key}_careamics"] = np.squeeze(np.concatenate(pred, axis=0))
np.savez(OUT / "reference.npz", **ref)
import importlib.metadata as md
(OUT / "producer.json").write_text(json.dumps({
    "versions": {d: md.version(d) for d in ("careamics", "torch", "torchvision", "lightning", "bioimageio.core",
                                             "bioimageio.spec")},
    "train_seconds": train_seconds, "export_seconds": export_seconds}))
'''
