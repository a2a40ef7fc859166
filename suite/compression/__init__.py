"""Model compression: magnitude (weight) pruning now; structured pruning, clustering and
quantization join here as the competitors land."""

from suite.compression.pruning import apply_masks, magnitude_masks, prunable_weights, sparsity, sparsity_at

__all__ = ["apply_masks", "magnitude_masks", "prunable_weights", "sparsity", "sparsity_at"]
