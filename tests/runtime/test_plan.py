import itertools
from fractions import Fraction

import pytest

from bioimgzoo.descr.sizes import AxisSizes, valid_size_at_least
from bioimgzoo.runtime.plan import choose_tile_size, grid_period, plan_axis, plan_tiles


@pytest.mark.parametrize("n,tile,halo,align", [
    (2048, 512, 32, 64), (2000, 512, 32, 16), (513, 512, 32, 64), (100, 64, 8, 16), (1000, 96, 16, 16),
    (77, 32, 4, 1), (4096, 1024, 0, 16), (33, 32, 15, 1),
])
def test_windows_partition_the_axis_and_respect_the_halo(n, tile, halo, align):
    windows = plan_axis(n, tile, halo=halo, align=align)
    # inner regions partition [0, n) in order
    assert windows[0].inner_start == 0 and windows[-1].inner_stop == n
    for a, b in zip(windows, windows[1:]):
        assert a.inner_stop == b.inner_start
    for w in windows:
        assert w.stop - w.start == tile
        assert 0 <= w.start and w.stop <= max(n, tile)
        # each inner region lies in the trusted part of its window (image edges excepted)
        lo = w.start + (halo if w.start > 0 else 0)
        hi = w.stop - (halo if w.stop < n else 0)
        assert lo <= w.inner_start < w.inner_stop <= hi
    # starts on the alignment grid, except a last window flush with the end
    for w in windows[:-1]:
        assert w.start % align == 0
    assert windows[-1].stop == n


def test_small_axis_gets_one_padded_window():
    (w,) = plan_axis(300, 512, halo=32)
    assert (w.start, w.stop, w.inner_start, w.inner_stop) == (0, 512, 0, 300)


def test_fixture_tiling_is_stride_448():
    starts = [w.start for w in plan_axis(2048, 512, halo=32, align=64)]
    assert starts == [0, 448, 896, 1344, 1536]


def test_boundaries_land_on_whole_output_pixels_for_downsampling():
    for w in plan_axis(1000, 128, halo=16, align=16, scale=Fraction(1, 4)):
        assert w.inner_start % 4 == 0


def test_halo_too_large_is_refused():
    with pytest.raises(ValueError, match="halo"):
        plan_axis(1000, 64, halo=32)


def test_plan_tiles_is_the_product_of_axes():
    tiles = plan_tiles({"y": 1000, "x": 600}, {"y": 256, "x": 256}, halo={"y": 16, "x": 16}, align={"y": 16, "x": 16})
    ny = len(plan_axis(1000, 256, halo=16, align=16))
    nx = len(plan_axis(600, 256, halo=16, align=16))
    assert len(tiles) == ny * nx
    covered = set()
    for t in tiles:
        wy, wx = t.windows["y"], t.windows["x"]
        covered.add((wy.inner_start, wx.inner_start))
    assert len(covered) == len(tiles)


def test_valid_sizes_and_tile_choice():
    s = AxisSizes(64, 16)
    assert valid_size_at_least(s, 70) == 80 and valid_size_at_least(s, 10) == 64
    assert s.is_valid(96) and not s.is_valid(100)
    assert choose_tile_size(300, s, halo=8, target=1024) == 304  # whole image, padded to valid
    t = choose_tile_size(5000, s, halo=8, target=1024)
    assert s.is_valid(t) and t <= 1024
    assert choose_tile_size(5000, AxisSizes(512), halo=32, target=1024) == 512  # fixed


def test_plan_is_pure():
    a = plan_tiles({"y": 777}, {"y": 128}, halo={"y": 8})
    b = plan_tiles({"y": 777}, {"y": 128}, halo={"y": 8})
    assert a == b


def test_windows_start_at_multiples_of_a_given_period_however_short_the_stride():
    # a fixed 64-pixel window overlapped by a measured radius of 23 leaves a stride of 18: starts at multiples
    # of 18 misalign a network that pools by 4 (tiles then differ from the whole image); the measured
    # receptive field passes the network's period (the step of the sizes it accepts, here 8)
    windows = plan_axis(256, 64, halo=23, align=8)
    starts = [w.start for w in windows]
    assert all(s % 8 == 0 for s in starts), starts
    assert starts[-1] + 64 == 256
    assert windows[0].inner_start == 0 and windows[-1].inner_stop == 256
    assert all(a.inner_stop == b.inner_start for a, b in zip(windows, windows[1:]))


def test_a_stride_shorter_than_the_alignment_steps_by_a_divisor_of_it():
    # a fixed 64-pixel window (aligned to 64: the network's pooling is unknown) overlapped by a radius of 25
    # leaves a stride of 14: starts at multiples of 14 misalign a network that pools by 4 (CAREamics' N2V
    # U-Net of depth 2); the largest divisor of 64 that fits, 8, keeps every start on the pooling grid
    assert grid_period(64, 25, 64) == 8
    windows = plan_axis(192, 64, halo=25, align=grid_period(64, 25, 64))
    starts = [w.start for w in windows]
    assert all(s % 8 == 0 for s in starts), starts
    assert starts[:3] == [0, 8, 16] and starts[-1] + 64 == 192
    assert windows[0].inner_start == 0 and windows[-1].inner_stop == 192
    assert all(a.inner_stop == b.inner_start for a, b in zip(windows, windows[1:]))
    for w in windows:  # every inner region keeps the halo's context (image edges excepted)
        assert w.start + (25 if w.start > 0 else 0) <= w.inner_start < w.inner_stop <= w.stop - (25 if w.stop < 192 else 0)
    # strides as long as the alignment keep it; an odd alignment gives its largest divisor that fits
    assert grid_period(512, 32, 64) == 64 and grid_period(64, 1, 64) == 32 and grid_period(30, 10, 12) == 6
