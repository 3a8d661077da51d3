"""Triton Python model `griffin`: GRIFFIN speculative decoding (decoupled, streaming).

Runs `griffin_trt.runtime`'s loop over the executor the build names. Requests that arrive together
(dynamic batching) and share their decoding settings run as one batch of rows, up to the recipe's
max_batch. Streaming requests get one response per accepted step (several tokens each) and a last
response, flagged FINAL, with the request's statistics; unary requests get everything in one.

Bad requests are answered with a TritonError and the model keeps serving.
"""
import json
import os
import sys
import threading
import time
import traceback
from collections import OrderedDict
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

FINAL = pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL
STAT_NAMES_INT32 = ("target_forwards", "num_decode_steps", "total_accepted_draft_tokens", "total_draft_tokens")
STAT_NAMES_INT64 = ("arrival_time_ns", "first_token_time_ns", "last_token_time_ns")
KNOWN_PARAMETERS = frozenset()  # request parameters this model understands (none: use input tensors)
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


def _scalar(request, name, default, cast):
    t = pb_utils.get_input_tensor_by_name(request, name)
    if t is None:
        return default
    a = t.as_numpy()
    if a.size != 1:
        raise BadRequest(f"{name} must hold one value per request, got shape {list(a.shape)}")
    return cast(a.reshape(-1)[0])


class _Job:
    __slots__ = ("request", "sender", "prompt", "max_tokens", "temperature", "top_p", "top_k", "seed",
                 "end_id", "stream", "speculative", "arrival_ns", "first_ns", "last_ns", "sent", "ctx", "alive")

    def key(self):
        return (self.speculative, self.max_tokens, self.temperature, self.top_p, self.top_k, self.seed, self.end_id)


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
        from griffin_trt import detokenize, request_rules  # issue 11: shared request rules, stream context
        from griffin_trt.recipe import recipe_from_dict
        from griffin_trt.runtime import SamplingParams, load_runtime

        self.SamplingParams = SamplingParams
        self.rules, self.detok = request_rules, detokenize  # issue 11
        model_dir = args["model_repository"]
        with open(os.path.join(model_dir, "recipe.json")) as f:
            recipe = recipe_from_dict(json.load(f), base=Path(model_dir))
        build_dir = params.get("build_dir") or None
        if build_dir and not os.path.isfile(os.path.join(build_dir, "manifest.json")):
            build_dir = None  # nothing built (torch back end straight from the checkpoints)
        self.recipe = recipe
        self.runtime = load_runtime(recipe, build_dir=build_dir)
        self.max_batch = max(1, min(int(cfg.get("max_batch_size") or 1), recipe.limits.max_batch))
        self.max_input_len = recipe.limits.max_input_len
        self.max_output_len = recipe.limits.max_output_len
        self.vocab = int(self.runtime.decoder.ex.spec.vocab_size)  # issue 11: the model's ids, not the tokenizer's
        self._init_metrics(args)
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ metrics
    def _init_metrics(self, args):
        labels = {"model": args.get("model_name", "griffin"), "version": str(args.get("model_version", "1"))}
        C = pb_utils.MetricFamily.COUNTER

        def counter(name, desc):
            return pb_utils.MetricFamily(name=name, description=desc, kind=C)

        self.fam_drafts = counter("griffin_spec_decode_num_drafts", "Draft-and-verify steps (target forwards) run")
        self.fam_draft_tokens = counter("griffin_spec_decode_num_draft_tokens", "Draft tokens proposed along verified paths")
        self.fam_accepted = counter("griffin_spec_decode_num_accepted_tokens", "Draft tokens accepted by the target")
        self.fam_accepted_pos = counter(
            "griffin_spec_decode_num_accepted_tokens_per_pos", "Draft tokens accepted, by depth in the draft tree"
        )
        self.fam_requests = counter("griffin_requests", "Requests answered, by mode and outcome")
        self.fam_tokens = counter("griffin_generated_tokens", "Tokens generated, by mode")
        self.m_drafts = self.fam_drafts.Metric(labels=labels)
        self.m_draft_tokens = self.fam_draft_tokens.Metric(labels=labels)
        self.m_accepted = self.fam_accepted.Metric(labels=labels)
        self.m_accepted_pos = {}
        self._labels = labels
        self.m_requests = {}
        self.m_tokens = {}
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

    def _count(self, job, res, outcome):
        mode = "speculative" if (job is not None and job.speculative) else "plain"
        self._metric(self.m_requests, self.fam_requests, {"mode": mode, "outcome": outcome}).increment(1)
        if res is None:
            return
        n = len(res.token_ids)
        if n:
            self._metric(self.m_tokens, self.fam_tokens, {"mode": mode}).increment(n)
        steps = int(res.target_forwards)
        if not job.speculative or steps <= 0:
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

    # ------------------------------------------------------------------ requests
    def _parse(self, request, sender, arrival_ns):
        raw = request.parameters()
        extra = json.loads(raw) if raw else {}
        unknown = sorted(set(extra) - KNOWN_PARAMETERS)
        if unknown:
            raise BadRequest(f"unknown request parameter(s) {unknown}: the griffin model takes its settings as input tensors")
        ids_t = pb_utils.get_input_tensor_by_name(request, "input_ids")
        if ids_t is None:
            raise BadRequest("input_ids is required")
        ids = ids_t.as_numpy()
        if ids.ndim != 2 or ids.shape[0] != 1:
            raise BadRequest(f"input_ids must have shape [1, length] (one prompt per request), got {list(ids.shape)}")
        length = _scalar(request, "input_lengths", ids.shape[1], int)
        if not 0 <= length <= ids.shape[1]:
            raise BadRequest(f"input_lengths = {length} but input_ids holds {ids.shape[1]} tokens")
        # issue 11: every value goes through griffin_trt.request_rules, as in `griffin-trt generate`
        rules = self.rules
        prompt = rules.check_prompt_ids(ids[0, :length], self.max_input_len, self.vocab)
        j = _Job()
        j.request, j.sender, j.prompt = request, sender, prompt
        j.max_tokens = rules.check_max_tokens(_scalar(request, "request_output_len", None, int), self.max_output_len)
        j.temperature = rules.check_temperature(_scalar(request, "temperature", 0.0, float))
        j.top_p = rules.check_top_p(_scalar(request, "runtime_top_p", 1.0, float))
        j.top_k = rules.check_top_k(_scalar(request, "runtime_top_k", 0, int))
        j.seed = rules.check_seed(_scalar(request, "random_seed", None, int))
        j.end_id = rules.check_end_id(_scalar(request, "end_id", None, int), self.vocab)
        j.stream = _scalar(request, "streaming", False, bool)
        j.speculative = _scalar(request, "speculative", True, bool)
        j.arrival_ns, j.first_ns, j.last_ns = arrival_ns, None, None
        j.sent, j.alive = 0, True
        j.ctx = prompt[-self.detok.CONTEXT_TOKENS:]  # issue 11: ids before the next chunk, for postprocessing
        return j

    def _send(self, job, response, flags=0):
        if not job.alive:
            return
        try:
            job.sender.send(response, flags=flags)
        except Exception:  # the client went away: stop sending to it, keep decoding the batch
            job.alive = False
            pb_utils.Logger.log_warn(f"griffin: dropping a response: {traceback.format_exc(limit=1)}")

    def _tensors(self, job, ids, res=None):
        ids = np.asarray(ids, dtype=np.int32).reshape(1, -1)
        t = [
            pb_utils.Tensor("output_ids", ids),
            pb_utils.Tensor("sequence_length", np.array([[ids.shape[1]]], np.int32)),
            # issue 11: postprocessing decodes context_ids + output_ids minus context_ids and holds back an
            # unfinished character unless is_final (the last response of the request)
            pb_utils.Tensor("context_ids", np.asarray(job.ctx, np.int32).reshape(1, -1)),
            pb_utils.Tensor("is_final", np.array([[res is not None]], np.bool_)),
        ]
        if res is None:  # an intermediate streamed chunk: stats are zero until the last response
            acc_len = acc_rate = 0.0
            i32 = dict.fromkeys(STAT_NAMES_INT32, 0)
            per_pos = []
            times = (job.arrival_ns, job.first_ns or 0, job.last_ns or 0)
        else:
            acc_len = float(res.acceptance_length)
            acc_rate = float(res.accepted_draft_tokens) / res.draft_tokens if res.draft_tokens else 0.0
            i32 = {
                "target_forwards": res.target_forwards,
                "num_decode_steps": res.target_forwards,
                "total_accepted_draft_tokens": res.accepted_draft_tokens,
                "total_draft_tokens": res.draft_tokens,
            }
            per_pos = list(res.accepted_per_position or [])
            times = (job.arrival_ns, job.first_ns, job.last_ns)
        t.append(pb_utils.Tensor("acceptance_length", np.array([[acc_len]], np.float32)))
        t.append(pb_utils.Tensor("acceptance_rate", np.array([[acc_rate]], np.float32)))
        for name in STAT_NAMES_INT32:
            t.append(pb_utils.Tensor(name, np.array([[int(i32[name])]], np.int32)))
        t.append(pb_utils.Tensor("accepted_per_position", np.asarray(per_pos, np.int32).reshape(1, -1)))
        for name, v in zip(STAT_NAMES_INT64, times):
            t.append(pb_utils.Tensor(name, np.array([[int(v)]], np.int64)))
        return t

    def _error(self, job_or_sender, msg):
        sender = job_or_sender.sender if isinstance(job_or_sender, _Job) else job_or_sender
        try:
            sender.send(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(msg)), flags=FINAL)
        except Exception:
            pass

    def _run(self, jobs):
        def on_tokens(row, new_ids):
            job = jobs[row]
            now = time.time_ns()
            if not new_ids:
                return
            if job.first_ns is None:
                job.first_ns = now
            job.last_ns = now
            if job.stream:
                new_ids = [int(t) for t in new_ids]
                self._send(job, pb_utils.InferenceResponse(output_tensors=self._tensors(job, new_ids)))
                job.sent += len(new_ids)
                job.ctx = self.detok.next_context(job.ctx, new_ids)  # issue 11

        first = jobs[0]
        sampling = self.SamplingParams(temperature=first.temperature, top_p=first.top_p, top_k=first.top_k, seed=first.seed)
        try:
            results = self.runtime.decoder.generate(
                [j.prompt for j in jobs],
                max_new_tokens=first.max_tokens,
                sampling=sampling,
                speculative=first.speculative,
                stop_ids=None if first.end_id is None else [first.end_id],
                on_tokens=on_tokens,
            )
        except ValueError as e:
            for j in jobs:
                self._error(j, str(e))
                self._count(j, None, "rejected")
            return
        except Exception as e:
            pb_utils.Logger.log_error(f"griffin: generation failed: {traceback.format_exc()}")
            for j in jobs:
                self._error(j, f"internal error during generation: {type(e).__name__}: {e}")
                self._count(j, None, "failed")
            return
        for job, res in zip(jobs, results):
            ids = [int(t) for t in res.token_ids]
            now = time.time_ns()
            if job.first_ns is None:  # no streaming callback reached us: the batch finished in one go
                job.first_ns = job.last_ns = now
            if job.stream:
                rest = ids[job.sent:]
                if rest:
                    job.last_ns = now
            else:
                rest = ids
            self._send(job, pb_utils.InferenceResponse(output_tensors=self._tensors(job, rest, res)), flags=FINAL)
            self._count(job, res, "ok")

    def execute(self, requests):
        arrival = time.time_ns()
        groups = OrderedDict()
        for request in requests:
            sender = request.get_response_sender()
            try:
                job = self._parse(request, sender, arrival)
            except ValueError as e:  # BadRequest, request_rules.RequestError (issue 11)
                self._error(sender, str(e))
                self._count(None, None, "rejected")
                continue
            groups.setdefault(job.key(), []).append(job)
        with self._lock:
            for jobs in groups.values():
                for i in range(0, len(jobs), self.max_batch):
                    self._run(jobs[i:i + self.max_batch])
        return None

    def finalize(self):
        self.runtime = None
