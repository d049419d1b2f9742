"""Ranking metrics over all users at once (pure numpy/pandas)."""
