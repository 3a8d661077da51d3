"""What one request reports: its tokens, and the speculative-decoding statistics users compare."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..request_rules import check_seed, check_temperature, check_top_k, check_top_p


@dataclass
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None

    def validate(self) -> None:
        """The shared request rules (griffin_trt.request_rules): the server refuses the same values."""
        check_temperature(self.temperature)
        check_top_p(self.top_p)
        check_top_k(self.top_k)
        check_seed(self.seed)


@dataclass
class GenerationResult:
    """Per request. Times: *_ns are wall-clock `time.time_ns()`, durations in seconds.

    acceptance_length = tokens emitted by decode steps / decode steps (the bonus token included);
    the first token comes from prefill and is not part of it.
    """

    token_ids: list[int] = field(default_factory=list)
    finish_reason: str = "length"
    target_forwards: int = 0  # decode steps after prefill (each one target forward)
    accepted_draft_tokens: int = 0
    draft_tokens: int = 0
    accepted_per_step: list[int] = field(default_factory=list)  # tokens emitted per decode step
    accepted_per_position: list[int] = field(default_factory=list)  # steps whose draft depth d was accepted
    tree_tokens_per_step: list[int] = field(default_factory=list)  # tree budget per decode step (1: plain)
    draft_time_s: float = 0.0
    verify_time_s: float = 0.0
    prefill_time_s: float = 0.0
    arrival_time_ns: int = 0
    scheduled_time_ns: int = 0  # when the request got a cache row (its prefill started)
    first_token_time_ns: int = 0
    last_token_time_ns: int = 0

    @property
    def acceptance_length(self) -> float:
        steps = self.target_forwards
        return sum(self.accepted_per_step) / steps if steps else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted_draft_tokens / self.draft_tokens if self.draft_tokens else 0.0

    @property
    def ttft_s(self) -> float:
        return (self.first_token_time_ns - self.arrival_time_ns) / 1e9

    @property
    def e2e_s(self) -> float:
        return (self.last_token_time_ns - self.arrival_time_ns) / 1e9

    @property
    def tpot_s(self) -> float:
        n = len(self.token_ids)
        return (self.last_token_time_ns - self.first_token_time_ns) / 1e9 / (n - 1) if n > 1 else 0.0

    def accepted_histogram(self) -> dict[int, int]:
        hist: dict[int, int] = {}
        for a in self.accepted_per_step:
            hist[a] = hist.get(a, 0) + 1
        return dict(sorted(hist.items()))

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(
            acceptance_length=self.acceptance_length,
            acceptance_rate=self.acceptance_rate,
            ttft_s=self.ttft_s,
            tpot_s=self.tpot_s,
            e2e_s=self.e2e_s,
            accepted_histogram=self.accepted_histogram(),
        )
        return d
