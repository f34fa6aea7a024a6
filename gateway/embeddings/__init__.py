"""gateway/embeddings: `/v1/embeddings`."""
