"""Run a description's declared pipeline (preprocessing, network, postprocessing) with any network.

The test tensors of a package must be what the *packaged* pipeline produces,
and bioimageio.core's ``test_model`` is the reference that checks them.  So
the same machinery is used here: a core prediction pipeline built from the
description, with the network replaced by any callable (the live module, or
a converted weights file being checked).  The steps mirror core's
"reproduce test outputs" test exactly: preprocess the whole sample, run the
network without padding or cropping, postprocess.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

__all__ = ["PipelineRunner"]

Runner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


def _adapter_class():
    from bioimageio.core._model_adapter import LocalModelAdapter

    class _CallableAdapter(LocalModelAdapter):
        """A core model adapter around a numpy-in, numpy-out callable."""

        def __init__(self, descr: Any, runner: Runner):
            self._runner = runner
            super().__init__(model_description=descr, devices=None)

        def _parse_devices(self, devices):
            return ["cpu"]

        def _init_model_on_device(self, device):
            return self._runner

        def _forward_impl(self, device, model, input_arrays):
            return list(model([np.asarray(a) for a in input_arrays]))

        def _cleanup_pre_model_deletion(self, device, model) -> None:
            return None

        def _cleanup_post_model_deletion(self, device) -> None:
            return None

    return _CallableAdapter


class PipelineRunner:
    """``runner(inputs_by_id) -> outputs_by_id`` through the description's pre- and postprocessing."""

    def __init__(self, descr: Any, runner: Runner):
        from bioimageio.core import create_prediction_pipeline

        self.descr = descr
        self._pipeline = create_prediction_pipeline(bioimageio_model=descr,
                                                    model_adapter=_adapter_class()(descr, runner))

    def __call__(self, inputs: Mapping[str, np.ndarray], *, raw: bool = False) -> dict[str, np.ndarray]:
        """Outputs in declared axis order; ``raw=True`` skips postprocessing."""
        from bioimageio.core.digest_spec import create_sample_for_model

        sample = create_sample_for_model(self.descr, inputs=dict(inputs), stat={})
        self._pipeline.apply_preprocessing(sample)
        result = self._pipeline.predict_sample_without_blocking(
            sample, skip_preprocessing=True, skip_postprocessing=True, skip_input_padding=True,
            skip_output_cropping=True)
        if not raw:
            self._pipeline.apply_postprocessing(result)
        out = {}
        for t in self.descr.outputs:
            tensor = result.members[t.id]
            order = [a.id for a in t.axes]
            out[str(t.id)] = np.asarray(tensor.transpose(order).data.to_numpy())
        return out

    def preprocess(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The inputs after preprocessing, in declared axis order (what the network receives)."""
        from bioimageio.core.digest_spec import create_sample_for_model

        sample = create_sample_for_model(self.descr, inputs=dict(inputs), stat={})
        self._pipeline.apply_preprocessing(sample)
        out = {}
        for t in self.descr.inputs:
            order = [a.id for a in t.axes]
            out[str(t.id)] = np.asarray(sample.members[t.id].transpose(order).data.to_numpy())
        return out

    def close(self) -> None:
        try:
            self._pipeline.unload()
        except Exception:  # pragma: no cover - best effort
            pass
