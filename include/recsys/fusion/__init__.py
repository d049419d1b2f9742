"""Fusion of the single models' candidates into hybrid recommendations."""
