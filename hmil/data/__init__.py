"""Data on disk: feature bags, label tables and splits."""
