"""Ray: the session of a pipeline run, and training through Ray Train."""
