# syntax=docker/dockerfile:1
# Build: docker build -t candlewire .
# Run:   docker run --rm -p 50051:50051 -p 8080:8080 candlewire

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/candlewire
WORKDIR /src
COPY pyproject.toml README.md ./
COPY server/ server/
COPY clients/ clients/
RUN /opt/candlewire/bin/pip install --no-compile ./clients/python ./

FROM python:3.11-slim
LABEL org.opencontainers.image.title="candlewire" \
      org.opencontainers.image.description="Market-data service over gRPC"
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin candlewire \
    && install -d -o 10001 -g 10001 -m 0700 /var/lib/candlewire
COPY --from=build /opt/candlewire /opt/candlewire
ENV PATH=/opt/candlewire/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CANDLEWIRE_GRPC_LISTEN=0.0.0.0:50051 \
    CANDLEWIRE_HTTP_LISTEN=0.0.0.0:8080
# Where the Saxo tokens are kept without Redis (feed saxo): a path, not a secret.
# hadolint ignore=DL3064
ENV CANDLEWIRE_SAXO_TOKEN_FILE=/var/lib/candlewire/saxo-tokens.json
VOLUME /var/lib/candlewire
USER 10001
EXPOSE 50051 8080
ENTRYPOINT ["candlewire"]
CMD ["serve"]
