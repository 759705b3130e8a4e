# syntax=docker/dockerfile:1
# One image for every taskcore service; the command picks the service:
#   docker run taskcore api | executor | aggregator | event-bridge
# See deploy/README.md and docker-compose.yml.
FROM python:3.11-slim

# Services bind 127.0.0.1 by default; in a container they must answer on every address.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TASKCORE_HOST=0.0.0.0 \
    TASKCORE_LOG_FORMAT=json

WORKDIR /opt/taskcore

# The locked runtime dependencies first (hash-checked, the exact versions CI tested; a
# layer that changes only with the lock), then taskcore itself without dependencies.
# The runtime lock leaves out the MongoDB stand-in and the test tools, and the wheel
# leaves out taskcore.testing: neither is in the image.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
# Only what the wheel is built from (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
RUN pip install --no-deps . && pip check

COPY deploy/docker/healthcheck.py /opt/taskcore/healthcheck.py

RUN groupadd --system --gid 10001 taskcore \
    && useradd --system --uid 10001 --gid taskcore --no-create-home --shell /usr/sbin/nologin taskcore
# Numeric, so that runtimes enforcing runAsNonRoot can check it.
USER 10001:10001

EXPOSE 8000 8001 8002 8003
# Reads PORT, as the service does; docker-compose.yml repeats it with its own timings.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "/opt/taskcore/healthcheck.py"]

ENTRYPOINT ["taskcore"]
CMD ["--help"]
