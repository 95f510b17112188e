"""Metrics, evaluation protocols, baselines and the transfer study."""
