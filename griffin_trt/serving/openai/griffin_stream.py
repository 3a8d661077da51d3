"""One generation on the `griffin` Triton model over a gRPC stream of its own (tritonclient's asyncio API).

Each request gets its own stream, so ending it early (the HTTP client left, or stopped reading) cancels
exactly that request: tritonserver marks it cancelled and the griffin model frees its row before the next
decode step (triton_repo/griffin/1/model.py, "Cancellation").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import AsyncIterator

import numpy as np

from .protocol import Generation, OpenAIError

MODEL = "griffin"
STATS = ("acceptance_length", "acceptance_rate", "target_forwards", "total_accepted_draft_tokens",
         "total_draft_tokens", "num_input_tokens", "num_output_tokens")


@dataclass
class Chunk:
    """One griffin response: new ids, the ids sent before them (for detokenizing), and on the last one
    the request's statistics and finish reason."""

    ids: list[int]
    context: list[int]
    final: bool
    finish_reason: str = ""
    stats: dict = field(default_factory=dict)


def _inputs(gen: Generation) -> list:
    import tritonclient.grpc as g

    ids = np.asarray(gen.prompt_ids, np.int32).reshape(1, -1)
    spec = [
        ("input_ids", ids, "INT32"),
        ("input_lengths", np.array([[ids.shape[1]]], np.int32), "INT32"),
        ("request_output_len", np.array([[gen.max_tokens]], np.int32), "INT32"),
        ("streaming", np.array([[gen.stream]], np.bool_), "BOOL"),
        ("exclude_input_in_output", np.array([[True]], np.bool_), "BOOL"),
        ("temperature", np.array([[gen.temperature]], np.float32), "FP32"),
        ("runtime_top_p", np.array([[gen.top_p]], np.float32), "FP32"),
        ("runtime_top_k", np.array([[gen.top_k]], np.int32), "INT32"),
        ("speculative", np.array([[gen.speculative]], np.bool_), "BOOL"),
    ]
    if gen.seed is not None:
        spec.append(("random_seed", np.array([[gen.seed]], np.uint64), "UINT64"))
    if gen.stop:
        spec.append(("stop_words", np.array([[s.encode("utf-8") for s in gen.stop]], np.object_), "BYTES"))
    out = []
    for name, arr, dtype in spec:
        t = g.InferInput(name, list(arr.shape), dtype)
        t.set_data_from_numpy(arr)
        out.append(t)
    return out


def _chunk(result) -> Chunk:
    def flat(name):
        a = result.as_numpy(name)
        return [] if a is None else a.reshape(-1).tolist()

    final = bool((flat("is_final") or [False])[0])
    chunk = Chunk(ids=[int(t) for t in flat("output_ids")], context=[int(t) for t in flat("context_ids")], final=final)
    if final:
        reason = (flat("finish_reason") or [b""])[0]
        chunk.finish_reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        chunk.stats = {name: flat(name)[0] for name in STATS}
    return chunk


class GriffinStreams:
    """The gRPC connection to tritonserver; one per event loop (grpc.aio channels belong to their loop)."""

    def __init__(self, url: str):
        import tritonclient.grpc.aio as grpcaio

        self.client = grpcaio.InferenceServerClient(url)

    async def close(self) -> None:
        await self.client.close()

    async def ready(self) -> bool:
        try:
            return bool(await self.client.is_model_ready(MODEL))
        except Exception:  # noqa: BLE001 - any failure to answer means not ready
            return False

    async def generate(self, gen: Generation) -> AsyncIterator[Chunk]:
        """The request's responses up to its last one; leaving early cancels the request."""
        inputs = _inputs(gen)

        async def one_request():
            yield {"model_name": MODEL, "inputs": inputs}

        responses = self.client.stream_infer(one_request())
        try:
            async for result, error in responses:
                if error is not None:
                    raise _refusal(str(error))
                chunk = _chunk(result)
                yield chunk
                if chunk.final:
                    return
        except OpenAIError:
            raise
        except Exception as e:  # noqa: BLE001 - the stream broke: tritonserver gone or unreachable
            raise OpenAIError(f"the model server is unavailable: {' '.join(str(e).split())}", status=503,
                              type="server_error") from None
        finally:
            responses.cancel()  # a no-op after the last response; otherwise griffin frees the row


def _refusal(message: str) -> OpenAIError:
    """griffin's own refusal (the request rules) is the client's fault; anything else is ours."""
    message = " ".join(message.split())
    if message.startswith("internal error"):
        return OpenAIError(message, status=500, type="server_error")
    return OpenAIError(message)
