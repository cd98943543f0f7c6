# Vexil's container image: `docker build -t vexil .`, then
# `docker run --rm -p 8013:8013 -p 8014:8014 vexil` serves the example repository built into the
# binary (gRPC on 8013, OFREP, the mirrors, metrics and probes on 8014, flagd's sync service for
# in-process providers on 8015). docs/deploy.md has the rest.
#
# Both base images are build arguments so that they can be substituted (a mirror, a pinned digest,
# or the locally made images deploy/image-smoke.sh builds with offline). The runtime stage runs no
# command, so any image with glibc, libgcc_s and zlib works there (debian:12-slim by default).
ARG RUST_IMAGE=rust:1.89-bookworm
ARG RUNTIME_IMAGE=debian:12-slim

FROM ${RUST_IMAGE} AS builder
# The cargo profile to build (`release`; deploy/image-smoke.sh builds `dev` to reuse CI's build).
ARG CARGO_PROFILE=release
# `true` builds without the network, from a registry cache that is already there.
ARG CARGO_NET_OFFLINE=false
# Where the sources go. deploy/image-smoke.sh uses the checkout's own path, so that the build
# scripts it reuses (they name their directory at compile time) find their files.
ARG WORKSPACE_DIR=/src
WORKDIR ${WORKSPACE_DIR}
COPY . .
# libgit2, libssh2 and OpenSSL are vendored and built here (needs perl, make and a C compiler,
# which the rust images have); the binary needs only glibc, libgcc_s and zlib at run time.
RUN set -eu; \
    cargo build --locked -p vexil --profile "$CARGO_PROFILE"; \
    dir="$CARGO_PROFILE"; if [ "$dir" = dev ]; then dir=debug; fi; \
    mkdir -p /out/cache; \
    cp "${CARGO_TARGET_DIR:-target}/$dir/vexil" /out/vexil; \
    strip /out/vexil; \
    cp /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt; \
    /out/vexil --version

FROM ${RUNTIME_IMAGE}
# CA certificates for https:// remotes (the bundled OpenSSL looks for this file).
COPY --from=builder /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/vexil /usr/local/bin/vexil
# Clones of remote repositories. Writable by the server's user; mount a volume here (an emptyDir
# in Kubernetes, where the root filesystem is read-only).
COPY --from=builder --chown=65532:65532 /out/cache /var/cache/vexil
ENV VEXIL_GRPC_ADDR=0.0.0.0:8013 \
    VEXIL_HTTP_ADDR=0.0.0.0:8014 \
    VEXIL_SYNC_ADDR=0.0.0.0:8015 \
    VEXIL_CACHE_DIR=/var/cache/vexil
# No ./flags here: `vexil serve` without a source serves the example built into the binary.
WORKDIR /
USER 65532:65532
EXPOSE 8013 8014 8015
ENTRYPOINT ["vexil"]
CMD ["serve"]
