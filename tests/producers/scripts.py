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
