"""Spark feature extraction: pure DataFrame transforms plus thin extract/load steps."""
