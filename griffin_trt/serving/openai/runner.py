"""uvicorn on a thread of `griffin-trt serve`, beside the tritonserver child it forwards to."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from ..server import ServerError
from .protocol import ServedModel


def load_tokenizer(folder: Path):
    """The class AutoTokenizer would pick (tokenizer_config.json's `tokenizer_class`), imported by name:
    AutoTokenizer itself imports torch (through AutoConfig), which this process otherwise never needs."""
    import transformers

    try:
        name = json.loads((Path(folder) / "tokenizer_config.json").read_text()).get("tokenizer_class") or ""
    except (OSError, json.JSONDecodeError):
        name = ""
    cls = getattr(transformers, name, None) or getattr(transformers, name.removesuffix("Fast"), None)
    if cls is None:
        cls = transformers.AutoTokenizer
    return cls.from_pretrained(str(folder))


def served_model(recipe, build_dir: Path) -> ServedModel:
    """The deployment as the endpoint sees it: the recipe's name and limits, the tokenizer it serves with."""
    from ..repository import tokenizer_dir

    tokenizer = load_tokenizer(tokenizer_dir(recipe, build_dir))
    return ServedModel.of(recipe.name, tokenizer, recipe.limits.max_input_len, recipe.limits.max_output_len)


class OpenAIServer:
    """The OpenAI-compatible HTTP server; start() returns once it listens, stop() ends it."""

    def __init__(self, model: ServedModel, grpc_url: str, host: str, port: int):
        import uvicorn

        from .app import create_app

        self.host, self.port = host, port
        config = uvicorn.Config(create_app(model, grpc_url), host=host, port=port, log_level="warning",
                                timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self, timeout: float = 30.0) -> "OpenAIServer":
        # Off the main thread uvicorn installs no signal handlers: `griffin-trt serve` keeps its own.
        self._thread = threading.Thread(target=self._server.run, name="openai-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():  # uvicorn exits when it cannot bind
                raise ServerError(f"the OpenAI endpoint could not listen on {self.host}:{self.port} "
                                  "(port in use or not allowed)")
            if time.monotonic() > deadline:
                self.stop()
                raise ServerError(f"the OpenAI endpoint did not start within {timeout:.0f} s")
            time.sleep(0.05)
        return self

    def is_alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
