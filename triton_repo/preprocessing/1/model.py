"""Triton Python model `preprocessing`: QUERY (text) -> INPUT_ID, REQUEST_INPUT_LEN."""
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


def _params(args):
    cfg = json.loads(args["model_config"])
    return {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}


def _extend_sys_path(value):
    for p in reversed([p for p in value.split(os.pathsep) if p]):
        if p not in sys.path:
            sys.path.insert(0, p)


class TritonPythonModel:
    def initialize(self, args):
        params = _params(args)
        _extend_sys_path(params.get("python_path", ""))
        if int(np.__version__.split(".")[0]) >= 2:
            raise RuntimeError(f"numpy {np.__version__} in the serving environment: pb_utils.Tensor outputs come back empty with numpy 2; install numpy<2")
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(params["tokenizer_dir"])
        self.max_input_len = int(params["max_input_len"])

    def _one(self, request):
        q = pb_utils.get_input_tensor_by_name(request, "QUERY").as_numpy()
        if q.size != 1:
            raise ValueError(f"QUERY must hold one string per request, got shape {list(q.shape)}")
        raw = q.reshape(-1)[0]
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        except UnicodeDecodeError:
            raise ValueError("text_input is not valid UTF-8")
        if not text.strip():
            raise ValueError("text_input is empty: send a non-empty prompt")
        ids = self.tokenizer(text).input_ids
        if len(ids) > self.max_input_len:
            raise ValueError(f"prompt is {len(ids)} tokens, longer than max_input_len = {self.max_input_len}")
        ids = np.asarray(ids, dtype=np.int32).reshape(1, -1)
        return pb_utils.InferenceResponse(output_tensors=[
            pb_utils.Tensor("INPUT_ID", ids),
            pb_utils.Tensor("REQUEST_INPUT_LEN", np.array([[ids.shape[1]]], dtype=np.int32)),
        ])

    def execute(self, requests):
        out = []
        for r in requests:
            try:
                out.append(self._one(r))
            except ValueError as e:
                out.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
        return out
