"""Instance labels from probabilities, and picking channels (runtime.labels, runtime.channels)."""

from __future__ import annotations

import numpy as np
import pytest

from bioimgzoo.errors import InputError
from bioimgzoo.runtime.channels import parse_channels, rgb_to_one_channel, select_channels
from bioimgzoo.runtime.labels import find_probability_channels, output_to_labels, probabilities_to_instances
from bioimgzoo.train.metrics import instance_f1


def disks(shape, centres, radius):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for i, (cy, cx) in enumerate(centres, 1):
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = i
    return labels


def test_touching_objects_are_split_by_the_distance_transform():
    true = disks((40, 60), [(20, 17), (20, 31), (20, 48)], 7)  # the first two touch
    fg = (true > 0).astype(np.float32)
    labels = probabilities_to_instances(fg)
    assert labels.max() == 3 and instance_f1(labels, true) == 1.0
    assert probabilities_to_instances(fg, split=False).max() == 2  # plain components merge them


def test_touching_objects_are_split_by_the_boundary_channel():
    true = disks((30, 40), [(15, 14), (15, 26)], 7)
    fg = (true > 0).astype(np.float32)
    inner = np.zeros_like(fg)
    for i in (1, 2):  # the inner rim of each object
        from scipy import ndimage as ndi

        obj = true == i
        inner[obj & ~ndi.binary_erosion(obj)] = 1
    labels = probabilities_to_instances(fg, inner)
    assert labels.max() == 2 and instance_f1(labels, true) == 1.0
    assert (labels[fg > 0.5] > 0).all()  # every foreground pixel belongs to an object


def test_tiny_specks_and_empty_maps():
    fg = np.zeros((10, 10), np.float32)
    fg[2, 2] = 1
    assert probabilities_to_instances(fg, min_size=4).max() == 0
    assert probabilities_to_instances(np.zeros((5, 5))).max() == 0


def pair(names, n):
    found = find_probability_channels(names, n)
    return found.foreground, found.boundary


def test_probability_channels_from_names():
    assert pair(("foreground", "boundary"), 2) == (0, 1)
    assert pair(("contours", "nuclei"), 2) == (1, 0)
    assert pair(("background", "cells"), 2) == (1, None)
    assert pair(("probability",), 1) == (0, None)
    assert pair((), None) == (None, None)
    assert pair((), 2) == (0, 1)
    with pytest.raises(InputError, match="cannot tell which channel"):
        find_probability_channels(("r", "g", "b"), 3)


def test_output_to_labels_labels_each_slice():
    true = disks((20, 30), [(10, 8), (10, 22)], 5)
    stack = np.stack([true > 0, np.zeros_like(true, bool), true > 0]).astype(np.float32)[:, None]  # z, c, y, x
    ch = find_probability_channels(("foreground",), 1)
    labels, axes = output_to_labels(stack, ("z", "channel", "y", "x"), spatial=("y", "x"), channels=ch)
    assert axes == ("z", "y", "x") and labels.shape == (3, 20, 30)
    # numbered on from slice to slice: every object of the stack has its own label
    assert [sorted(set(np.unique(labels[z])) - {0}) for z in range(3)] == [[1, 2], [], [3, 4]]


def test_output_to_labels_links_overlapping_objects_across_z():
    # two columns of disks through 4 slices, one disk that appears in slice 2 only, and one that
    # moves too far between slices 0 and 1 to be the same object
    a = disks((40, 60), [(10, 10)], 5) > 0
    b = disks((40, 60), [(10, 40)], 5) > 0
    c = disks((40, 60), [(30, 30)], 5) > 0
    d0, d1 = disks((40, 60), [(30, 5)], 4) > 0, disks((40, 60), [(30, 16)], 4) > 0
    stack = np.stack([a | b | d0, a | b | d1, a | b | c, a | b]).astype(np.float32)
    ch = find_probability_channels((), None)
    per_slice, _ = output_to_labels(stack, ("z", "y", "x"), spatial=("y", "x"), channels=ch)
    assert len(np.unique(per_slice)) - 1 == 3 + 3 + 3 + 2
    linked, axes = output_to_labels(stack, ("z", "y", "x"), spatial=("y", "x"), channels=ch, link="z")
    assert axes == ("z", "y", "x") and len(np.unique(linked)) - 1 == 5  # a, b, c, d0, d1
    assert len(np.unique(linked[:, 10, 10])) == 1 and len(np.unique(linked[:, 10, 40])) == 1
    assert linked[0, 30, 5] != linked[1, 30, 16]
    with pytest.raises(InputError, match="cannot link objects along 'z'"):
        output_to_labels(stack[0], ("y", "x"), spatial=("y", "x"), channels=ch, link="z")


def test_channels():
    assert parse_channels("1, 2") == (1, 2) and parse_channels(0) == (0,) and parse_channels(None) is None
    for bad in ("a", "-1", "1,1", ""):
        with pytest.raises(InputError, match="counted from 0"):
            parse_channels(bad)
    x = np.arange(2 * 3 * 4).reshape(3, 2, 4)
    np.testing.assert_array_equal(select_channels(x, ("y", "channel", "x"), (1,)), x[:, 1:2])
    with pytest.raises(InputError, match="has 2 channels"):
        select_channels(x, ("y", "channel", "x"), (2,))
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 100
    gray, axes = rgb_to_one_channel(rgb, ("y", "x", "channel"), "luminance")
    assert axes == ("y", "x") and np.allclose(gray, 29.9)
    red, _ = rgb_to_one_channel(rgb, ("y", "x", "channel"), "red")
    assert (red == 100).all()
    with pytest.raises(InputError, match="not RGB"):
        rgb_to_one_channel(np.zeros((2, 4, 4)), ("channel", "y", "x"), "red")
