# syntax=docker/dockerfile:1
# spa-bff and the demo's resource server (demo-api) in one slim image.
#
#   docker build -t spa-bff .          (docker compose up builds it for the demo)
#
# The builder's cargo command is the one documented in README.md; scripts/check-compose
# fails when they differ.

# ---- builder ---------------------------------------------------------------------------
FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# The cache mounts keep the registry and target/ between builds (BuildKit); the binaries are
# copied out of the cache mount so that the next stage can see them.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin spa-bff --bin demo-api \
    && mkdir -p /out \
    && cp target/release/spa-bff target/release/demo-api /out/

# ---- runtime ---------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# curl only serves the HEALTHCHECK. TLS roots are compiled into the binaries (webpki-roots).
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin spa-bff
COPY --from=builder /out/spa-bff /out/demo-api /usr/local/bin/
# The demo SPA; a real deployment serves its own build here (server.static_dir).
COPY frontend-demo/public /srv/spa
USER 10001:10001
# In a container, listen on every interface (the config file's default is loopback).
ENV SPA_BFF__SERVER__LISTEN=0.0.0.0:8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["/usr/local/bin/spa-bff"]
