"""The evaluation control module (runs, metrics, judging, human review, comparison, promotion gate)."""
