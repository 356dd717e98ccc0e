# syntax=docker/dockerfile:1
#
# Gatehouse container image: the `gatehouse` binary and `demo-upstream`.
#   docker build -t gatehouse:dev .
# Note: no Docker engine runs on our development/CI machines, so this file is not
# exercised by CI; ./scripts/dev and ./scripts/test are the tested paths.

# ---- build --------------------------------------------------------------------------
FROM rust:1-bookworm AS builder
WORKDIR /src
# sqlx compile-time checked queries (if any) must use the checked-in offline data.
ENV SQLX_OFFLINE=true
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gatehouse-gateway -p gatehouse-demo-upstream \
 && mkdir -p /out \
 && cp target/release/gatehouse target/release/demo-upstream /out/

# ---- runtime --------------------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 gatehouse \
 && useradd --system --uid 10001 --gid gatehouse --home-dir /nonexistent --shell /usr/sbin/nologin gatehouse
COPY --from=builder /out/gatehouse /out/demo-upstream /usr/local/bin/
USER gatehouse:gatehouse
ENV GATEHOUSE_LISTEN=0.0.0.0:8080 \
    GATEHOUSE_METRICS_LISTEN=0.0.0.0:9464 \
    GATEHOUSE_LOG_FORMAT=json
EXPOSE 8080 9464
ENTRYPOINT ["gatehouse"]
CMD ["serve"]
