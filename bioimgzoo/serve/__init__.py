"""``bioimgzoo serve``: models as a service for a lab's many users, tools and machines.

An ASGI app (Starlette, run by uvicorn) speaking the Open Inference
Protocol v2 -- so ``tritonclient.http`` and Triton's perf tools work
unchanged -- plus files in and out for Fiji/QuPath/curl, jobs for images
larger than a request, a web page, and Prometheus metrics.  Every
prediction goes through the runtime's public interface
(:meth:`~bioimgzoo.runtime.model.Model.predict`), so a response equals an
in-process prediction of the same image.

=======================================================  ==========================================
endpoint                                                 what
=======================================================  ==========================================
``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``   server metadata, liveness, readiness
``GET /v2/models/{m}[/versions/1]``                      inputs/outputs: datatype, shape (-1 varies)
``GET /v2/models/{m}[/versions/1]/ready``                200 when loaded
``POST /v2/models/{m}[/versions/1]/infer``               JSON or binary tensors (a whole image each)
``POST /v2/repository/index``                            ``[{name, version, state}]``
``POST /v2/repository/models/{m}/load|unload``           admin token only
``GET /bioimgzoo/v1/models``                             served models, with their tensors
``POST /bioimgzoo/v1/models/{m}/predict``                TIFF/PNG/JPEG/.npy (or multipart) in,
                                                         TIFF (ImageJ, calibrated), PNG, npy out
``POST|GET /bioimgzoo/v1/jobs``, ``GET|DELETE .../{id}``  big images from disk to OME-Zarr
``GET /bioimgzoo/v1/hub/search?q=``                      the zoo's models (for the page)
``GET /metrics``                                         Prometheus text format
``GET /``                                                the web page
=======================================================  ==========================================

Modules: :mod:`.settings` (options, checked), :mod:`.protocol` (the OIP
wire format), :mod:`.batcher` (batching across requests),
:mod:`.registry` (where models come from; the LRU of loaded ones),
:mod:`.files` (files in and out), :mod:`.jobs`, :mod:`.metrics`,
:mod:`.app` (routes and the security at the door), :mod:`.server`
(uvicorn, graceful stop), :mod:`.ray_serve` (the same protocol on Ray
Serve).  starlette, uvicorn and prometheus-client are the ``serve`` extra:
``pip install bioimgzoo[serve]``.
"""

from __future__ import annotations

from .settings import ServeSettings

__all__ = ["ServeSettings", "create_app", "serve"]


def create_app(settings: ServeSettings, **kwargs):
    """The ASGI app (see :func:`bioimgzoo.serve.app.create_app`)."""
    from .app import create_app as _create

    return _create(settings, **kwargs)


def serve(settings: ServeSettings, **kwargs) -> None:
    """Run the server until SIGTERM (see :func:`bioimgzoo.serve.server.serve`)."""
    from .server import serve as _serve

    _serve(settings, **kwargs)
