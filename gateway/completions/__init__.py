"""gateway/completions: the legacy `/v1/completions` (lm-evaluation-harness: `echo`, `logprobs`)."""
