"""Who is calling: API keys (from settings and a reloadable file), JWTs, stream tokens.

``principal.Principal`` is the one shape every credential resolves to; ``authz`` (next
to this package) makes every decision about what a principal may do.
"""
