"""The event bridge: committed events out as CloudEvents on tasks.events.exchange."""
