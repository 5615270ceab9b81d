"""Model implementations of the ``pytorch`` engine."""
