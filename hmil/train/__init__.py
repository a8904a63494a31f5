"""Training folds, metrics, run directories and launchers."""
