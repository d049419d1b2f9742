"""Recommendation models. Each has the same face: fit, recommend(user_ids, k, exclude_seen=True), save, load."""
