"""Versions of policies and models: screening past days again (rescreen) and judging a candidate
against the reviewers' decisions before it is switched on (evaluate)."""
