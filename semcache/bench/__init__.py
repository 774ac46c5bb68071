"""Benchmarks: hit-rate and hit-quality measurement, replay, dataset loaders (``datasets``)."""
