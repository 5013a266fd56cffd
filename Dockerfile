# Build: docker build -t candlewire .
# Run:   docker run --rm -p 50051:50051 -p 8080:8080 candlewire
#
# BASE_IMAGE is any Debian-like image with Python 3.11+ (python3 -m venv, useradd):
# the default is the official slim image; CI passes a base it makes itself with
# debootstrap (see deploy/README.md).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/candlewire
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server/ server/
COPY clients/python/ clients/python/
RUN /opt/candlewire/bin/pip install --no-compile ./clients/python ./

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="candlewire" \
      org.opencontainers.image.description="Market-data service over gRPC"
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin candlewire \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/candlewire
COPY --from=build /opt/candlewire /opt/candlewire
ENV PATH=/opt/candlewire/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CANDLEWIRE_GRPC_LISTEN=0.0.0.0:50051 \
    CANDLEWIRE_HTTP_LISTEN=0.0.0.0:8080 \
    CANDLEWIRE_TARGET=127.0.0.1:50051
# Where the Saxo tokens are kept without Redis (feed saxo): a path, not a secret.
# hadolint ignore=DL3064
ENV CANDLEWIRE_SAXO_TOKEN_FILE=/var/lib/candlewire/saxo-tokens.json
VOLUME /var/lib/candlewire
USER 10001
EXPOSE 50051 8080
# Readiness through the standard gRPC health service (open: probes carry no
# credentials) at CANDLEWIRE_TARGET; set it with CANDLEWIRE_GRPC_LISTEN. With
# TLS on the gRPC port, override the check with --tls/--ca-file.
HEALTHCHECK --interval=5s --timeout=5s --start-period=60s --retries=3 \
  CMD ["candlewire", "health", "--timeout", "4"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["candlewire"]
CMD ["serve"]
