"""The executor service: claims task messages, runs task types, records outcomes."""
