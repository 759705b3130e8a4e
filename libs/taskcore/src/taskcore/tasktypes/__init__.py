"""Task types that ship with taskcore itself."""
