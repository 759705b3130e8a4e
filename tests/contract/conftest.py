"""The contract suite runs against whatever store the session has: the nx-27017 stand-in
in CI, or MongoDB itself when ``MONGO_URL`` is set (or a Docker engine answers)."""
