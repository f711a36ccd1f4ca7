"""TensorFlow weights (SavedModel bundles, Keras ``.h5``) run through ONNX, converted once and cached.

The first load of a package whose weights are ``tensorflow_saved_model_bundle``
or ``keras_hdf5`` (and nothing bioimgzoo runs natively) needs the optional
extra ``pip install 'bioimgzoo[tensorflow]'`` (tensorflow-cpu, tf2onnx, tf-keras):

1. a worker process (``python -m bioimgzoo.runtime.tf_weights``, with
   ``TF_USE_LEGACY_KERAS=1`` so Keras 2 files load) loads the weights with
   TensorFlow and converts them with tf2onnx (opset 17, IR version <= 8: what
   DeepImageJ/JDLL's onnxruntime reads); TensorFlow is never imported into the
   calling process;
2. the ONNX model is checked: the package's test inputs through bioimgzoo's
   whole pipeline against its test outputs, and the network's own inputs
   (those windows, and a random input of another valid size) through
   TensorFlow and ONNX, within the zoo's tolerance
   (:func:`bioimgzoo.descr.tolerance.tolerance_for`);
3. when the ONNX model reproduces TensorFlow, it is stored in the cache,
   keyed by the weights' sha256, and every later load runs it with
   onnxruntime (CPU or CUDA) without TensorFlow: offline too.

Where the conversion fails or does not reproduce TensorFlow, one warning
says so and the model runs in TensorFlow itself, in the worker (slower);
that verdict is cached too, so the conversion is not retried on every load
(a newer tf2onnx retries it).  Without the extra, one error names it.

Cache layout (under :func:`bioimgzoo.config.cache_dir`)::

    tf-onnx/{sha256}.onnx          the converted model
    tf-onnx/{sha256}.json          what was checked: versions, seconds, sizes, max abs differences
    tf-onnx/{sha256}.failed.json   a conversion that failed or did not reproduce, and why

Entries are written to a temporary file and renamed, under the cache's
lock ``tf-onnx-{sha256}`` (two processes never convert the same weights at
once; a killed conversion leaves nothing a later load would trust).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .. import config
from ..descr.weights import TENSORFLOW
from ..errors import WeightsError
from .worker import WorkerProcess

log = logging.getLogger("bioimgzoo")

__all__ = ["TENSORFLOW", "EXTRA_PACKAGES", "extra_installed", "cached_onnx", "route", "Conversion",
           "convert_and_check", "create_tensorflow_engine", "TensorFlowEngine", "normalise_onnx"]

#: what ``bioimgzoo[tensorflow]`` brings: the modules the conversion imports
EXTRA_PACKAGES = ("tensorflow", "tf2onnx")
#: the ONNX opset written (JDLL's default onnxruntime 1.12.1 implements 17), and the highest IR version it reads
OPSET = 17
MAX_IR_VERSION = 8
_CACHE_VERSION = 1


def extra_missing_message(fmt: str, where: str) -> str:
    return (f"{where} has only {fmt} weights, which bioimgzoo runs by converting them to ONNX once; that needs "
            "TensorFlow and tf2onnx: pip install 'bioimgzoo[tensorflow]', then load it again (later loads use "
            "the cached ONNX model and need neither)")


def extra_installed() -> bool:
    """True when TensorFlow and tf2onnx can be imported (checked without importing them)."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in EXTRA_PACKAGES)
    except (ImportError, ValueError):  # a broken or blocked install
        return False


# ----------------------------------------------------------------------------- cache
def _cache_root() -> Path:
    return config.cache_dir() / "tf-onnx"


def _declared_sha256(package: Any, fmt: str) -> str | None:
    entry = getattr(package.descr.weights, fmt, None)
    sha = getattr(entry, "sha256", None)
    return str(sha) if sha else None


def _weights_sha256(package: Any, fmt: str) -> str:
    from .._files import sha256_file

    return _declared_sha256(package, fmt) or sha256_file(package.file(getattr(package.descr.weights, fmt)))


def cached_onnx(sha256: str | None) -> Path | None:
    """The cached ONNX conversion of the weights with this sha256, or None."""
    if not sha256:
        return None
    onnx_path, meta = _cache_root() / f"{sha256}.onnx", _cache_root() / f"{sha256}.json"
    try:
        if onnx_path.is_file() and json.loads(meta.read_text("utf-8")).get("version") == _CACHE_VERSION:
            return onnx_path
    except (OSError, ValueError):
        pass  # damaged: convert again
    return None


def _cached_failure(sha256: str) -> dict | None:
    try:
        data = json.loads((_cache_root() / f"{sha256}.failed.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    import importlib.metadata

    try:  # a newer tf2onnx may do better: try again
        current = importlib.metadata.version("tf2onnx")
    except importlib.metadata.PackageNotFoundError:
        current = None
    return data if data.get("tf2onnx") == current else None


def _store(sha256: str, onnx_file: Path | None, record: dict) -> None:
    from .._files import atomic_path

    root = _cache_root()
    try:
        root.mkdir(parents=True, exist_ok=True)
        if onnx_file is None:
            with atomic_path(root / f"{sha256}.failed.json") as tmp:
                tmp.write_text(json.dumps(record, indent=1), "utf-8")
            return
        with atomic_path(root / f"{sha256}.onnx") as tmp:
            shutil.copyfile(onnx_file, tmp)
        # the record last: it is what marks the entry complete
        with atomic_path(root / f"{sha256}.json") as tmp:
            tmp.write_text(json.dumps(record, indent=1), "utf-8")
        (root / f"{sha256}.failed.json").unlink(missing_ok=True)
    except OSError as e:  # a read-only cache must not stop a prediction
        log.warning("cannot store the ONNX conversion in %s (%s): it will be converted again next time", root, e)


def route(package: Any, fmt: str) -> str:
    """How a prediction with ``fmt`` weights runs, in words (for ``info``), reading the description only."""
    if fmt not in TENSORFLOW:
        return fmt
    sha = _declared_sha256(package, fmt)
    if cached_onnx(sha):
        return f"ONNX converted from {fmt} (cached: {cached_onnx(sha)})"
    failed = _cached_failure(sha) if sha else None
    if failed:
        return f"TensorFlow itself, slower (the ONNX conversion {failed.get('reason', 'failed')})"
    if extra_installed():
        return "converted to ONNX on first load (checked, then cached by the weights' sha256)"
    return "not yet: needs pip install 'bioimgzoo[tensorflow]' to convert it to ONNX once"


# ----------------------------------------------------------------------------- the worker (client)
class _Worker:
    """A process holding the weights in TensorFlow: converts them, runs them."""

    def __init__(self, weights: Path, fmt: str, input_ids: Sequence[str], output_ids: Sequence[str], *, name: str):
        self.name = name
        spec = {"weights": str(weights), "format": fmt, "inputs": list(input_ids), "outputs": list(output_ids)}
        # Keras 2 files (every zoo .h5 and StarDist's models) load only with tf-keras; TensorFlow's own
        # start-up chatter is noise for the user
        env = {"TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
        self._process = WorkerProcess(sys.executable, "bioimgzoo.runtime.tf_weights", spec, env=env,
                                      what="TensorFlow process", prefix="bioimgzoo-tf-")
        self._process.reply("loading the weights in TensorFlow")

    def convert(self, out: Path) -> None:
        self._process.call(f"convert {out}", "converting the weights to ONNX with tf2onnx")

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._process.run(inputs, "running the network in TensorFlow")

    def close(self) -> None:
        self._process.close()


class TensorFlowEngine:
    """The slower fallback: the network runs in TensorFlow, in the worker process."""

    def __init__(self, worker: _Worker, fmt: str):
        self.format = fmt
        self.device = "cpu"
        self._worker = worker

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self._worker.run(inputs)

    def close(self) -> None:
        self._worker.close()


# ----------------------------------------------------------------------------- the ONNX file
def normalise_onnx(path: Path, *, output_names: Sequence[str] = ()) -> dict:
    """Make a converted model readable by JDLL: IR version <= 8, only the opset domains it uses.

    Outputs are put in the order of ``output_names`` where the graph has
    outputs of those names (TensorFlow signatures are unordered).
    Returns ``{"ir_version", "opset"}`` as written.
    """
    import onnx

    model = onnx.load(str(path))
    used = {n.domain or "" for n in model.graph.node}
    keep = [o for o in model.opset_import if (o.domain or "") in used or (o.domain or "") == ""]
    del model.opset_import[:]
    model.opset_import.extend(keep)
    model.ir_version = min(int(model.ir_version), MAX_IR_VERSION)
    by_name = {o.name: o for o in model.graph.output}
    if output_names and all(n in by_name for n in output_names) and len(output_names) == len(by_name):
        ordered = [by_name[n] for n in output_names]
        del model.graph.output[:]
        model.graph.output.extend(ordered)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    opset = next((int(o.version) for o in model.opset_import if (o.domain or "") == ""), None)
    return {"ir_version": int(model.ir_version), "opset": opset}


# ----------------------------------------------------------------------------- conversion and its check
class _Recording:
    """An engine that keeps what it was fed and gave (the test windows), for the TensorFlow comparison."""

    def __init__(self, engine: Any):
        self.engine, self.format, self.device = engine, engine.format, engine.device
        self.calls: list[tuple[list[np.ndarray], list[np.ndarray]]] = []

    def run(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = self.engine.run(inputs)
        self.calls.append(([np.array(a) for a in inputs], [np.array(o) for o in out]))
        return out


@dataclass
class Conversion:
    """What converting one package's TensorFlow weights gave, and how it was checked."""

    fmt: str
    onnx: Path | None  # a temporary file; None when tf2onnx failed
    faithful: bool  # ONNX equals TensorFlow within the tolerance on every input tried
    reason: str = ""  # why not, in words
    record: dict = field(default_factory=dict)
    worker: Any = None  # the TensorFlow process, kept for the fallback


def _another_size(spec: Any, shape: Sequence[int]) -> tuple[int, ...] | None:
    """A valid input shape other than ``shape`` (one step more along each tiled axis), or None for fixed sizes."""
    from ..descr.sizes import AxisSizes

    new, changed = [], False
    for a, n in zip(spec.axes, shape):
        sz = spec.sizes.get(a.id)
        if a.kind not in ("batch", "channel") and isinstance(sz, AxisSizes) and sz.step:
            new.append(int(n) + sz.step)
            changed = True
        else:
            new.append(int(n))
    return tuple(new) if changed else None


def _worst(cmp: dict) -> float:
    return float(cmp["max_abs"])


def convert_and_check(package: Any, fmt: str, *, workdir: Path,
                      predict_test: Callable[[Any, Any], dict[str, np.ndarray]]) -> Conversion:
    """Convert ``package``'s ``fmt`` weights to ONNX in ``workdir`` and check the result (see the module doc).

    ``predict_test(package, engine)`` runs the package's test inputs through
    the whole pipeline with an engine (:func:`bioimgzoo.runtime.model.predict_test_inputs`).
    """
    from ..descr.tensors import tensor_specs
    from ..descr.tolerance import compare_outputs, tolerance_for
    from .engines import OnnxEngine

    name = getattr(package, "name", "this package")
    inputs, outputs = tensor_specs(package.descr)
    entry = getattr(package.descr.weights, fmt)
    worker = _Worker(package.file(entry), fmt, [t.id for t in inputs], [t.id for t in outputs], name=name)
    record: dict = {"format": fmt, "versions": _versions()}
    out = workdir / "converted.onnx"
    t0 = time.perf_counter()
    try:
        worker.convert(out)
        record.update(normalise_onnx(out, output_names=[t.id for t in outputs]))
    except Exception as e:  # tf2onnx's and onnx's errors are many; the message is what matters
        record["seconds"] = round(time.perf_counter() - t0, 2)
        return Conversion(fmt, None, False, f"failed: {_first_line(e)}", record, worker)
    record["seconds"] = round(time.perf_counter() - t0, 2)
    record["bytes"] = out.stat().st_size
    engine = _Recording(OnnxEngine(out, device="cpu", n_outputs=len(outputs)))
    tol = tolerance_for(package, fmt, outputs[0].id)
    problems: list[str] = []
    # 1. the package's test tensors through the whole pipeline
    test_out = {t.id: np.load(package.file(t.test_tensor), allow_pickle=False) for t in package.descr.outputs}
    got = predict_test(package, engine)
    reproduced = {}
    for t in outputs:
        cmp = compare_outputs(np.asarray(got[t.id]), test_out[t.id], tolerance_for(package, fmt, t.id))
        reproduced[t.id] = {"max_abs": _worst(cmp), "passed": bool(cmp["passed"])}
    record["test_outputs"] = reproduced
    # 2. TensorFlow against ONNX on the very windows of the test input, and 3. on another valid size
    fed = [(ins, outs) for ins, outs in engine.calls]
    first = fed[0][0] if fed else None
    if first is not None:
        bigger = [_another_size(spec, a.shape) for spec, a in zip(inputs, first)]
        if all(b is not None for b in bigger):
            rng = np.random.default_rng(0)
            extra = [rng.standard_normal(b).astype(a.dtype) for a, b in zip(first, bigger)]
            fed.append((extra, engine.engine.run(extra)))
            record["other_size"] = [list(b) for b in bigger]
    diffs = []
    for ins, onnx_outs in fed:
        tf_outs = worker.run(ins)
        for t, o, r in zip(outputs, onnx_outs, tf_outs):
            cmp = compare_outputs(np.asarray(o), np.asarray(r), tol)
            diffs.append(_worst(cmp))
            if not cmp["passed"]:
                problems.append(f"output '{t.id}' of shape {tuple(np.shape(r))} differs from TensorFlow's by up to "
                                f"{_worst(cmp):.3g} (tolerance: abs {tol.atol:g} + rel {tol.rtol:g})")
    record["max_abs_vs_tensorflow"] = max(diffs) if diffs else None
    record["compared_inputs"] = len(fed)
    if problems:
        return Conversion(fmt, out, False, "does not reproduce TensorFlow: " + "; ".join(problems), record, worker)
    bad = [k for k, v in reproduced.items() if not v["passed"]]
    if bad:  # faithful to TensorFlow, so TensorFlow itself does not give the package's test outputs either
        log.warning("%s: the package's test output %s is not reproduced (max abs %s), by TensorFlow itself either "
                    "(the ONNX conversion equals TensorFlow's output): the package's test tensors are stale",
                    name, ", ".join(bad), ", ".join(f"{reproduced[k]['max_abs']:.3g}" for k in bad))
    return Conversion(fmt, out, True, "", record, worker)


def _versions() -> dict:
    import importlib.metadata

    out = {}
    for dist in ("tensorflow", "tensorflow-cpu", "tf2onnx", "tf_keras", "onnx"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def create_tensorflow_engine(package: Any, fmt: str, *, device: str, n_outputs: int,
                             predict_test: Callable[[Any, Any], dict[str, np.ndarray]]) -> Any:
    """The engine for TensorFlow weights: the cached ONNX conversion, made now if needed, else TensorFlow itself.

    ``predict_test``: as for :func:`convert_and_check`.
    """
    from ..hub.cache import CacheLayout
    from .engines import OnnxEngine

    name = getattr(package, "name", "this package")
    sha = _weights_sha256(package, fmt)  # declared, else of the file (producers often leave it out)
    path = cached_onnx(sha)
    if path is not None:
        log.info("running the %s weights of %r as their cached ONNX conversion (%s)", fmt, name, path.name)
        return OnnxEngine(path, device=device, n_outputs=n_outputs)
    if not extra_installed():
        raise WeightsError(extra_missing_message(fmt, name))
    layout = CacheLayout(config.cache_dir())
    with layout.locked(f"tf-onnx-{sha}", what=f"the ONNX conversion of {name}'s {fmt} weights"):
        path = cached_onnx(sha)  # another process may have converted it while we waited
        if path is not None:
            return OnnxEngine(path, device=device, n_outputs=n_outputs)
        failed = _cached_failure(sha)
        if failed is not None:
            log.warning("%s: its %s weights run in TensorFlow itself, slower: the ONNX conversion %s (an earlier "
                        "try, cached)", name, fmt, failed.get("reason"))
            return _fallback(package, fmt, name, failed.get("reason", ""))
        with tempfile.TemporaryDirectory(prefix="bioimgzoo-tf-onnx-") as tmp:
            log.info("converting the %s weights of %r to ONNX (once; then cached)", fmt, name)
            try:
                conv = convert_and_check(package, fmt, workdir=Path(tmp), predict_test=predict_test)
            except WeightsError as e:  # TensorFlow cannot even load them
                raise WeightsError(f"{name}: its {fmt} weights could not be loaded by TensorFlow, so they can be "
                                   f"neither converted nor run: {e}") from e
            record = {"version": _CACHE_VERSION, "sha256": sha, "package": name, **conv.record}
            if conv.faithful and conv.onnx is not None:
                _store(sha, conv.onnx, record)
                conv.worker.close()
                log.info("converted %r to ONNX in %.1f s (max abs difference to TensorFlow %.2g); later loads run "
                         "it without TensorFlow", name, record.get("seconds", 0.0),
                         record.get("max_abs_vs_tensorflow") or 0.0)
                final = cached_onnx(sha) or _kept_copy(conv.onnx)  # the cache may be read-only
                return OnnxEngine(final, device=device, n_outputs=n_outputs)
            record["reason"] = conv.reason
            record["tf2onnx"] = record["versions"].get("tf2onnx")
            _store(sha, None, record)
            log.warning("%s: the ONNX conversion of its %s weights %s; running them in TensorFlow itself instead "
                        "(slower)", name, fmt, conv.reason)
            return TensorFlowEngine(conv.worker, fmt)


def _kept_copy(path: Path) -> Path:
    """A copy of a conversion about to be deleted, for this process (the cache could not be written)."""
    keep = Path(tempfile.mkdtemp(prefix="bioimgzoo-tf-onnx-")) / "converted.onnx"
    shutil.copyfile(path, keep)
    return keep


def _fallback(package: Any, fmt: str, name: str, reason: str) -> TensorFlowEngine:
    inputs, outputs = _tensor_ids(package)
    try:
        worker = _Worker(package.file(getattr(package.descr.weights, fmt)), fmt, inputs, outputs, name=name)
    except WeightsError as e:
        raise WeightsError(f"{name}: its {fmt} weights neither convert to ONNX ({reason}) nor load in "
                           f"TensorFlow: {e}") from e
    return TensorFlowEngine(worker, fmt)


def _tensor_ids(package: Any) -> tuple[list[str], list[str]]:
    from ..descr.tensors import tensor_specs

    ins, outs = tensor_specs(package.descr)
    return [t.id for t in ins], [t.id for t in outs]


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0][:300]


# ----------------------------------------------------------------------------- the worker (server)
def _safe_extract(archive: Path, dest: Path) -> Path:
    """Unzip a SavedModel bundle (members must stay inside ``dest``); the folder holding saved_model.pb."""
    with zipfile.ZipFile(archive) as z:
        for member in z.infolist():
            target = (dest / member.filename).resolve()
            if not str(target).startswith(str(dest.resolve()) + os.sep) and target != dest.resolve():
                raise ValueError(f"the bundle member {member.filename!r} points outside the bundle")
        z.extractall(dest)
    found = sorted(dest.rglob("saved_model.pb"), key=lambda p: len(p.parts))
    if not found:
        raise ValueError(f"{archive.name} holds no saved_model.pb: it is not a SavedModel bundle")
    return found[0].parent


class _SavedModel:
    def __init__(self, path: Path, spec: dict, scratch: Path):
        import tensorflow as tf

        self.dir = path if path.is_dir() else _safe_extract(path, scratch / "saved_model")
        self.obj = tf.saved_model.load(str(self.dir))
        sigs = dict(self.obj.signatures)
        if not sigs:
            raise ValueError("the SavedModel has no signature to call")
        self.sig = sigs.get("serving_default") or sigs[sorted(sigs)[0]]
        in_keys = sorted(self.sig.structured_input_signature[1])
        out_keys = sorted(self.sig.structured_outputs)
        self.in_keys = _match(in_keys, spec["inputs"], "inputs")
        self.out_keys = _match(out_keys, spec["outputs"], "outputs")

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        import tensorflow as tf

        res = self.sig(**{k: tf.constant(a) for k, a in zip(self.in_keys, arrays)})
        return [res[k].numpy() for k in self.out_keys]

    def convert(self, out: Path) -> None:
        import tf2onnx.convert

        argv = sys.argv
        sys.argv = ["tf2onnx.convert", "--saved-model", str(self.dir), "--output", str(out), "--opset", str(OPSET)]
        try:
            tf2onnx.convert.main()
        finally:
            sys.argv = argv
        _rename_outputs(out, self.out_keys)


class _Keras:
    def __init__(self, path: Path, spec: dict):
        try:  # Keras 2 files (tf.keras <= 2.15, every zoo .h5): tf-keras
            import tf_keras as keras
        except ImportError:
            import keras  # type: ignore[no-redef]
        self.keras = keras
        self.model = keras.models.load_model(str(path), compile=False)
        self.out_keys = list(spec["outputs"])

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        out = self.model(arrays if len(arrays) > 1 else arrays[0], training=False)
        out = out if isinstance(out, (list, tuple)) else [out]
        return [np.asarray(o) for o in out]

    def convert(self, out: Path) -> None:
        import tensorflow as tf
        import tf2onnx

        sig = [tf.TensorSpec(t.shape, t.dtype, name=f"input_{i}") for i, t in enumerate(self.model.inputs)]
        tf2onnx.convert.from_keras(self.model, input_signature=sig, opset=OPSET, output_path=str(out))
        _rename_outputs(out, self.out_keys)


def _match(keys: list[str], wanted: list[str], what: str) -> list[str]:
    """Signature keys in the description's order: by name where they match, else in sorted order."""
    if len(keys) != len(wanted):
        raise ValueError(f"the SavedModel's signature has {len(keys)} {what} ({', '.join(keys)}) but the "
                         f"description declares {len(wanted)} ({', '.join(wanted)})")
    if set(keys) == set(wanted):
        return list(wanted)
    return keys


def _rename_outputs(path: Path, names: list[str]) -> None:
    """tf2onnx names a SavedModel's outputs by their signature keys (``output`` or ``Identity:0``); keep them."""
    import onnx

    model = onnx.load(str(path))
    if [o.name for o in model.graph.output] == names or len(model.graph.output) != len(names):
        return
    for o, n in zip(model.graph.output, names):
        if o.name != n:
            for node in model.graph.node:
                node.output[:] = [n if x == o.name else x for x in node.output]
                node.input[:] = [n if x == o.name else x for x in node.input]
            o.name = n
    onnx.save(model, str(path))


def _worker(folder: Path) -> None:
    spec = json.loads((folder / "spec.json").read_text())
    out = sys.stdout
    sys.stdout = sys.stderr  # TensorFlow's and tf2onnx's prints must not garble the replies

    def reply(text: str) -> None:
        out.write(text + "\n")
        out.flush()

    try:
        weights = Path(spec["weights"])
        net = _Keras(weights, spec) if spec["format"] == "keras_hdf5" else _SavedModel(weights, spec, folder)
    except Exception as e:
        reply("error " + json.dumps(f"{type(e).__name__}: {_first_line(e)}"))
        return
    reply("ok")
    for line in sys.stdin:
        cmd, _, arg = line.strip().partition(" ")
        try:
            if cmd == "convert":
                net.convert(Path(arg))
                reply("ok")
            elif cmd == "run":
                call = Path(arg)
                n = len(list(call.glob("in*.npy")))
                outs = net.run([np.load(call / f"in{i}.npy") for i in range(n)])
                for i, o in enumerate(outs):
                    np.save(call / f"out{i}.npy", o)
                reply(f"ok {len(outs)}")
            else:
                return
        except Exception as e:
            reply("error " + json.dumps(f"{type(e).__name__}: {_first_line(e)}"))


if __name__ == "__main__":  # the worker: python -m bioimgzoo.runtime.tf_weights FOLDER
    _worker(Path(sys.argv[1]))
