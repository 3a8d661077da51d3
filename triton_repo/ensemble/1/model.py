"""Triton Python model `ensemble`: TensorRT-LLM's client-facing text model (decoupled), same name,
inputs and outputs as the Triton ensemble it replaces.

Why not a Triton ensemble: tritonserver 2.51 passes a client's cancellation only to the ensemble step it
schedules next, never to the `griffin` step already running, and Python models cannot cancel their own
decoupled sub-requests before 2.52 (DESIGN.md). So the client's request comes here, and this model
tells `griffin` itself when its client goes away.

Per request: the settings and the prompt are checked and tokenized in-process
(griffin_trt.serving.text_prompts, the `preprocessing` model's rules and messages); the request goes to
the `griffin` model (the one copy of the models and of the scheduler) as a decoupled request under a
fresh request id; each of its responses is detokenized in-process (griffin_trt.detokenize, as
`postprocessing` does: streamed chunks concatenate to the unary text) and sent on with the statistics.
One thread per request relays its responses. A poller asks every live client's sender `is_cancelled()`
each POLL_S (a stream cancelled or closed, a deadline passed, an HTTP client gone); for such a client,
or one a response could not be sent to, griffin gets a `stop` request with that id (TensorRT-LLM's
convention) and frees the row at the start of its next step.
"""
import json
import os
import sys
import threading
import traceback
import uuid

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
POLL_S = 0.005  # well under one decode step; each poll is one IPC round trip per live request
TEXT_OUTPUT = "text_output"


def _params(args):
    cfg = json.loads(args["model_config"])
    return cfg, {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}


def _extend_sys_path(value):
    for p in reversed([p for p in value.split(os.pathsep) if p]):
        if p not in sys.path:
            sys.path.insert(0, p)


def _array(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else t.as_numpy()


class _Relay:
    """One client request in flight: its sender and the id its griffin request runs under. `lock`
    orders sends and cancellation polls: tritonserver 2.51 frees a response factory with its FINAL
    response, and `is_cancelled()` on it after that crashes the server (seen here: SIGSEGV in
    TRITONBACKEND_ResponseFactoryIsCancelled), so nothing touches the sender once `done`."""

    __slots__ = ("sender", "rid", "lock", "done", "stopped")

    def __init__(self, sender):
        self.sender, self.rid = sender, uuid.uuid4().hex
        self.lock = threading.Lock()
        self.done = self.stopped = False


class TritonPythonModel:
    def initialize(self, args):
        cfg, params = _params(args)
        _extend_sys_path(params.get("python_path", ""))
        if int(np.__version__.split(".")[0]) >= 2:
            raise RuntimeError(f"numpy {np.__version__} in the serving environment: pb_utils.Tensor outputs come back empty with numpy 2; install numpy<2")
        from transformers import AutoTokenizer

        from griffin_trt.detokenize import continuation_text
        from griffin_trt.serving.text_prompts import TextPrompts
        from griffin_trt.serving.trtllm_inputs import INPUTS

        self.continuation_text = continuation_text
        self.tokenizer = AutoTokenizer.from_pretrained(params["tokenizer_dir"])
        self.prompts = TextPrompts(self.tokenizer, int(params["max_input_len"]), int(params["max_output_len"]))
        self.griffin = params["scheduler_model"]
        # Every other input goes to griffin under griffin's name; every output but the text is griffin's.
        self.forward = [(i.name, i.griffin) for i in INPUTS if i.griffin] + [("speculative", "speculative")]
        self.outputs = [o["name"] for o in cfg["output"] if o["name"] != TEXT_OUTPUT]
        self.wanted = self.outputs + ["context_ids", "is_final"]
        self._stop_inputs = [pb_utils.Tensor("stop", np.array([[True]], np.bool_)),
                             pb_utils.Tensor("input_ids", np.zeros((1, 1), np.int32)),
                             pb_utils.Tensor("request_output_len", np.ones((1, 1), np.int32))]
        self._live = {}  # rid -> _Relay
        self._lock = threading.Lock()
        self._any_live = threading.Condition(self._lock)  # the poller sleeps while nothing is in flight
        self._closing = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="ensemble-cancel-poller", daemon=True)
        self._poller.start()

    # ------------------------------------------------------------------ requests
    def _griffin_request(self, request, rid):
        """The griffin request for a text request (refused with RequestError before any tokenizing)."""
        self.prompts.check_settings(lambda name: _array(request, name))
        ids = np.asarray(self.prompts.encode(_array(request, "text_input")), np.int32).reshape(1, -1)
        tensors = [pb_utils.Tensor("input_ids", ids),
                   pb_utils.Tensor("input_lengths", np.array([[ids.shape[1]]], np.int32))]
        for name, griffin_name in self.forward:
            a = _array(request, name)
            if a is not None:
                tensors.append(pb_utils.Tensor(griffin_name, a))
        raw = request.parameters()
        extra = {"parameters": json.loads(raw)} if raw and raw != "{}" else {}
        return pb_utils.InferenceRequest(model_name=self.griffin, request_id=rid, inputs=tensors,
                                         requested_output_names=self.wanted, **extra)

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            relay = _Relay(sender)
            try:
                sub = self._griffin_request(request, relay.rid)
            except ValueError as e:  # RequestError: one line naming the problem
                self._error(relay, str(e))
                continue
            except Exception as e:  # a bug: this request fails, the others are served
                pb_utils.Logger.log_error(f"ensemble: could not forward a request: {traceback.format_exc()}")
                self._error(relay, f"internal error: {type(e).__name__}: {e}")
                continue
            with self._lock:
                self._live[relay.rid] = relay
                self._any_live.notify()
            threading.Thread(target=self._relay, args=(relay, sub), name="ensemble-relay", daemon=True).start()
        return None

    def _relay(self, relay, sub):
        try:
            for resp in sub.exec(decoupled=True):  # returns with the first response
                if resp.has_error():
                    err = resp.error()  # griffin's message as it is; CANCELLED stays CANCELLED
                    self._error(relay, err.message(), err.code() if hasattr(err, "code") else None)
                elif pb_utils.get_output_tensor_by_name(resp, "output_ids") is not None:  # not an empty final
                    out, last = self._text_response(resp)
                    self._send(relay, out, FINAL if last else 0)
        except Exception as e:  # noqa: BLE001 - griffin unreachable: this request fails, not the model
            pb_utils.Logger.log_error(f"ensemble: relaying from {self.griffin} failed: {traceback.format_exc()}")
            self._error(relay, f"internal error: {type(e).__name__}: {e}")
        finally:
            with self._lock:
                self._live.pop(relay.rid, None)
            self._error(relay, "the request ended without a final response")  # unless one was sent

    def _text_response(self, resp):
        """griffin's response as the ensemble's: the text its ids add, and griffin's other outputs."""
        get = lambda name: pb_utils.get_output_tensor_by_name(resp, name).as_numpy()  # noqa: E731
        ids, last = get("output_ids"), bool(get("is_final").reshape(-1)[0])
        text = self.continuation_text(self.tokenizer, get("context_ids").reshape(-1), ids.reshape(-1), last)
        tensors = [pb_utils.Tensor(TEXT_OUTPUT, np.array([[text.encode("utf-8")]], np.object_))]
        tensors += [pb_utils.Tensor(name, get(name)) for name in self.outputs]
        return pb_utils.InferenceResponse(output_tensors=tensors), last

    def _send(self, relay, response, flags=0):
        """Sends unless the request has had its FINAL response; a client that is gone gets its griffin
        request stopped."""
        with relay.lock:
            if relay.done:
                return
            relay.done = bool(flags & FINAL)
            try:
                relay.sender.send(response, flags=flags)
                return
            except Exception:  # noqa: BLE001 - the client went away
                pass
        self._stop(relay)

    def _error(self, relay, message, code=None):
        err = pb_utils.TritonError(message, code) if code is not None else pb_utils.TritonError(message)
        self._send(relay, pb_utils.InferenceResponse(output_tensors=[], error=err), FINAL)

    # ------------------------------------------------------------------ cancellation
    def _poll(self):
        while not self._closing.wait(POLL_S):
            with self._lock:
                self._any_live.wait_for(lambda: self._live or self._closing.is_set())
                relays = [r for r in self._live.values() if not r.stopped]
            for relay in relays:
                try:
                    with relay.lock:
                        cancelled = not relay.done and relay.sender.is_cancelled()
                    if cancelled:
                        self._stop(relay)
                except Exception:  # noqa: BLE001 - keep polling the others
                    pb_utils.Logger.log_error(f"ensemble: cancellation poll failed: {traceback.format_exc(limit=1)}")

    def _stop(self, relay):
        """Tell griffin to free the request's row (its relay thread then gets griffin's final response)."""
        with self._lock:
            if relay.stopped or relay.rid not in self._live:
                return  # stopped already, or griffin has finished with it
            relay.stopped = True
        # griffin's required inputs come along (tritonserver checks them before griffin sees `stop`).
        stop = pb_utils.InferenceRequest(model_name=self.griffin, request_id=relay.rid, requested_output_names=[],
                                         inputs=self._stop_inputs)
        for resp in stop.exec(decoupled=True):
            if resp.has_error():
                pb_utils.Logger.log_error(f"ensemble: {self.griffin} refused a stop: {resp.error().message()}")

    def finalize(self):
        self._closing.set()
        with self._lock:
            self._any_live.notify()
        self._poller.join(timeout=5)
