"""Triton Python model `preprocessing`: QUERY (text) -> INPUT_ID, REQUEST_INPUT_LEN.

The prompt is checked by size before it is decoded or tokenized (griffin_trt.request_rules: at most
max_input_len x the longest token's UTF-8 length bytes), so an oversized prompt is refused without
being tokenized and the work any one request can cause here is bounded by that many bytes.
Inputs are optional in the config: tritonserver only counts inputs, and an ensemble whose required input
is missing answers with an empty success; a missing prompt or max_tokens is refused here instead, by name.
"""
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

        from griffin_trt import request_rules

        self.rules = request_rules
        self.tokenizer = AutoTokenizer.from_pretrained(params["tokenizer_dir"])
        self.max_input_len = int(params["max_input_len"])
        self.max_output_len = int(params["max_output_len"])
        self.bytes_per_token = request_rules.max_token_bytes(self.tokenizer)

    def _scalar(self, request, name, label):
        t = pb_utils.get_input_tensor_by_name(request, name)
        if t is None:
            return None
        a = t.as_numpy().reshape(-1)
        if a.size != 1:
            raise self.rules.RequestError(f"{label} must hold one value per request, got {a.size}")
        return a[0]

    def _check_settings(self, request):
        """The request's settings, refused before any tokenizing (griffin checks them again)."""
        rules = self.rules
        n = self._scalar(request, "REQUEST_OUTPUT_LEN", "max_tokens")
        rules.check_max_tokens(None if n is None else int(n), self.max_output_len)
        for name, label, check in (("TEMPERATURE", "temperature", rules.check_temperature),
                                   ("RUNTIME_TOP_P", "top_p", rules.check_top_p),
                                   ("RUNTIME_TOP_K", "top_k", rules.check_top_k),
                                   ("RANDOM_SEED", "random_seed", rules.check_seed)):
            v = self._scalar(request, name, label)
            if v is not None:
                check(v.item())

    def _one(self, request):
        self._check_settings(request)
        t = pb_utils.get_input_tensor_by_name(request, "QUERY")
        if t is None:
            raise self.rules.RequestError("text_input is required (the prompt)")
        q = t.as_numpy()
        if q.size != 1:
            raise self.rules.RequestError(f"text_input must hold one string per request, got shape {list(q.shape)}")
        raw = q.reshape(-1)[0]
        if not isinstance(raw, (bytes, str)):
            raise self.rules.RequestError("text_input must be a string")
        text = self.rules.check_prompt_text(raw, self.max_input_len, self.bytes_per_token)
        ids = self.tokenizer(text).input_ids
        ids = self.rules.check_prompt_ids(ids, self.max_input_len, None)
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
            except ValueError as e:  # RequestError: one line naming the problem
                out.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
        return out
