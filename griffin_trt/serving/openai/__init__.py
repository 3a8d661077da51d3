"""An OpenAI-compatible HTTP front end for a running griffin deployment (`griffin-trt serve --openai-port N`).

`/v1/completions`, `/v1/chat/completions` (the target's chat template) and `/v1/models`, streamed (SSE)
or not, forwarded over gRPC to the Triton models already running: no second copy of the models.

Why it talks to the `griffin` model (token ids) and not to the `ensemble` (text): a client that hangs up
must free its row within a step. tritonserver 2.51 passes an ensemble client's cancellation only to the
step it schedules next, never to the decoupled `griffin` step already decoding (GRIFFIN.md, "Triton
ensembles do not cancel a running step"), while a request sent to `griffin` itself is seen as cancelled
(`is_cancelled()`) before the next decode step. So this server tokenizes (chat template included),
streams token ids from `griffin` on a gRPC stream of its own per HTTP request, cancels that stream when
the HTTP client goes away, and detokenizes incrementally with griffin_trt/detokenize.py (the code the
`postprocessing` model runs), so text and stop strings match the ensemble's.

Modules: `protocol` (request bodies -> checked settings, OpenAI's error shape), `text` (stop strings over
streamed text), `griffin_stream` (the gRPC stream), `app` (FastAPI routes), `runner` (uvicorn beside
tritonserver). No torch: tokenizers come from transformers' tokenizer classes only.
"""
