"""Training data: synthetic generators (seeded, numpy only) and folder loading.

No data set can be downloaded where bioimgzoo is developed and demonstrated,
so the demo, the tests and ``scripts/train_metrics.py`` train on synthetic
images that look like fluorescence microscopy of nuclei:

* :func:`synthetic_nuclei` -- images with instance masks: blurred ellipses of
  varying size, shape and brightness (some touching), internal texture, a
  background gradient, Poisson (shot) plus Gaussian (read) noise.
* :func:`synthetic_noisy_pairs` -- clean/noisy pairs for denoising: clean
  nuclei-like images scaled to [0, 1] plus pixel-independent Gaussian noise
  (the noise model Noise2Void assumes).

:func:`load_folder` reads images (and optionally label images) from folders,
matching files by stem, for the command line; each file is read by
:func:`bioimgzoo.io.read_image`, the reader prediction uses.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError
from ..io import IMAGE_SUFFIXES, read_image

__all__ = ["synthetic_nuclei", "synthetic_noisy_pairs", "load_folder", "load_image", "IMAGE_SUFFIXES"]

# IMAGE_SUFFIXES (re-exported): the file suffixes :func:`load_folder` reads, bioimgzoo.io's list


def _ellipse_instances(shape: tuple[int, int], rng: np.random.Generator, *, radius: tuple[float, float],
                       coverage: float, max_overlap: float) -> np.ndarray:
    """Place random ellipses until ``coverage`` of the image is covered; return instance labels.

    An ellipse that would overlap earlier ones by more than ``max_overlap`` of
    its area is rejected; a small overlap is kept, so some nuclei touch.
    Pixels claimed by two ellipses stay with the first (a straight contact line).
    """
    h, w = shape
    labels = np.zeros(shape, np.int32)
    target = coverage * h * w
    covered = 0
    label = 0
    mean_area = np.pi * np.mean(radius) ** 2 * 0.8
    max_tries = int(20 * target / mean_area) + 20
    for _ in range(max_tries):
        if covered >= target:
            break
        a = rng.uniform(*radius)
        b = a * rng.uniform(0.6, 1.0)
        theta = rng.uniform(0, np.pi)
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        r = int(np.ceil(a)) + 1
        y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, h)
        x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, w)
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - cy, xx - cx
        c, s = np.cos(theta), np.sin(theta)
        u = (dx * c + dy * s) / a
        v = (-dx * s + dy * c) / b
        inside = u * u + v * v <= 1.0
        area = int(inside.sum())
        if area < 12:
            continue
        window = labels[y0:y1, x0:x1]
        clash = inside & (window > 0)
        if clash.sum() > max_overlap * area:
            continue
        label += 1
        new = inside & (window == 0)
        window[new] = label
        covered += int(new.sum())
    return labels


def _render_nuclei(labels: np.ndarray, rng: np.random.Generator, *, blur: float) -> np.ndarray:
    """Clean intensity image (nuclei in about [0.35, 1]) for an instance mask, before background."""
    from scipy import ndimage as ndi

    n = int(labels.max())
    brightness = np.concatenate([[0.0], rng.uniform(0.35, 1.0, n)]).astype(np.float32)
    image = brightness[labels]
    # chromatin-like texture: smooth multiplicative noise inside nuclei
    texture = ndi.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), 2.0)
    texture /= texture.std() + 1e-6
    image = image * (1.0 + 0.12 * texture)
    return ndi.gaussian_filter(image, blur).astype(np.float32)


def _background(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A linear gradient in a random direction plus a constant offset."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (np.cos(angle) * xx / max(w - 1, 1) + np.sin(angle) * yy / max(h - 1, 1))
    ramp -= ramp.min()
    ramp /= max(float(ramp.max()), 1e-6)
    return (rng.uniform(0.05, 0.15) + rng.uniform(0.0, 0.2) * ramp).astype(np.float32)


def synthetic_nuclei(n: int, shape: Sequence[int] = (256, 256), *, seed: int,
                     radius: tuple[float, float] = (7.0, 14.0), coverage: tuple[float, float] = (0.15, 0.35),
                     blur: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Fluorescence-like images of nuclei with their instance masks.

    Each image holds ellipses ("nuclei") of random size, elongation, angle and
    brightness, with a smooth texture, blurred by the optics (Gaussian,
    ``blur`` pixels), on a background with a linear gradient.  Shot noise
    (Poisson, with a photon budget drawn per image between 40 and 200
    photons at full brightness) and camera read noise (Gaussian, 2 counts)
    are added, so the images are in camera counts, not in [0, 1].

    Parameters
    ----------
    n : int
        Number of images.
    shape : (int, int)
        Height and width of each image.
    seed : int
        Seed of the random generator: the same seed gives the same images.
    radius : (float, float)
        Range of the ellipses' long semi-axis, in pixels.
    coverage : (float, float)
        Range of the fraction of each image covered by nuclei.
    blur : float
        Sigma of the Gaussian point spread function, in pixels.

    Returns
    -------
    images : ndarray, float32, shape (n, height, width)
    labels : ndarray, int32, shape (n, height, width)
        Instance masks: 0 is background, 1..k are the nuclei of an image.
    """
    shape = _check_shape(shape)
    if n < 1:
        raise InputError(f"synthetic_nuclei needs n >= 1 images, got {n}")
    rng = np.random.default_rng(seed)
    images = np.empty((n, *shape), np.float32)
    labels = np.empty((n, *shape), np.int32)
    for i in range(n):
        lab = _ellipse_instances(shape, rng, radius=radius, coverage=rng.uniform(*coverage), max_overlap=0.08)
        clean = _render_nuclei(lab, rng, blur=blur) + _background(shape, rng)
        photons = rng.uniform(40.0, 200.0)
        noisy = rng.poisson(np.clip(clean, 0, None) * photons).astype(np.float32)
        noisy += rng.normal(0.0, 2.0, shape).astype(np.float32)
        images[i] = noisy
        labels[i] = lab
    return images, labels


def synthetic_noisy_pairs(n: int, shape: Sequence[int] = (256, 256), *, seed: int,
                          sigma: float = 0.15) -> tuple[np.ndarray, np.ndarray]:
    """Noisy/clean image pairs for denoising.

    The clean images are nuclei-like scenes (as :func:`synthetic_nuclei`,
    without noise) scaled to [0, 1]; the noisy images add pixel-independent,
    zero-mean Gaussian noise of standard deviation ``sigma`` -- the noise
    model Noise2Void relies on.  The PSNR of the noisy images is about
    ``20 * log10(1 / sigma)`` dB.

    Returns
    -------
    noisy, clean : ndarray, float32, shape (n, height, width)
    """
    shape = _check_shape(shape)
    if n < 1:
        raise InputError(f"synthetic_noisy_pairs needs n >= 1 images, got {n}")
    if sigma < 0:
        raise InputError(f"sigma must be >= 0, got {sigma}")
    rng = np.random.default_rng(seed)
    clean = np.empty((n, *shape), np.float32)
    for i in range(n):
        lab = _ellipse_instances(shape, rng, radius=(7.0, 14.0), coverage=rng.uniform(0.15, 0.35), max_overlap=0.08)
        img = _render_nuclei(lab, rng, blur=1.5) + _background(shape, rng)
        img -= img.min()
        img /= max(float(img.max()), 1e-6)
        clean[i] = img
    noisy = clean + rng.normal(0.0, sigma, clean.shape).astype(np.float32)
    return noisy.astype(np.float32), clean


def _check_shape(shape: Sequence[int]) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 8:
        raise InputError(f"shape must be (height, width) with both >= 8, got {shape}")
    return shape  # type: ignore[return-value]


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read one image file (TIFF, PNG, JPEG or .npy) as a numpy array (:func:`bioimgzoo.io.read_image`).

    RGB(A) images (the file says ``y, x, channel`` with 3 or 4 channels) are
    returned as (channel, y, x), alpha dropped.
    """
    arr, axes = read_image(path)
    if arr.ndim == 3 and axes == "yxc" and arr.shape[-1] in (3, 4):
        arr = np.moveaxis(arr[..., :3], -1, 0)
    return np.asarray(arr)


def _image_files(folder: Path, what: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise InputError(f"{what} folder {folder} does not exist: pass a folder of TIFF/PNG/npy images")
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."):
            if p.stem in files:
                raise InputError(f"{what} folder {folder} has two files with the stem {p.stem!r} "
                                 f"({files[p.stem].name}, {p.name}): keep one")
            files[p.stem] = p
    if not files:
        raise InputError(f"{what} folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def load_folder(images: str | os.PathLike, labels: str | os.PathLike | None = None
                ) -> tuple[list[np.ndarray], list[np.ndarray] | None, list[str]]:
    """Read the images of a folder, and the matching label images of another.

    Files are matched by stem (``a.tif`` with ``a.png``); every image needs
    its label image and vice versa when ``labels`` is given.

    Returns
    -------
    images : list of ndarray
    labels : list of ndarray or None
    names : list of str
        The stems, sorted.
    """
    image_files = _image_files(Path(images), "images")
    if labels is None:
        names = sorted(image_files)
        return [load_image(image_files[s]) for s in names], None, names
    label_files = _image_files(Path(labels), "labels")
    missing = sorted(set(image_files) - set(label_files))
    extra = sorted(set(label_files) - set(image_files))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"no label image for {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"no image for the labels {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}")
        raise InputError(f"images in {images} and labels in {labels} do not match by file name: "
                         + "; ".join(parts) + ". Give each image a label image with the same stem.")
    names = sorted(image_files)
    imgs, labs = [], []
    for s in names:
        img, lab = load_image(image_files[s]), load_image(label_files[s])
        if img.shape[-2:] != lab.shape[-2:]:
            raise InputError(f"image {image_files[s].name} is {img.shape[-2:]} but its labels "
                             f"{label_files[s].name} are {lab.shape[-2:]}: they must have the same height and width")
        imgs.append(img)
        labs.append(lab)
    return imgs, labs, names
