"""The aggregator: folds internal events into the event log and the projections."""
