"""HTTP routes: translate between the wire and the handlers, nothing more."""
