# The tunnel image: tunnel-server, tunnel-agent and tunnel-access, non-root, no shell.
#   docker build --build-arg TUNNEL_COMMIT=$(git rev-parse --short=12 HEAD) -t tunnel .
#   docker run --rm tunnel tunnel-server --version
# The Helm chart (deploy/helm/tunnel) runs it with a command per component. The build is the
# one tests/run makes and packages as a .deb: a locked release build of the three binaries,
# stripped.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# --version shows this commit (there is no .git in the build context).
ARG TUNNEL_COMMIT=unknown
ENV TUNNEL_COMMIT=${TUNNEL_COMMIT}
RUN cargo build --release --locked -p tunnel-server -p tunnel-agent -p tunnel-access \
 && cd target/release \
 && strip tunnel-server tunnel-agent tunnel-access \
 && install -D -t /out/usr/bin tunnel-server tunnel-agent tunnel-access

# glibc, libgcc and CA certificates (for agents verifying a server with the system roots),
# as user 65532 (nonroot), the user the chart runs as.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /
USER 65532:65532
CMD ["tunnel-server", "--help"]
