"""The DT execution manager: the Executor interface and its backends."""
