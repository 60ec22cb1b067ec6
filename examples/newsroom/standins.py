"""Deterministic stand-ins for the models and tools a newsroom's agents would call.

Nothing is downloaded and nothing is random from run to run: every answer is derived from the
prompt and a seed, so the same items take the same path through the pipeline every time. They
take time (scaled by `speed`) and cost money, as the real ones would, so budgets, traces and the
loop guard have something to show.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass

WORDS = [
    "agents",
    "budget",
    "claim",
    "cost",
    "draft",
    "evidence",
    "fleet",
    "guard",
    "history",
    "item",
    "lease",
    "ledger",
    "log",
    "market",
    "model",
    "operator",
    "pipeline",
    "price",
    "projection",
    "queue",
    "retry",
    "review",
    "risk",
    "source",
    "spend",
    "stage",
    "state",
    "team",
    "token",
    "trace",
    "workflow",
]


def rng_for(*parts: object) -> random.Random:
    """A generator seeded by its inputs alone, the same in every process and run."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    # Stand-ins need repeatable choices, not secrets.
    return random.Random(int.from_bytes(digest[:8], "big"))  # noqa: S311


@dataclass(frozen=True)
class Generation:
    text: str
    tokens_in: int
    tokens_out: int
    cost_usd: float
    seconds: float


@dataclass(frozen=True)
class StandInModel:
    """A language model's shape: prompt in, text out, priced per thousand tokens."""

    name: str
    usd_per_1k_in: float
    usd_per_1k_out: float
    seconds_per_1k_out: float
    speed: float = 1.0
    seed: int = 7

    def generate(self, prompt: str, *, max_tokens: int, context_tokens: int = 0) -> Generation:
        """`context_tokens`: what the call reads besides the prompt (sources, an earlier draft)."""
        rng = rng_for(self.seed, self.name, prompt)
        tokens_in = max(1, len(prompt) // 4) + context_tokens
        tokens_out = rng.randint(max_tokens // 2, max_tokens)
        seconds = tokens_out / 1000 * self.seconds_per_1k_out * self.speed
        time.sleep(seconds)
        text = " ".join(rng.choice(WORDS) for _ in range(min(tokens_out // 8, 60)))
        cost = tokens_in / 1000 * self.usd_per_1k_in + tokens_out / 1000 * self.usd_per_1k_out
        return Generation(text, tokens_in, tokens_out, round(cost, 6), seconds)


class SearchTimeout(Exception):
    """The stand-in search engine did not answer in time (a retryable failure)."""


@dataclass(frozen=True)
class StandInSearch:
    """A web search: a few deterministic hits per query; now and then it times out."""

    speed: float = 1.0
    seed: int = 7
    timeout_share: float = 0.2

    def search(self, query: str, *, attempt: int) -> list[dict[str, str]]:
        rng = rng_for(self.seed, "search", query)
        time.sleep(rng.uniform(0.1, 0.3) * self.speed)
        # The same queries time out on their first attempt in every run; retries succeed.
        if attempt == 1 and rng.random() < self.timeout_share:
            raise SearchTimeout(f"search for {query!r} timed out")
        return [
            {"url": f"https://example.org/{rng.choice(WORDS)}/{n}", "title": rng.choice(WORDS)}
            for n in range(rng.randint(2, 5))
        ]


def draft_quality(title: str, visit: int, *, seed: int, stubborn: bool) -> float:
    """How good the draft of `title` is on its `visit`-th writing: better with each revision,
    except for a stubborn subject that no rewrite satisfies."""
    if stubborn:
        return 0.1
    base = rng_for(seed, "quality", title).uniform(0.2, 0.9)
    return min(1.0, base + 0.3 * (visit - 1))
