"""Security at the edges: request signatures, tokens and the audit chain."""
