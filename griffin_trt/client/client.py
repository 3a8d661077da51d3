"""A light gRPC client for the griffin Triton models (tritonclient.grpc + numpy; no torch).

The griffin model is decoupled, so every call goes over the bidirectional gRPC stream, streaming or
not: `stream=True` gets one response per accepted decode step (several tokens each), `stream=False`
one response with everything. The last response carries the request's statistics. Tokens are
counted from `output_ids`, never from the number of responses.

    griffin-trt client --url 127.0.0.1:8001 --prompt "Hello"
"""
from __future__ import annotations

import argparse
import itertools
import queue
import sys
import time
from dataclasses import asdict, dataclass, field

import numpy as np

DEFAULT_URL = "127.0.0.1:8001"
STAT_FIELDS = (
    "acceptance_length", "acceptance_rate", "target_forwards", "num_decode_steps",
    "total_accepted_draft_tokens", "total_draft_tokens",
    "arrival_time_ns", "first_token_time_ns", "last_token_time_ns", "first_scheduled_time_ns",
)


class ClientError(RuntimeError):
    """The server refused or failed the request (message from the server included)."""


@dataclass
class RequestResult:
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    num_responses: int = 0
    ok: bool = True
    error: str = ""
    # client-side wall clock (time.perf_counter), seconds
    send_s: float = 0.0
    first_token_s: float | None = None
    last_token_s: float | None = None
    done_s: float = 0.0
    # server-side statistics (last response)
    acceptance_length: float = 0.0
    acceptance_rate: float = 0.0
    target_forwards: int = 0
    num_decode_steps: int = 0
    total_accepted_draft_tokens: int = 0
    total_draft_tokens: int = 0
    arrival_time_ns: int = 0
    first_token_time_ns: int = 0
    last_token_time_ns: int = 0
    first_scheduled_time_ns: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def ttft_s(self) -> float | None:
        return None if self.first_token_s is None else self.first_token_s - self.send_s

    @property
    def e2e_s(self) -> float:
        return self.done_s - self.send_s

    @property
    def tpot_s(self) -> float | None:
        n = self.num_tokens
        if n < 2 or self.first_token_s is None:
            return None
        return (self.last_token_s - self.first_token_s) / (n - 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(num_tokens=self.num_tokens, ttft_s=self.ttft_s, tpot_s=self.tpot_s, e2e_s=self.e2e_s)
        return d


def _input(grpcclient, name: str, arr: np.ndarray, dtype: str):
    t = grpcclient.InferInput(name, list(arr.shape), dtype)
    t.set_data_from_numpy(arr)
    return t


class GriffinClient:
    """One gRPC connection with one open stream; not shared between threads (make one per worker)."""

    _ids = itertools.count()

    def __init__(self, url: str = DEFAULT_URL, model: str = "ensemble", timeout_s: float = 600.0):
        import tritonclient.grpc as grpcclient

        self._g = grpcclient
        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        self.client = grpcclient.InferenceServerClient(url)
        self._q: queue.Queue = queue.Queue()
        self._streaming = False

    def _start(self) -> None:
        if not self._streaming:
            self.client.start_stream(callback=lambda result, error: self._q.put((result, error)))
            self._streaming = True

    def close(self) -> None:
        if self._streaming:
            self.client.stop_stream()
            self._streaming = False
        self.client.close()

    def __enter__(self) -> "GriffinClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def is_ready(self) -> bool:
        try:
            return bool(self.client.is_server_ready() and self.client.is_model_ready(self.model))
        except Exception:
            return False

    def _settings(self, max_tokens, stream, speculative, temperature, top_p, top_k, seed, end_id, stop_words,
                  names) -> list:
        g = self._g
        ins = [_input(g, names["max_tokens"], np.array([[max_tokens]], np.int32), "INT32")]
        ins.append(_input(g, names["stream"], np.array([[bool(stream)]], np.bool_), "BOOL"))
        # TensorRT-LLM's default puts the prompt in front of unary outputs; this client wants the new tokens.
        ins.append(_input(g, "exclude_input_in_output", np.array([[True]], np.bool_), "BOOL"))
        ins.append(_input(g, "speculative", np.array([[bool(speculative)]], np.bool_), "BOOL"))
        ins.append(_input(g, "temperature", np.array([[temperature]], np.float32), "FP32"))
        ins.append(_input(g, names["top_p"], np.array([[top_p]], np.float32), "FP32"))
        ins.append(_input(g, names["top_k"], np.array([[top_k]], np.int32), "INT32"))
        if seed is not None:
            ins.append(_input(g, "random_seed", np.array([[seed]], np.uint64), "UINT64"))
        if end_id is not None:
            ins.append(_input(g, "end_id", np.array([[end_id]], np.int32), "INT32"))
        if stop_words:
            words = np.array([[w.encode("utf-8") for w in stop_words]], dtype=np.object_)
            ins.append(_input(g, "stop_words", words, "BYTES"))
        return ins

    def generate(
        self,
        prompt: str | None = None,
        *,
        input_ids: list[int] | None = None,
        max_tokens: int = 64,
        stream: bool = True,
        speculative: bool = True,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int | None = None,
        end_id: int | None = None,
        stop_words: list[str] | None = None,
        on_tokens=None,
        on_text=None,
        raise_on_error: bool = True,
    ) -> RequestResult:
        """Text through the ensemble (`prompt`) or token ids straight to the griffin model (`input_ids`)."""
        g = self._g
        if input_ids is not None:
            model = "griffin" if self.model == "ensemble" else self.model
            names = {"max_tokens": "request_output_len", "stream": "streaming", "top_p": "runtime_top_p", "top_k": "runtime_top_k"}
            ids = np.asarray(input_ids, dtype=np.int32).reshape(1, -1)
            ins = [_input(g, "input_ids", ids, "INT32"),
                   _input(g, "input_lengths", np.array([[ids.shape[1]]], np.int32), "INT32")]
        else:
            model = self.model
            names = {"max_tokens": "max_tokens", "stream": "stream", "top_p": "top_p", "top_k": "top_k"}
            ins = [_input(g, "text_input", np.array([[str(prompt).encode("utf-8")]], dtype=np.object_), "BYTES")]
        ins += self._settings(max_tokens, stream, speculative, temperature, top_p, top_k, seed, end_id, stop_words,
                              names)
        rid = f"griffin-{next(self._ids)}"
        self._start()
        res = RequestResult(send_s=time.perf_counter())
        try:
            self.client.async_stream_infer(model, ins, request_id=rid, enable_empty_final_response=True)
        except Exception as e:  # noqa: BLE001 - the stream broke (server gone): say why, in one line
            try:
                _, error = self._q.get_nowait()  # the stream's own error says more than tritonclient's
            except queue.Empty:
                error = e
            self.client.stop_stream()
            self._streaming = False
            res.ok, res.error, res.done_s = False, " ".join(str(error).split()), time.perf_counter()
            if raise_on_error:
                raise ClientError(res.error) from None
            return res
        deadline = time.monotonic() + self.timeout_s
        texts: list[str] = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                res.ok, res.error = False, f"no final response within {self.timeout_s:.0f} s"
                break
            try:
                result, error = self._q.get(timeout=left)
            except queue.Empty:
                continue
            now = time.perf_counter()
            if error is not None:
                res.ok, res.error, res.done_s = False, str(error), now
                break
            resp = result.get_response()
            if resp.id and resp.id != rid:
                continue  # a late answer to an earlier, abandoned request on this stream
            final = resp.parameters.get("triton_final_response")
            final = bool(final and final.bool_param)
            names_out = {o.name for o in resp.outputs}
            if "output_ids" in names_out:
                new = [int(t) for t in result.as_numpy("output_ids").reshape(-1)]
                if new:
                    res.num_responses += 1
                    res.first_token_s = now if res.first_token_s is None else res.first_token_s
                    res.last_token_s = now
                    res.token_ids.extend(new)
                    if on_tokens is not None:
                        on_tokens(new)
            if "text_output" in names_out:
                chunk = "".join(x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x)
                                for x in result.as_numpy("text_output").reshape(-1))
                texts.append(chunk)
                if on_text is not None and chunk:
                    on_text(chunk)
            if final:
                for name in STAT_FIELDS:
                    if name in names_out:
                        v = result.as_numpy(name).reshape(-1)
                        if v.size:
                            setattr(res, name, type(getattr(res, name))(v[0]))
                res.done_s = now
                break
        res.text = "".join(texts)
        if not res.ok and raise_on_error:
            raise ClientError(res.error)
        return res


# ---------------------------------------------------------------- CLI: griffin-trt client


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("client", help="send one prompt to a running server over gRPC (streams the text)")
    p.add_argument("--url", default=DEFAULT_URL, help=f"gRPC address (default {DEFAULT_URL})")
    p.add_argument("--prompt", required=True)
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--plain", action="store_true", help="plain autoregressive decoding (no drafter)")
    p.add_argument("--unary", action="store_true", help="one response at the end instead of streaming")
    p.add_argument("--model", default="ensemble")
    p.set_defaults(func=run_client, handler=run_client)
    return p


def run_client(args: argparse.Namespace) -> int:
    try:
        return _run_client(args)
    except Exception as e:  # noqa: BLE001 - tritonclient raises its own kinds for a server that is not there
        print(f"griffin-trt client: error: cannot talk to the server at {args.url}: {' '.join(str(e).split())}",
              file=sys.stderr)
        return 1


def _run_client(args: argparse.Namespace) -> int:
    with GriffinClient(args.url, model=args.model) as c:
        res = c.generate(
            args.prompt, max_tokens=args.max_tokens, stream=not args.unary, speculative=not args.plain,
            temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, seed=args.seed,
            on_text=lambda t: print(t, end="", flush=True), raise_on_error=False,
        )
        print()
        if not res.ok:
            print(f"griffin-trt client: error: {res.error}", file=sys.stderr)
            return 1
    ttft = f"{res.ttft_s * 1e3:.1f} ms" if res.ttft_s is not None else "-"
    tpot = f"{res.tpot_s * 1e3:.1f} ms" if res.tpot_s is not None else "-"
    print(
        f"[{res.num_tokens} tokens in {res.num_responses} responses, acceptance length "
        f"{res.acceptance_length:.2f} over {res.target_forwards} target forwards, TTFT {ttft}, TPOT {tpot}, "
        f"end-to-end {res.e2e_s:.2f} s]",
        file=sys.stderr,
    )
    return 0
