"""Ray Tune sweeps over any dotted config key, and the latency-SLO search over their trials."""
