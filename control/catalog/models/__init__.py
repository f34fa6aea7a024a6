"""Model catalog: definitions and versions, lifecycle and approvals, lineage, files, dependents."""
