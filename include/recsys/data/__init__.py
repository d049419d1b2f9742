"""Input contract, dataset adapters and the synthetic data generator."""
