"""Catalog control-plane module: models and datasets."""
