# syntax=docker/dockerfile:1
# wa-gateway: a static-ish Rust binary on distroless/cc (glibc, libgcc, CA certificates; no shell,
# no package manager), running as the distroless `nonroot` user (65532). Build:
#   docker build --build-arg WA_GATEWAY_REVISION=$(git rev-parse --short HEAD) -t wa-gateway .
# The binary is built by .ci/build-release, the same script CI runs for release builds.

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /src
COPY . .
# Exported as wa_gateway_build_info{revision}. The dist profile keeps line tables (about
# 87 of the binary's 112 MB); the image drops them and keeps the symbols, so backtraces still
# name functions: 25 MB.
ARG WA_GATEWAY_REVISION=unknown
ENV WA_GATEWAY_REVISION=${WA_GATEWAY_REVISION}
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    .ci/build-release \
    && cp target/dist/wa-gateway /usr/local/bin/wa-gateway \
    && strip --strip-debug /usr/local/bin/wa-gateway \
    && mkdir -p /var/lib/wa-gateway

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /usr/local/bin/wa-gateway /usr/local/bin/wa-gateway
# The SQLite directory for a plain `docker run`; in Kubernetes the chart mounts a volume here.
COPY --from=builder --chown=65532:65532 /var/lib/wa-gateway /var/lib/wa-gateway
WORKDIR /var/lib/wa-gateway
USER 65532:65532
# 8080 webhook (plain, behind a TLS-terminating proxy), 8443 webhook with in-pod TLS, 9090 admin.
EXPOSE 8080 8443 9090
ENV WA_GATEWAY_CONFIG=/etc/wa-gateway/config/gateway.yaml
ENTRYPOINT ["/usr/local/bin/wa-gateway"]
CMD ["serve"]
