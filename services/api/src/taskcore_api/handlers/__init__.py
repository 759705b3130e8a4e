"""What the routes call: one module per use case, free of HTTP details where it can be."""
