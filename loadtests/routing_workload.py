"""The prefix-aware routing benchmark's workloads: what each simulated user sends next.

* **shared** (llm-d's prefix-cache test: many customers, each with a long shared context): customer k has a
  long system prompt of deterministic pseudo-random words that differ from its first characters on. A user
  talks to a random customer for `turns` (drawn from a range) turns: turn t sends the system prompt, every
  earlier user message and the assistant reply it got back, then a new short user message; then it starts
  a new conversation. Consecutive turns share everything but the newest messages: a replica that served
  turn t-1 holds all of turn t's prefix.
* **random**: single-turn, a unique random prompt each time of a random size in a range; nothing is shared,
  so prefix routing has nothing to win and must not lose.

Everything is a pure function of the seed, the user and a counter: two runs of a mode send the same text.
Sizes are in modelled tokens (the simulator's `chars_per_token` characters each).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Conversation", "RandomUser", "SharedUser", "Workload", "WorkloadCfg", "make_user", "prime_bodies", "system_prompt",
    "words",
]

WorkloadName = Literal["shared", "random"]
Message = dict[str, str]

_LETTERS = "etaoinshrdlucmfwypvbgkqjxz"


def _vocabulary(n: int = 1024, seed: int = 16) -> tuple[str, ...]:
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:  # letters drawn by English frequency: reads like text, costs nothing to make
        out.add("".join(rng.choices(_LETTERS, weights=range(len(_LETTERS), 0, -1), k=rng.randint(2, 9))))
    return tuple(sorted(out))


VOCABULARY = _vocabulary()


def words(rng: random.Random, chars: int) -> str:
    """`chars` characters of space-separated pseudo-random words."""
    parts: list[str] = []
    n = 0
    while n < chars:
        w = rng.choice(VOCABULARY)
        parts.append(w)
        n += len(w) + 1
    return " ".join(parts)[:chars]


def system_prompt(customer: int, chars: int, seed: int = 0) -> str:
    """Customer `customer`'s context: its number first, so no two customers share even a first block."""
    head = f"You are the assistant of customer {customer:04d}. Their handbook follows.\n"
    return head + words(random.Random(f"{seed}:customer:{customer}"), max(0, chars - len(head)))


@dataclass(frozen=True)
class WorkloadCfg:
    """The knobs of both workloads (sizes in modelled tokens)."""

    customers: int = 150
    context_tokens: int = 6000
    user_tokens: tuple[int, int] = (50, 100)
    turns: tuple[int, int] = (3, 6)
    random_tokens: tuple[int, int] = (1000, 6000)
    chars_per_token: int = 4
    seed: int = 0


class Workload:
    """The customers' system prompts, built once per run (every user draws from the same set)."""

    def __init__(self, name: WorkloadName, cfg: WorkloadCfg) -> None:
        self.name, self.cfg = name, cfg
        chars = cfg.context_tokens * cfg.chars_per_token
        self.systems = ([system_prompt(k, chars, cfg.seed) for k in range(cfg.customers)]
                        if name == "shared" else [])


@dataclass
class Conversation:
    """One user's conversation with one customer: the messages so far (system first)."""

    customer: int
    turns_left: int
    messages: list[Message] = field(default_factory=list)

    def ask(self, text: str) -> list[Message]:
        """The next turn's messages: everything so far plus the new user message."""
        return [*self.messages, {"role": "user", "content": text}]

    def answered(self, asked: list[Message], reply: str) -> None:
        """The turn got `reply`: the next turn sends what was asked and the reply back."""
        self.messages = [*asked, {"role": "assistant", "content": reply}]
        self.turns_left -= 1


class SharedUser:
    """A user of the shared workload: conversations of 3-6 turns with random customers."""

    def __init__(self, workload: Workload, user: int) -> None:
        self.w, self.cfg = workload, workload.cfg
        self.rng = random.Random(f"{self.cfg.seed}:shared-user:{user}")
        self.conversation: Conversation | None = None
        self._asked: list[Message] = []

    def next_messages(self) -> list[Message]:
        if self.conversation is None or self.conversation.turns_left <= 0:
            k = self.rng.randrange(self.cfg.customers)
            self.conversation = Conversation(k, self.rng.randint(*self.cfg.turns),
                                             [{"role": "system", "content": self.w.systems[k]}])
        chars = self.rng.randint(*self.cfg.user_tokens) * self.cfg.chars_per_token
        self._asked = self.conversation.ask(words(self.rng, chars))
        return self._asked

    def answered(self, reply: str | None) -> None:
        """`reply` None: the turn failed; the conversation starts over with a new customer."""
        if self.conversation is None:
            return
        if reply is None:
            self.conversation = None
        else:
            self.conversation.answered(self._asked, reply)


class RandomUser:
    """A user of the random workload: one unique prompt per request, nothing shared."""

    def __init__(self, workload: Workload, user: int) -> None:
        self.cfg = workload.cfg
        self.user = user
        self.rng = random.Random(f"{self.cfg.seed}:random-user:{user}")
        self.sent = 0

    def next_messages(self) -> list[Message]:
        self.sent += 1
        chars = self.rng.randint(*self.cfg.random_tokens) * self.cfg.chars_per_token
        head = f"Request {self.user}-{self.sent}: "
        return [{"role": "user", "content": head + words(self.rng, max(0, chars - len(head)))}]

    def answered(self, reply: str | None) -> None:
        pass


def make_user(workload: Workload, user: int) -> SharedUser | RandomUser:
    return SharedUser(workload, user) if workload.name == "shared" else RandomUser(workload, user)


def prime_bodies(workload: Workload, model: str) -> list[dict[str, Any]]:
    """One short request per customer (its system prompt and a greeting), sent before the warm-up so every
    mode starts from each context cached somewhere, as in a fleet that has served them before."""
    return [{"model": model, "max_tokens": 1, "messages": [{"role": "system", "content": s},
                                                            {"role": "user", "content": "Hello."}]}
            for s in workload.systems]
