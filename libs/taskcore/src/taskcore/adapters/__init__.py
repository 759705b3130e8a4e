"""Thin I/O adapters: MongoDB (PyMongo async), RabbitMQ (aio-pika)."""
