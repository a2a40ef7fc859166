"""Ablation studies: variants x seeds of one experiment, one table of mean ± std (``caenet study``)."""
