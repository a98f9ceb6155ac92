#!/usr/bin/env bash
# Builds, on a machine that reaches Debian's package mirror but no container registry, local stand-ins
# for the three public images the lab's Dockerfile and compose file name: `debian:bookworm-slim`,
# `redis:7-bookworm` and `nginx:1-bookworm`. They carry the same names, so nothing in docker/ changes
# between a student's machine (which pulls the real ones) and CI (which has these). An image already
# present is left alone, so a second run costs a few `docker image inspect`s.
#
# The Debian root file system comes from debootstrap (minbase) and is kept as a tarball in
# $LAB_DOCKER_CACHE (default /var/cache/lab-docker): about 70 s the first time, nothing afterwards.
# Recipe: docs/docker.md, "What CI runs".
set -euo pipefail

cache="${LAB_DOCKER_CACHE:-/var/cache/lab-docker}"
have() { docker image inspect "$1" >/dev/null 2>&1; }

if have debian:bookworm-slim && have redis:7-bookworm && have nginx:1-bookworm; then
  echo "base images: all present"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! have local/debian:bookworm; then
  tarball="$cache/bookworm-minbase.tar"
  if [ ! -s "$tarball" ]; then
    mkdir -p "$cache"
    # The Debian mirror apt already uses on this machine (not a third-party repository, not security).
    mirror=$({ grep -rhoE 'https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null || true; } |
      head -1 | tr -d ' ')
    mirror="${mirror:-http://deb.debian.org/debian}"
    echo "base images: debootstrap bookworm from $mirror (cached in $tarball)"
    debootstrap --variant=minbase bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
      { tail -20 "$work/debootstrap.log"; exit 1; }
    tar -C "$work/rootfs" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$work/rootfs"
  fi
  docker import "$tarball" local/debian:bookworm >/dev/null
fi

# Outbound TLS may be intercepted by the machine's proxy: the stand-ins trust the host's extra CAs,
# or apt and cargo inside builds fail with "self-signed certificate in certificate chain".
mkdir -p "$work/ctx/ca"
cp /usr/local/share/ca-certificates/*.crt "$work/ctx/ca/" 2>/dev/null || true

build() { # name, Dockerfile text
  echo "base images: building the stand-in $1"
  printf '%s\n' "$2" >"$work/ctx/Dockerfile"
  docker build -q -t "$1" "$work/ctx" >/dev/null
}

have debian:bookworm-slim || build debian:bookworm-slim '
FROM local/debian:bookworm
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/*
COPY ca/ /usr/local/share/ca-certificates/
RUN update-ca-certificates
CMD ["bash"]'

# As the official image: redis-server is the command, data in /data, run as the redis user.
have redis:7-bookworm || build redis:7-bookworm '
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends redis-server && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server"]'

# As the official image: nginx in the foreground, configuration in /etc/nginx/, curl for health checks.
have nginx:1-bookworm || build nginx:1-bookworm '
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends nginx curl && rm -rf /var/lib/apt/lists/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log && ln -sf /dev/stderr /var/log/nginx/error.log
EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]'

echo "base images: ready"
