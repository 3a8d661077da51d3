"""Triton Python model `postprocessing`: TOKENS_BATCH (+ CONTEXT_IDS, IS_FINAL) -> OUTPUT text.

Stateless per response: each chunk's text is what its ids add after the ids sent before them, with an
unfinished UTF-8 character held back until the chunk that completes it (griffin_trt.detokenize), so
streamed chunks concatenate to exactly the unary text. Without CONTEXT_IDS / IS_FINAL (a client calling
this model directly) the ids are decoded on their own, as one complete text.
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


def _rows(t):
    if t is None:
        return None
    a = t.as_numpy()
    return a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)


class TritonPythonModel:
    def initialize(self, args):
        params = _params(args)
        _extend_sys_path(params.get("python_path", ""))
        if int(np.__version__.split(".")[0]) >= 2:
            raise RuntimeError(f"numpy {np.__version__} in the serving environment: pb_utils.Tensor outputs come back empty with numpy 2; install numpy<2")
        from transformers import AutoTokenizer

        from griffin_trt.detokenize import continuation_text

        self.continuation_text = continuation_text
        self.tokenizer = AutoTokenizer.from_pretrained(params["tokenizer_dir"])

    def execute(self, requests):
        out = []
        for r in requests:
            toks = _rows(pb_utils.get_input_tensor_by_name(r, "TOKENS_BATCH"))
            ctx = _rows(pb_utils.get_input_tensor_by_name(r, "CONTEXT_IDS"))
            final = _rows(pb_utils.get_input_tensor_by_name(r, "IS_FINAL"))
            texts = []
            for i, row in enumerate(toks):
                context = [int(t) for t in ctx[min(i, len(ctx) - 1)]] if ctx is not None else []
                last = bool(final[min(i, len(final) - 1)][0]) if final is not None else True
                text = self.continuation_text(self.tokenizer, context, [int(t) for t in row], last)
                texts.append(text.encode("utf-8"))
            arr = np.array(texts, dtype=np.object_).reshape(-1, 1)
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", arr)]))
        return out
