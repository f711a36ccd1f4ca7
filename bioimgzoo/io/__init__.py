"""Image files in and out.

One module per kind of storage: :mod:`.images` for whole-file formats
(TIFF, PNG/JPEG, ``.npy``). Nothing here imports torch or onnxruntime.
"""

from .images import IMAGE_SUFFIXES, find_images, output_path, read_image, write_image
from .images import Calibration, image_stem, png_ready, read_calibration

__all__ = ["read_image", "write_image", "output_path", "IMAGE_SUFFIXES", "find_images"]
__all__ += ["Calibration", "read_calibration", "image_stem", "png_ready"]
