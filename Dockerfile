# The broker image: one `ferrocket` binary for every role (broker, nameserver, controller,
# standalone). Small (distroless: glibc and nothing else) and non-root (uid 65532).
#
#   docker build -t ferrocket:dev .
#   docker run --rm -p 8081:8081 -v ferrocket-data:/home/nonroot/data ferrocket:dev
#
# Base images are build arguments, so a machine without a registry can use local ones; and
# `--build-arg BINARIES=prebuilt` takes `target/release/ferrocket` from the build context instead
# of compiling (e2e/images/ builds it that way from a binary built outside).
ARG BUILD_IMAGE=docker.io/library/rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot
ARG BINARIES=build

FROM ${BUILD_IMAGE} AS build
WORKDIR /src
COPY . .
RUN CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols \
    cargo build --release --locked --bin ferrocket \
 && install -D -m 0755 target/release/ferrocket /out/ferrocket

FROM scratch AS prebuilt
COPY target/release/ferrocket /out/ferrocket

FROM ${BINARIES} AS binaries

FROM ${RUNTIME_IMAGE}
COPY --from=binaries /out/ferrocket /usr/local/bin/ferrocket
USER 65532:65532
# gRPC (clients, Admin, replication), nameserver, /metrics and probes.
EXPOSE 8081 9876 9100
ENTRYPOINT ["/usr/local/bin/ferrocket"]
# The default data directory is in the home of distroless' `nonroot` user (uid 65532), which it
# owns; mount a volume there (in Kubernetes the operator mounts one on /data).
CMD ["standalone", "--listen", "0.0.0.0:8081", "--data-dir", "/home/nonroot/data"]
