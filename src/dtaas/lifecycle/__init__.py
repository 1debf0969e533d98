"""The DT lifecycle manager: instances, their state machine, jobs and recovery."""
