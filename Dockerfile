# Builds the three binaries: shardline-manager, shardline-worker and the shardline CLI.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && cp target/release/shardline-manager target/release/shardline-worker target/release/shardline /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/shardline-manager /usr/local/bin/shardline-worker /usr/local/bin/shardline /usr/local/bin/
ENV RUST_LOG=info
CMD ["shardline-manager"]
