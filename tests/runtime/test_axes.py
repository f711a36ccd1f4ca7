import numpy as np
import pytest

from bioimgzoo.errors import InputError
from bioimgzoo.descr.axes import AxisInfo, parse_axes
from bioimgzoo.runtime.axes import from_model_layout, output_axes_ids, to_model_layout

BCYX = (AxisInfo("batch", "batch"), AxisInfo("channel", "channel", 1), AxisInfo("y", "space"), AxisInfo("x", "space"))
BCYX3 = (AxisInfo("batch", "batch"), AxisInfo("channel", "channel", 3), AxisInfo("y", "space"), AxisInfo("x", "space"))


def test_parse_axes_letters_and_names():
    assert parse_axes("bcyx") == ("batch", "channel", "y", "x")
    assert parse_axes(["channel", "y", "x"]) == ("channel", "y", "x")
    assert parse_axes(("c", "Y", "X")) == ("channel", "y", "x")
    with pytest.raises(InputError, match="repeat"):
        parse_axes("yy")
    with pytest.raises(InputError, match="3 dimensions"):
        parse_axes("yx", ndim=3)


def test_yx_image_gets_batch_and_channel():
    img = np.arange(12.0).reshape(3, 4)
    arr, fold = to_model_layout(img, "yx", BCYX, tensor_id="raw")
    assert arr.shape == (1, 1, 3, 4)
    np.testing.assert_array_equal(arr[0, 0], img)
    back = from_model_layout(arr, fold, BCYX)
    assert back.shape == (1, 3, 4)
    assert output_axes_ids(fold, BCYX) == ("channel", "y", "x")


def test_layout_guessed_from_ndim():
    arr, _ = to_model_layout(np.zeros((5, 6)), None, BCYX, tensor_id="raw")
    assert arr.shape == (1, 1, 5, 6)
    arr, _ = to_model_layout(np.zeros((3, 5, 6)), None, BCYX3, tensor_id="raw")
    assert arr.shape == (1, 3, 5, 6)


def test_transposed_layout():
    img = np.random.rand(5, 6, 3)
    arr, _ = to_model_layout(img, "yxc", BCYX3, tensor_id="raw")
    np.testing.assert_array_equal(arr[0], img.transpose(2, 0, 1))


def test_extra_axes_fold_into_batch_and_unfold():
    img = np.random.rand(2, 4, 1, 5, 6)  # t z c y x
    arr, fold = to_model_layout(img, "tzcyx", BCYX, tensor_id="raw")
    assert arr.shape == (8, 1, 5, 6)
    np.testing.assert_array_equal(arr[5, 0], img[1, 1, 0])
    back = from_model_layout(arr, fold, BCYX)
    assert back.shape == (2, 4, 1, 5, 6)
    np.testing.assert_array_equal(back, img)
    assert output_axes_ids(fold, BCYX) == ("t", "z", "channel", "y", "x")


def test_wrong_channel_count_names_tensor_axis_and_counts():
    with pytest.raises(InputError) as e:
        to_model_layout(np.zeros((3, 8, 8)), "cyx", BCYX, tensor_id="raw")
    msg = str(e.value)
    assert "'raw'" in msg and "channel" in msg and "1" in msg and "3" in msg


def test_missing_spatial_axis_is_an_error():
    zyx = (AxisInfo("batch", "batch"), AxisInfo("channel", "channel", 1), AxisInfo("z", "space"),
           AxisInfo("y", "space"), AxisInfo("x", "space"))
    with pytest.raises(InputError, match="'z'"):
        to_model_layout(np.zeros((8, 8)), "yx", zyx, tensor_id="raw")


def test_ambiguous_layout_asks_for_axes():
    with pytest.raises(InputError, match="axes="):
        to_model_layout(np.zeros((2, 3, 4, 5, 6, 7)), None, BCYX, tensor_id="raw")
