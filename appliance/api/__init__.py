"""The HTTP API: envelope, middleware, authentication, rate limits, one module per resource."""
