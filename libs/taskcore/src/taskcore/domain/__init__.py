"""The pure domain: no I/O library is imported anywhere below this package."""
