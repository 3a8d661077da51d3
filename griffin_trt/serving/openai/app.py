"""The FastAPI application: OpenAI's routes over `GriffinStreams`.

A client that goes away frees its row: a streamed response's generator is closed when Starlette sees the
disconnect, and a unary request races its generation against the disconnect; either way the gRPC stream
is cancelled (griffin_stream.py).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from typing import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from ...detokenize import continuation_text
from .griffin_stream import Chunk, GriffinStreams
from .protocol import Generation, OpenAIError, ServedModel, parse_chat, parse_completion, parse_json
from .text import StopText

CLIENT_CLOSED = 499  # nginx's status for a client that closed the connection first (never seen by it)


def _usage(stats: dict) -> dict:
    n_in, n_out = int(stats["num_input_tokens"]), int(stats["num_output_tokens"])
    return {"prompt_tokens": n_in, "completion_tokens": n_out, "total_tokens": n_in + n_out}


def _griffin_stats(gen: Generation, stats: dict) -> dict:
    """Our acceptance statistics, in an extra field OpenAI's clients ignore."""
    return {
        "speculative": gen.speculative,
        "acceptance_length": float(stats["acceptance_length"]),
        "acceptance_rate": float(stats["acceptance_rate"]),
        "target_forwards": int(stats["target_forwards"]),
        "total_accepted_draft_tokens": int(stats["total_accepted_draft_tokens"]),
        "total_draft_tokens": int(stats["total_draft_tokens"]),
    }


async def _texts(streams: GriffinStreams, tokenizer, gen: Generation) -> AsyncIterator[tuple[str, Chunk, StopText]]:
    """(text to send, griffin chunk, stop state) per griffin response, stop strings cut off."""
    stop = StopText(gen.stop)
    async for chunk in streams.generate(gen):
        piece = continuation_text(tokenizer, chunk.context, chunk.ids, chunk.final)
        yield stop.add(piece, last=chunk.final), chunk, stop


async def _until_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


class _ClientGone(Exception):
    pass


async def _unless_disconnected(request: Request, awaitable):
    """`awaitable`'s result; it is cancelled, and _ClientGone raised, if the client disconnects first."""
    work = asyncio.ensure_future(awaitable)
    watch = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
            raise _ClientGone
    return work.result()


class _Kind:
    """What differs between /v1/completions and /v1/chat/completions."""

    def __init__(self, chat: bool):
        self.chat = chat
        self.prefix = "chatcmpl" if chat else "cmpl"
        self.object = "chat.completion" if chat else "text_completion"
        self.chunk_object = "chat.completion.chunk" if chat else "text_completion"

    def choice(self, text: str, finish_reason: str | None, first: bool = False, stream: bool = False) -> dict:
        if not self.chat:
            return {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        if not stream:
            return {"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                    "finish_reason": finish_reason}
        delta = {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}


def create_app(model: ServedModel, grpc_url: str) -> FastAPI:
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        state["streams"] = GriffinStreams(grpc_url)  # made on the server's own event loop
        yield
        await state["streams"].close()

    app = FastAPI(title="griffin-trt OpenAI-compatible API", lifespan=lifespan)
    created = int(time.time())

    @app.exception_handler(OpenAIError)
    async def _openai_error(_request, e: OpenAIError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(HTTPException)
    async def _http_error(_request, e: HTTPException):
        return JSONResponse(OpenAIError(str(e.detail), status=e.status_code).body(), status_code=e.status_code)

    @app.get("/health")
    async def health():
        ok = await state["streams"].ready()
        return Response(status_code=200 if ok else 503)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card(model.name, created)]}

    @app.get("/v1/models/{name:path}")
    async def model_card(name: str):
        if name != model.name:
            raise OpenAIError(f"The model `{name}` does not exist.", status=404, param="model", code="model_not_found")
        return _model_card(model.name, created)

    @app.post("/v1/completions")
    async def completions(request: Request):
        gen = parse_completion(parse_json(await request.body()), model)
        return await _answer(request, gen, _Kind(chat=False))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        gen = parse_chat(parse_json(await request.body()), model)
        return await _answer(request, gen, _Kind(chat=True))

    async def _answer(request: Request, gen: Generation, kind: _Kind):
        rid, now = f"{kind.prefix}-{uuid.uuid4().hex}", int(time.time())
        head = {"id": rid, "created": now, "model": model.name}
        texts = _texts(state["streams"], model.tokenizer, gen)
        try:
            if not gen.stream:
                text, last = await _unless_disconnected(request, _collect(texts))
                return {**head, "object": kind.object, "choices": [kind.choice(text, last.finish_reason)],
                        "usage": _usage(last.stats), "griffin": _griffin_stats(gen, last.stats)}
            # The first response before the headers, so that a refusal still gets its 4xx status.
            first = await _unless_disconnected(request, anext(texts))
        except _ClientGone:
            return Response(status_code=CLIENT_CLOSED)
        return StreamingResponse(_events(texts, first, gen, kind, head), media_type="text/event-stream")

    return app


async def _collect(texts) -> tuple[str, Chunk]:
    parts, last = [], None
    async for text, last, stop in texts:
        parts.append(text)
    last.finish_reason = "stop" if stop.stopped else last.finish_reason
    return "".join(parts), last


def _sse(data: dict) -> str:
    return f"data: {json.dumps(data)}\n\n"


async def _events(texts, first, gen: Generation, kind: _Kind, head: dict) -> AsyncIterator[str]:
    head = {**head, "object": kind.chunk_object}
    item, sent_any = first, False
    try:
        while item is not None:
            text, chunk, stop = item
            if text or (kind.chat and not sent_any):
                yield _sse({**head, "choices": [kind.choice(text, None, first=not sent_any, stream=True)]})
                sent_any = True
            if chunk.final:
                reason = "stop" if stop.stopped else chunk.finish_reason
                yield _sse({**head, "choices": [kind.choice("", reason, stream=True)],
                            "griffin": _griffin_stats(gen, chunk.stats)})
                if gen.include_usage:
                    yield _sse({**head, "choices": [], "usage": _usage(chunk.stats)})
            item = await anext(texts, None)
    except OpenAIError as e:  # after the headers: the error as an event, as OpenAI's servers send it
        yield _sse(e.body())
    finally:
        await texts.aclose()  # the client left mid-stream: cancel the griffin request now, not at GC
    yield "data: [DONE]\n\n"


def _model_card(name: str, created: int) -> dict:
    return {"id": name, "object": "model", "created": created, "owned_by": "griffin-trt"}
