"""The network's real receptive field, measured by perturbation, and the tile plan it calls for.

A package declares a halo (input pixels whose output lacks context at a
window edge).  Exports with fixed window sizes often declare none (CAREamics:
fixed 64x64, halo 0), so tiles by the declared sizes leave seams.  When the
declared halo on every tiled axis is 0 and a tiled axis has a fixed size (a
package that declares a halo, or windows of ``min + k * step``, made a
statement about its network, and is trusted), :func:`fitted_plan`:

1. checks whether the network accepts larger windows than declared
   (fully-convolutional networks do): sizes ``fixed + k * step`` on which it
   runs and its output follows the input;
2. measures the receptive field as the exporter does
   (:func:`perturbation_change`: one input pixel changed by a large amount,
   the extent of the output change measured, at a few positions);
3. checks, once, that tiles overlapped by it reproduce the network's
   whole-image prediction (:func:`translation_check`); a network whose
   output depends on the whole window (global pooling, a normalisation over
   the window) or on where a pixel sits in it (a positional term, coordinate
   channels) is *not translation-equivariant*, and says so: it then runs as
   one window when the image fits one, and tiling it is refused with the
   reason otherwise (``strict_sizes=True`` tiles by the declared sizes,
   seams and all);
4. overlaps tiles by it, and uses the larger windows when one of them
   computes a trusted pixel faster than a declared-size window.

The result is cached in the bioimgzoo cache (``receptive-fields/``), so each
package is measured once per machine, under a key of everything that decides
the network (:func:`cache_key`: the weights' sha256 and format, the
architecture with its kwargs, the input's declared sizes).  An entry is
trusted only as far as it can be checked when read (:func:`read_cached`):
its digest (keyed by this user's secret), the key it was written under, the
engine's input shapes, radii within what a network can have on the windows
it was measured on, and one perturbation showing the network reaches no
farther than the stored radius; anything else is a miss, measured again.
``strict_sizes=True`` skips all of this and keeps to the declared sizes.
"""

from .cache import cache_key, cached_measure, read_cached
from .measure import FieldMeasure, measure_receptive_field, perturbation_change, translation_check
from .plan import fitted_plan, tiling_note

__all__ = ["perturbation_change", "FieldMeasure", "measure_receptive_field", "cached_measure", "fitted_plan",
           "translation_check", "cache_key", "read_cached", "tiling_note"]
