"""Image files in and out.

One module per kind of storage: :mod:`.images` for whole-file formats
(TIFF, PNG/JPEG, ``.npy``). Nothing here imports torch or onnxruntime.
"""

from .images import IMAGE_SUFFIXES, find_images, output_path, read_image, write_image

__all__ = ["read_image", "write_image", "output_path", "IMAGE_SUFFIXES", "find_images"]
