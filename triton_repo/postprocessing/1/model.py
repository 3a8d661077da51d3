"""Triton Python model `postprocessing`: TOKENS_BATCH (+ CONTEXT_TOKEN) -> OUTPUT text.

Streamed chunks are decoded after the token before them and that token's text is cut off again, so
tokenizers that drop a chunk's leading space (SentencePiece) still concatenate to the full text.
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

        self.tokenizer = AutoTokenizer.from_pretrained(params["tokenizer_dir"])

    def _decode(self, ids, ctx):
        if not ids:
            return ""
        if ctx is None or ctx < 0:
            return self.tokenizer.decode(ids, skip_special_tokens=True)
        prefix = self.tokenizer.decode([ctx], skip_special_tokens=True)
        full = self.tokenizer.decode([ctx] + ids, skip_special_tokens=True)
        if full.startswith(prefix):
            return full[len(prefix):]
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def execute(self, requests):
        out = []
        for r in requests:
            toks = pb_utils.get_input_tensor_by_name(r, "TOKENS_BATCH").as_numpy()
            ctx_t = pb_utils.get_input_tensor_by_name(r, "CONTEXT_TOKEN")
            ctx = int(ctx_t.as_numpy().reshape(-1)[0]) if ctx_t is not None and ctx_t.as_numpy().size else None
            texts = []
            for row in toks.reshape(toks.shape[0], -1) if toks.ndim > 1 else toks.reshape(1, -1):
                texts.append(self._decode([int(t) for t in row], ctx).encode("utf-8"))
            arr = np.array(texts, dtype=np.object_).reshape(-1, 1)
            out.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("OUTPUT", arr)]))
        return out
