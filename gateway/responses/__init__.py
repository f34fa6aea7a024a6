"""gateway/responses: `/v1/responses`, passed through to upstreams that speak it."""
