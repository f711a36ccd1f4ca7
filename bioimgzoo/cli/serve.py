"""``bioimgzoo serve``: the models as a service (the server itself is :mod:`bioimgzoo.serve`)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("models", nargs=-1)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; any but 127.0.0.1/localhost needs --token.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0: a free one, printed).")
@click.option("--token", default=None, help="Bearer token every API request must carry (or $BIOIMGZOO_SERVE_TOKEN).")
@click.option("--admin-token", default=None,
              help="Bearer token for loading/unloading models via the API (or $BIOIMGZOO_SERVE_ADMIN_TOKEN).")
@click.option("--trust-code", is_flag=True, help="Trust the Python code of the MODELS named here (never of others).")
@click.option("--weights", default=None, help="Weight format of the MODELS named here (default: the model's first).")
@click.option("--device", default=None, help="cpu, cuda or auto (default).")
@click.option("--max-batch", type=int, default=8, show_default=True,
              help="Most requests' engine calls merged into one (1: no batching across requests).")
@click.option("--batch-delay-ms", type=float, default=0.0, show_default=True,
              help="Milliseconds a batch waits for more requests (never when all requests in flight wait); "
                   "0: a batch is what queued while the engine ran.")
@click.option("--max-body-mb", type=float, default=256.0, show_default=True, help="Largest request body.")
@click.option("--max-pixels", type=int, default=64 << 20, show_default=True,
              help="Largest image (values) of one request; larger ones go through /bioimgzoo/v1/jobs.")
@click.option("--max-models", type=int, default=4, show_default=True, help="Models kept loaded (LRU).")
@click.option("--max-memory-mb", type=float, default=None, help="Memory of the models kept loaded (LRU).")
@click.option("--preload", multiple=True, metavar="ID", help="Zoo id to load at start (repeatable).")
@click.option("--allow-folder", "allow_folders", multiple=True, type=click.Path(file_okay=False),
              help="Folder of packages (subfolders, .zip) served by name on request (repeatable).")
@click.option("--data-root", "data_roots", multiple=True, type=click.Path(file_okay=False),
              help="Folder job inputs and outputs must lie under (repeatable; jobs are off without one).")
@click.option("--state-dir", type=click.Path(file_okay=False), default=None,
              help="Where jobs are recorded, so a restart resumes them (default: the user's data folder).")
@click.option("--scheduler", default=None, metavar="ADDRESS", help="dask.distributed scheduler running the jobs.")
@click.option("--no-hub", is_flag=True, help="Serve no zoo ids: only MODELS and --allow-folder packages.")
@click.option("--queue", type=int, default=64, show_default=True, help="Requests admitted at once (more: 429).")
@click.option("--workers", type=int, default=8, show_default=True, help="Threads running predictions.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="Seconds one request may take (504).")
@click.option("--grace", type=float, default=30.0, show_default=True,
              help="Seconds requests in flight get to finish after SIGTERM.")
def serve(models, host, port, token, admin_token, trust_code, weights, device, max_batch, batch_delay_ms,
          max_body_mb, max_pixels, max_models, max_memory_mb, preload, allow_folders, data_roots, state_dir,
          scheduler, no_hub, queue, workers, timeout, grace):
    """Serve MODELS (folders, zips, rdf.yaml files or zoo ids; NAME=SOURCE names one) over HTTP.

    Speaks the Open Inference Protocol v2 (tritonclient, KServe), takes and
    gives image files (/bioimgzoo/v1/models/NAME/predict), runs big images as
    jobs, and shows a web page at /.  Listens on 127.0.0.1 unless --host
    says otherwise (then a --token is required).  Stops gracefully on SIGTERM.
    """
    try:
        from ..serve import ServeSettings, serve as run
    except ImportError as e:  # pragma: no cover - the extra is missing
        raise click.ClickException(f"bioimgzoo serve needs the serve extra ({e.name} is missing): "
                                   "pip install 'bioimgzoo[serve]'") from None
    if state_dir is None:
        import platformdirs

        state_dir = Path(platformdirs.user_data_dir("bioimgzoo")) / "serve"
        state_dir.mkdir(parents=True, exist_ok=True)
    settings = ServeSettings(
        models=tuple(models), preload=tuple(preload), host=host, port=port, token=token, admin_token=admin_token,
        trust_code=trust_code, weights=weights, device=device, max_batch=max_batch,
        batch_delay=max(0.0, batch_delay_ms) / 1000, max_body_bytes=int(max_body_mb * (1 << 20)),
        max_pixels=max_pixels, max_models=max_models,
        max_memory_bytes=int(max_memory_mb * (1 << 20)) if max_memory_mb else None,
        allow_folders=tuple(Path(f) for f in allow_folders), data_roots=tuple(Path(f) for f in data_roots),
        state_dir=Path(state_dir), scheduler=scheduler, hub=not no_hub, queue=queue, workers=workers,
        timeout=timeout, grace=grace)
    run(settings)


COMMANDS = [serve]
