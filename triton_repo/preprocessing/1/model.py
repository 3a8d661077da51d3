"""Triton Python model `preprocessing`: QUERY (text) -> INPUT_ID, REQUEST_INPUT_LEN.

For clients that call it on their own: the `ensemble` model tokenizes in-process with the same checks
(griffin_trt.serving.text_prompts).

The prompt is checked by size before it is decoded or tokenized (griffin_trt.request_rules: at most
max_input_len x the longest token's UTF-8 length bytes), so an oversized prompt is refused without
being tokenized and the work any one request can cause here is bounded by that many bytes.
Inputs are optional in the config: a missing prompt or max_tokens is refused here, by name.
"""
import json
import os
import sys

import numpy as np
import triton_python_backend_utils as pb_utils


# This model's tensor names for the ensemble inputs the shared checks read (TensorRT-LLM's names).
TENSOR_NAMES = {"max_tokens": "REQUEST_OUTPUT_LEN", "temperature": "TEMPERATURE", "top_p": "RUNTIME_TOP_P",
                "top_k": "RUNTIME_TOP_K", "random_seed": "RANDOM_SEED"}


def _params(args):
    cfg = json.loads(args["model_config"])
    return {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}


def _extend_sys_path(value):
    for p in reversed([p for p in value.split(os.pathsep) if p]):
        if p not in sys.path:
            sys.path.insert(0, p)


def _array(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else t.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        params = _params(args)
        _extend_sys_path(params.get("python_path", ""))
        if int(np.__version__.split(".")[0]) >= 2:
            raise RuntimeError(f"numpy {np.__version__} in the serving environment: pb_utils.Tensor outputs come back empty with numpy 2; install numpy<2")
        from transformers import AutoTokenizer

        from griffin_trt.serving.text_prompts import TextPrompts

        tokenizer = AutoTokenizer.from_pretrained(params["tokenizer_dir"])
        self.prompts = TextPrompts(tokenizer, int(params["max_input_len"]), int(params["max_output_len"]))

    def _one(self, request):
        self.prompts.check_settings(lambda name: _array(request, TENSOR_NAMES[name]))
        ids = self.prompts.encode(_array(request, "QUERY"))
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
