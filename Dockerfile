# The broker image: one `ferrocket` binary for every role (broker, nameserver, controller,
# standalone). Small (distroless, glibc only) and non-root (uid 65532).
#
#   docker build -t ferrocket:dev .
#   docker run --rm -p 8081:8081 ferrocket:dev standalone --listen 0.0.0.0:8081
#
# Base images are build arguments so a machine without a registry can use local ones.
ARG BUILD_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked --bin ferrocket \
 && install -D -m 0755 target/release/ferrocket /out/ferrocket \
 && mkdir -p /out/data

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/ferrocket /usr/local/bin/ferrocket
# The default data directory, writable by the non-root user (a volume replaces it in Kubernetes).
COPY --from=build --chown=65532:65532 /out/data /data
USER 65532:65532
# gRPC (clients, Admin, replication), nameserver, /metrics and probes.
EXPOSE 8081 9876 9100
ENTRYPOINT ["/usr/local/bin/ferrocket"]
CMD ["standalone", "--listen", "0.0.0.0:8081", "--data-dir", "/data"]
