"""Training loop, batching and checkpoints for the recommender."""
