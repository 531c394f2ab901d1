# syntax=docker/dockerfile:1
#
# The Connect simulator alone: a local Amazon Connect chat (StartChatContact, the participant
# API, its WebSocket and the scripted agent) for web and mobile teams to develop against.
# Build from the repository root and run:
#
#   docker build -f deploy/simulator.Dockerfile -t connect-sim:dev .
#   docker run --rm -p 127.0.0.1:8787:8787 connect-sim:dev
#
# then point ChatJS at it: connect.ChatSession.setGlobalConfig({region: "us-east-1",
# endpoint: "http://127.0.0.1:8787"}). The socket and file URLs the simulator hands out must
# name the address clients reach it at, not the container's: published on another host port
# or behind a proxy, set CONNECT_SIM_SOCKET_BASE_URL and CONNECT_SIM_PUBLIC_BASE_URL to match
# (ChatJS accepts socket URLs that start with wss:// or ws://127.0.0.1: only).

FROM rust:1-bookworm AS builder
WORKDIR /build
# Dependencies first, in their own layer (see Dockerfile for the stub-source trick).
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto ./proto
RUN mkdir -p src/bin \
    && echo '' > src/lib.rs \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > src/bin/connect-sim.rs \
    && echo 'fn main() {}' > src/bin/connect-chat-bench.rs \
    && cargo build --release --locked --bin connect-sim \
    && rm -rf src
COPY src ./src
RUN find src -name '*.rs' -exec touch {} + \
    && cargo build --release --locked --bin connect-sim \
    && mkdir -p /out \
    && cp target/release/connect-sim /out/

# distroless/cc: glibc, libgcc, CA certificates and a "nonroot" user (65532), no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=builder /out/connect-sim /usr/local/bin/connect-sim
USER 65532:65532

# Every interface inside the container; the URLs it hands out name the published port.
# Browsers on loopback origins (http://localhost:<any>) are approved by default; set
# CONNECT_SIM_APPROVED_ORIGINS for others. Every flag has its CONNECT_SIM_* variable
# (connect-sim --help).
ENV CONNECT_SIM_BIND=0.0.0.0:8787 \
    CONNECT_SIM_SOCKET_BASE_URL=ws://127.0.0.1:8787 \
    CONNECT_SIM_PUBLIC_BASE_URL=http://127.0.0.1:8787
EXPOSE 8787

ENTRYPOINT ["/usr/local/bin/connect-sim"]
