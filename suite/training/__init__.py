"""Training, independent of Ray: objectives, the epoch loop with its hooks, checkpoints and
the job description. ``suite.distributed.launch`` runs it on Ray Train."""
