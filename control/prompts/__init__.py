"""The prompts control module: versioned templates, A/B experiments, their results and supervision."""
