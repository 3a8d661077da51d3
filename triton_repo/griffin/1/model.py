"""Triton Python model `griffin`: GRIFFIN speculative decoding with in-flight batching (decoupled).

`execute()` parses and validates each request, hands it to the runtime's step-level scheduler
(griffin_trt/runtime/scheduler.py, the loop `griffin-trt generate` runs too) and returns at once.
One background thread owns the scheduler: every step it admits waiting requests into free cache
rows, decodes one draft-and-verify step over all active rows and streams each row's new tokens.
Streaming requests get one response per step they advanced in (several tokens each) and a last
response, flagged FINAL, with the request's statistics; unary requests get everything in one.

Cancellation: before every step the thread asks each live request's sender `is_cancelled()`; a
cancelled request, or one whose response could not be sent (the client went away), is cancelled in
the scheduler, which frees its row at the start of the next step. A request whose `stop` input is
true (TensorRT-LLM's convention) stops every live request with its request id the same way, and is
answered with an empty FINAL response: the `ensemble` model, which calls this one, sends one when its
own client goes away, since tritonserver 2.51 passes no cancellation to a model's sub-requests. A stop
can overtake its request (the two are sent from different threads), so the ids of stops that found
nothing are kept for a while (EARLY_STOPS) and such a request is cancelled as it arrives.
Either way the request ends with a FINAL response and is counted in
`griffin_requests{outcome="cancelled"}`.

Value rules are `griffin_trt.request_rules` (the CLI's too, same messages; the scheduler applies them
again on submit) and TensorRT-LLM's input names are in griffin_trt/serving/trtllm_inputs.py; bad
requests get a TritonError and the model keeps serving.

Streamed text: each response carries `context_ids` (the ids sent before it, up to
detokenize.CONTEXT_TOKENS) and `is_final`; the ensemble model (or postprocessing) decodes context +
new ids minus context and holds back an unfinished character until a later response (or the last
one) completes it.
"""
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
STAT_NAMES_INT32 = ("target_forwards", "num_decode_steps", "total_accepted_draft_tokens", "total_draft_tokens",
                    "num_input_tokens", "num_output_tokens")
STAT_NAMES_INT64 = ("arrival_time_ns", "first_token_time_ns", "last_token_time_ns", "first_scheduled_time_ns")
KNOWN_PARAMETERS = frozenset()  # request parameters this model understands (none: use input tensors)
EARLY_STOPS = (1024, 60.0)  # ids of stops that found no request: how many, and for how many seconds
TIME_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]


class BadRequest(ValueError):
    pass


def _params(args):
    cfg = json.loads(args["model_config"])
    return cfg, {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}


def _extend_sys_path(value):
    for p in reversed([p for p in value.split(os.pathsep) if p]):
        if p not in sys.path:
            sys.path.insert(0, p)


def _tensor(request, name):
    t = pb_utils.get_input_tensor_by_name(request, name)
    return None if t is None else t.as_numpy()


def _scalar(request, name, default, cast):
    a = _tensor(request, name)
    if a is None:
        return default
    if a.size != 1:
        raise BadRequest(f"{name} must hold one value per request, got shape {list(a.shape)}")
    return cast(a.reshape(-1)[0])


def _strings(request, name):
    a = _tensor(request, name)
    if a is None:
        return ()
    out = []
    for v in a.reshape(-1).tolist():
        s = v.decode("utf-8") if isinstance(v, bytes) else str(v)
        if s:
            out.append(s)
    return tuple(out)


class _Job:
    """A request in flight: its Triton sender and what the responses need."""

    __slots__ = ("req", "sender", "rid", "stream", "include_prompt", "ctx", "sent", "alive", "mode")

    def __init__(self, req, sender, rid, stream, include_prompt, context_tokens):
        self.req, self.sender, self.rid, self.stream, self.include_prompt = req, sender, rid, stream, include_prompt
        self.ctx = req.prompt[-context_tokens:]  # the ids before the next chunk, for the detokenizer
        self.sent = 0
        self.alive = True
        self.mode = "speculative" if req.speculative else "plain"


class TritonPythonModel:
    def initialize(self, args):
        cfg, params = _params(args)
        _extend_sys_path(params.get("python_path", ""))
        if int(np.__version__.split(".")[0]) >= 2:
            raise RuntimeError(
                f"numpy {np.__version__} in the serving environment: pb_utils.Tensor outputs come back empty "
                "with numpy 2; install numpy<2"
            )
        want = params.get("python_version", "")
        have = f"{sys.version_info.major}.{sys.version_info.minor}"
        if want and want != have:
            raise RuntimeError(f"repository was filled for Python {want}, the back-end stub runs Python {have}")
        from griffin_trt import detokenize, request_rules
        from griffin_trt.recipe import recipe_from_dict
        from griffin_trt.runtime import Request, SamplingParams, load_runtime
        from griffin_trt.serving import trtllm_inputs

        self.Request, self.SamplingParams, self.compat = Request, SamplingParams, trtllm_inputs
        self.rules, self.detok = request_rules, detokenize
        model_dir = args["model_repository"]
        with open(os.path.join(model_dir, "recipe.json")) as f:
            recipe = recipe_from_dict(json.load(f), base=Path(model_dir))
        build_dir = params.get("build_dir") or None
        if build_dir and not os.path.isfile(os.path.join(build_dir, "manifest.json")):
            build_dir = None  # nothing built (torch back end straight from the checkpoints)
        self.runtime = load_runtime(recipe, build_dir=build_dir)
        self.limits = recipe.limits
        self.vocab = int(self.runtime.decoder.ex.spec.vocab_size)  # the model's ids, not the tokenizer's
        self.scheduler = self.runtime.decoder.scheduler
        self.scheduler.on_step = self._on_step
        self._noted = set()  # ignored TensorRT-LLM inputs already logged
        self._jobs = {}  # id(request) -> _Job, live requests
        self._by_rid = {}  # Triton request id -> {id(request)}: what a `stop` request names
        self._early_stops = {}  # request id -> monotonic time of a stop that found nothing (oldest first)
        self._jobs_lock = threading.Lock()
        self._pending_tokens = {}  # mode -> tokens emitted this step (flushed into the counter per step)
        self._init_metrics(args)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="griffin-scheduler", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ metrics
    def _init_metrics(self, args):
        labels = {"model": args.get("model_name", "griffin"), "version": str(args.get("model_version", "1"))}
        C = pb_utils.MetricFamily.COUNTER

        def counter(name, desc):
            return pb_utils.MetricFamily(name=name, description=desc, kind=C)

        self.fam_drafts = counter("griffin_spec_decode_num_drafts", "Decode steps (target forwards) of speculative requests")
        self.fam_draft_tokens = counter("griffin_spec_decode_num_draft_tokens", "Draft tokens verified")
        self.fam_accepted = counter("griffin_spec_decode_num_accepted_tokens", "Draft tokens accepted by the target")
        self.fam_accepted_pos = counter(
            "griffin_spec_decode_num_accepted_tokens_per_pos", "Draft tokens accepted, by depth in the draft tree"
        )
        self.fam_requests = counter("griffin_requests", "Requests answered, by mode and outcome")
        self.fam_tokens = counter("griffin_generated_tokens", "Tokens generated, by mode (counted as they are decoded)")
        self.fam_steps = counter("griffin_decode_steps", "Scheduler decode steps, by tree budget (verified positions per row)")
        self.m_drafts = self.fam_drafts.Metric(labels=labels)
        self.m_draft_tokens = self.fam_draft_tokens.Metric(labels=labels)
        self.m_accepted = self.fam_accepted.Metric(labels=labels)
        self._labels = labels
        self.m_accepted_pos, self.m_requests, self.m_tokens, self.m_steps = {}, {}, {}, {}
        try:
            H = pb_utils.MetricFamily.HISTOGRAM
            self.fam_draft_time = pb_utils.MetricFamily(
                name="griffin_spec_decode_draft_time_seconds", description="Drafting time per decode step", kind=H
            )
            self.fam_verify_time = pb_utils.MetricFamily(
                name="griffin_spec_decode_verify_time_seconds", description="Target verify time per decode step", kind=H
            )
            self.m_draft_time = self.fam_draft_time.Metric(labels=labels, buckets=TIME_BUCKETS)
            self.m_verify_time = self.fam_verify_time.Metric(labels=labels, buckets=TIME_BUCKETS)
            self._hist = True
        except (AttributeError, TypeError):  # an older Python back end without histograms: seconds counters
            self.fam_draft_time = counter("griffin_spec_decode_draft_time_seconds_total", "Drafting time")
            self.fam_verify_time = counter("griffin_spec_decode_verify_time_seconds_total", "Target verify time")
            self.m_draft_time = self.fam_draft_time.Metric(labels=labels)
            self.m_verify_time = self.fam_verify_time.Metric(labels=labels)
            self._hist = False

    def _metric(self, cache, family, extra):
        key = tuple(sorted(extra.items()))
        if key not in cache:
            cache[key] = family.Metric(labels={**self._labels, **extra})
        return cache[key]

    def _count(self, mode, res, outcome):
        """One request's totals, when it ends (the token counter runs live, per step)."""
        self._metric(self.m_requests, self.fam_requests, {"mode": mode, "outcome": outcome}).increment(1)
        steps = int(res.target_forwards) if res is not None else 0
        if mode != "speculative" or steps <= 0:
            return
        self.m_drafts.increment(steps)
        self.m_draft_tokens.increment(int(res.draft_tokens))
        self.m_accepted.increment(int(res.accepted_draft_tokens))
        for pos, k in enumerate(res.accepted_per_position or []):
            if k:
                self._metric(self.m_accepted_pos, self.fam_accepted_pos, {"position": str(pos)}).increment(int(k))
        if self._hist:
            self.m_draft_time.observe(float(res.draft_time_s) / steps)
            self.m_verify_time.observe(float(res.verify_time_s) / steps)
        else:
            self.m_draft_time.increment(float(res.draft_time_s))
            self.m_verify_time.increment(float(res.verify_time_s))

    def _on_step(self, info):
        self._metric(self.m_steps, self.fam_steps, {"tree_tokens": str(info.tree_tokens)}).increment(1)

    def _flush_tokens(self):
        for mode, n in self._pending_tokens.items():
            if n:
                self._metric(self.m_tokens, self.fam_tokens, {"mode": mode}).increment(n)
        self._pending_tokens.clear()

    # ------------------------------------------------------------------ requests
    def _parse(self, request, sender, arrival_ns):
        raw = request.parameters()
        extra = json.loads(raw) if raw else {}
        unknown = sorted(set(extra) - KNOWN_PARAMETERS)
        if unknown:
            raise BadRequest(f"unknown request parameter(s) {unknown}: the griffin model takes its settings as input tensors")
        for name, spec in self.compat.BY_GRIFFIN.items():
            if spec.policy == self.compat.USE:
                continue
            a = _tensor(request, name)
            if a is None:
                continue
            note = self.compat.check_unsupported(spec, a)  # raises ValueError for a refused value
            if note and name not in self._noted:
                self._noted.add(name)
                pb_utils.Logger.log_info(f"griffin: {note}")
        ids = _tensor(request, "input_ids")
        if ids is None:
            raise BadRequest("input_ids is required")
        if ids.ndim != 2 or ids.shape[0] != 1:
            raise BadRequest(f"input_ids must have shape [1, length] (one prompt per request), got {list(ids.shape)}")
        length = _scalar(request, "input_lengths", ids.shape[1], int)
        if not 0 <= length <= ids.shape[1]:
            raise BadRequest(f"input_lengths = {length} but input_ids holds {ids.shape[1]} tokens")
        # Every value through griffin_trt.request_rules, as in `griffin-trt generate`.
        rules = self.rules
        prompt = rules.check_prompt_ids(ids[0, :length], self.limits.max_input_len, self.vocab)
        max_tokens = rules.check_max_tokens(_scalar(request, "request_output_len", None, int), self.limits.max_output_len)
        seed = _scalar(request, "seed", None, int)
        seed = _scalar(request, "random_seed", seed, int)
        end_id = rules.check_end_id(_scalar(request, "end_id", None, int), self.vocab)
        sampling = self.SamplingParams(
            temperature=_scalar(request, "temperature", 0.0, float),
            top_p=_scalar(request, "runtime_top_p", 1.0, float),
            top_k=_scalar(request, "runtime_top_k", 0, int),
            seed=seed,
        )
        sampling.validate()
        req = self.Request(
            prompt=prompt,
            max_new_tokens=max_tokens,
            sampling=sampling,
            speculative=_scalar(request, "speculative", True, bool),
            stop_ids=frozenset() if end_id is None else frozenset([end_id]),
            stop_strings=_strings(request, "stop_words"),
            arrival_time_ns=arrival_ns,
        )
        stream = _scalar(request, "streaming", False, bool)
        # TensorRT-LLM's rule: unary outputs include the prompt unless excluded; streams never do.
        include_prompt = not stream and not _scalar(request, "exclude_input_in_output", False, bool)
        job = _Job(req, sender, request.request_id(), stream, include_prompt, self.detok.CONTEXT_TOKENS)
        req.on_tokens = lambda new, job=job: self._on_tokens(job, new)
        req.on_finish = lambda _req, job=job: self._on_finish(job)
        return job

    def execute(self, requests):
        for request in requests:
            arrival = time.time_ns()
            sender = request.get_response_sender()
            try:
                if _scalar(request, "stop", False, bool):
                    self._stop_requests(request.request_id())
                    sender.send(flags=FINAL)
                    continue
                job = self._parse(request, sender, arrival)
                self._register(job)
                try:
                    self.scheduler.submit(job.req)  # validates (runtime rules), then queues
                except BaseException:
                    self._unregister(job)
                    raise
            except ValueError as e:  # BadRequest, the runtime's request rules, TensorRT-LLM inputs
                self._error(sender, str(e))
                self._count("none", None, "rejected")
            except Exception as e:  # a bug: this request fails, the others are served
                pb_utils.Logger.log_error(f"griffin: could not queue a request: {traceback.format_exc()}")
                self._error(sender, f"internal error: {type(e).__name__}: {e}")
                self._count("none", None, "failed")
        return None

    def _register(self, job):
        with self._jobs_lock:
            self._jobs[id(job.req)] = job
            if job.rid:
                self._by_rid.setdefault(job.rid, set()).add(id(job.req))
                stopped_at = self._early_stops.pop(job.rid, None)
                if stopped_at is not None and time.monotonic() - stopped_at < EARLY_STOPS[1]:
                    self.scheduler.cancel(job.req)  # its stop came first: it ends before it decodes

    def _unregister(self, job):
        with self._jobs_lock:
            self._jobs.pop(id(job.req), None)
            same = self._by_rid.get(job.rid)
            if same is not None:
                same.discard(id(job.req))
                if not same:
                    del self._by_rid[job.rid]

    def _stop_requests(self, rid):
        """A `stop` request: its rows are freed at the start of the next step, as for a cancellation."""
        if not rid:
            raise BadRequest("stop needs the request id of the request to stop")
        with self._jobs_lock:
            jobs = [self._jobs[k] for k in self._by_rid.get(rid, ())]
            if not jobs:
                self._early_stops[rid] = time.monotonic()
                while len(self._early_stops) > EARLY_STOPS[0]:
                    del self._early_stops[next(iter(self._early_stops))]
        for job in jobs:
            self.scheduler.cancel(job.req)

    # ------------------------------------------------------------------ the scheduler thread
    def _loop(self):
        while not self._stop.is_set():
            if not self.scheduler.wait_for_work(timeout=0.2):
                continue
            self._poll_cancelled()
            try:
                self.scheduler.step()
            except Exception:  # every request in flight was ended with the error; keep serving
                pb_utils.Logger.log_error(f"griffin: decode step failed: {traceback.format_exc()}")
            self._flush_tokens()

    def _poll_cancelled(self):
        with self._jobs_lock:
            jobs = list(self._jobs.values())
        for job in jobs:
            if not job.req.cancelled and (not job.alive or job.sender.is_cancelled()):
                self.scheduler.cancel(job.req)

    def _on_tokens(self, job, new):
        self._pending_tokens[job.mode] = self._pending_tokens.get(job.mode, 0) + len(new)
        if not job.stream:
            return
        self._send(job, pb_utils.InferenceResponse(output_tensors=self._tensors(job, new)))
        job.sent += len(new)
        job.ctx = self.detok.next_context(job.ctx, new)

    def _on_finish(self, job):
        self._unregister(job)
        req, res = job.req, job.req.result
        reason = res.finish_reason
        if reason == "cancelled":
            self._count(job.mode, res, "cancelled")
            self._error(job.sender, "the request was cancelled", cancelled=True)
            return
        if reason == "error":
            self._count(job.mode, res, "failed")
            self._error(job.sender, f"internal error during generation: {req.error}")
            return
        ids = [int(t) for t in res.token_ids]
        if job.stream:
            rest = ids[job.sent:]
        elif job.include_prompt:
            rest, job.ctx = req.prompt + ids, []  # the detokenizer decodes the whole text
        else:
            rest = ids
        self._send(job, pb_utils.InferenceResponse(output_tensors=self._tensors(job, rest, res)), flags=FINAL)
        self._count(job.mode, res, "ok")

    def _send(self, job, response, flags=0):
        if not job.alive:
            return
        try:
            job.sender.send(response, flags=flags)
        except Exception:  # the client went away: its row is cancelled before the next step
            job.alive = False
            self.scheduler.cancel(job.req)
            pb_utils.Logger.log_warn(f"griffin: dropping a response: {traceback.format_exc(limit=1)}")

    def _tensors(self, job, ids, res=None):
        ids = np.asarray(ids, dtype=np.int32).reshape(1, -1)
        req = job.req
        t = [
            pb_utils.Tensor("output_ids", ids),
            pb_utils.Tensor("sequence_length", np.array([[ids.shape[1]]], np.int32)),
            pb_utils.Tensor("context_ids", np.asarray(job.ctx, np.int32).reshape(1, -1)),
            pb_utils.Tensor("is_final", np.array([[res is not None]], np.bool_)),
        ]
        r = req.result
        if res is None:  # an intermediate streamed chunk: stats are zero until the last response
            acc_len = acc_rate = 0.0
            i32 = dict.fromkeys(STAT_NAMES_INT32, 0)
            per_pos = []
        else:
            acc_len, acc_rate = float(res.acceptance_length), float(res.acceptance_rate)
            i32 = {
                "target_forwards": res.target_forwards,
                "num_decode_steps": res.target_forwards,
                "total_accepted_draft_tokens": res.accepted_draft_tokens,
                "total_draft_tokens": res.draft_tokens,
                "num_input_tokens": len(req.prompt),
                "num_output_tokens": len(res.token_ids),
            }
            per_pos = list(res.accepted_per_position or [])
        times = (r.arrival_time_ns, r.first_token_time_ns, r.last_token_time_ns, r.scheduled_time_ns)
        t.append(pb_utils.Tensor("acceptance_length", np.array([[acc_len]], np.float32)))
        t.append(pb_utils.Tensor("acceptance_rate", np.array([[acc_rate]], np.float32)))
        for name in STAT_NAMES_INT32:
            t.append(pb_utils.Tensor(name, np.array([[int(i32[name])]], np.int32)))
        t.append(pb_utils.Tensor("accepted_per_position", np.asarray(per_pos, np.int32).reshape(1, -1)))
        for name, v in zip(STAT_NAMES_INT64, times):
            t.append(pb_utils.Tensor(name, np.array([[int(v)]], np.int64)))
        # "stop" or "length" on the last response (OpenAI's finish_reason); empty before it.
        reason = "" if res is None else res.finish_reason
        t.append(pb_utils.Tensor("finish_reason", np.array([[reason.encode()]], np.object_)))
        return t

    def _error(self, sender, msg, cancelled=False):
        code = getattr(pb_utils.TritonError, "CANCELLED", None) if cancelled else None
        err = pb_utils.TritonError(msg, code) if code is not None else pb_utils.TritonError(msg)
        try:
            sender.send(pb_utils.InferenceResponse(output_tensors=[], error=err), flags=FINAL)
        except Exception:  # the client is gone
            pass

    def finalize(self):
        self._stop.set()
        self._thread.join(timeout=30)
        with self._jobs_lock:
            jobs = list(self._jobs.values())
            self._jobs.clear()
        for job in jobs:
            self._error(job.sender, "the griffin model is shutting down")
        self.runtime = None
