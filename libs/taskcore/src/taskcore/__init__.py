"""taskcore: event-sourced background tasks over RabbitMQ and MongoDB."""

__version__ = "0.1.0"
