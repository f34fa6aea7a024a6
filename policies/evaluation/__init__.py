"""Evaluation logic (pure, no I/O): the control plane's evaluation module calls it.

``metrics``: BLEU/chrF (sacrebleu), ROUGE (rouge-score, Unicode tokens), exact match and token F1
(SQuAD), perplexity from logprobs. ``bootstrap``: percentile-bootstrap intervals (means, paired
differences, corpus metrics). ``agreement``: Cohen's kappa and Krippendorff's alpha. ``judge``:
rubric prompts and strict parsing of an LLM judge's answers. ``text``: the Unicode tokenisation.
"""

__all__: list[str] = []  # import the modules themselves (numpy, sacrebleu and jinja2 load only with them)
