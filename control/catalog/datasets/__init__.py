"""Dataset catalog: registration, versioned uploads with reports, preview and compare."""
