#!/usr/bin/env bash
# The compose stack for real: validate docker/compose.yaml, build the lab's image (the `prebuilt`
# target, from binaries built on this machine), bring the whole stack up, wait until every service is
# healthy, check through nginx on the published ports that the dashboard loads, that both systems'
# WebSockets deliver updates and that an ingest POST gets 202, kill one System 1 worker and check that
# the other carries on, then `down -v`. It cleans up after itself whatever step fails (trap).
#
# Where Docker cannot run (no docker CLI, no compose, no engine answering) it says why and skips; in
# CI (CI=true, set by .ci/run) it fails instead. .ci/run calls it right after the README's test
# command; why a script and not a cargo test: docs/docker.md, "What CI runs".
#
# LAB_PREBUILT_PROFILE=release uses target/release instead of target/debug (built if needed).
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS
say() { printf 'compose test [%3ds]: %s\n' "$((SECONDS - started))" "$*"; }

cannot() {
  if [ "${CI:-}" = true ]; then
    say "FAILED: $1 (in CI this test must run)" >&2
    exit 1
  fi
  say "skipped: $1"
  exit 0
}
command -v docker >/dev/null 2>&1 || cannot "no docker CLI (apt-get install docker.io)"
if command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  cannot "no Compose (apt-get install docker-compose)"
fi
docker info >/dev/null 2>&1 || cannot "no Docker engine answers ('docker info' fails: start dockerd)"

# A project of its own, free host ports and an image tag of its own: a student's stack (or another
# run) on this machine is never touched.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
export COMPOSE_PROJECT_NAME="labci$$"
export LAB_IMAGE_TAG="ci-$$" LAB_IMAGE_TARGET=prebuilt
LAB_HTTP_PORT=$(free_port) LAB_HTTPS_PORT=$(free_port)
export LAB_HTTP_PORT LAB_HTTPS_PORT
http="http://127.0.0.1:$LAB_HTTP_PORT"
work=$(mktemp -d)
up=false

cleanup() {
  status=$?
  if [ "$up" = true ]; then
    if [ "$status" -ne 0 ]; then
      say "the stack's state and the end of its logs, for the failure above:"
      "${compose[@]}" ps || true
      "${compose[@]}" logs --tail=30 || true
    fi
    say "down -v"
    timeout 120 "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  docker image rm "telemetry-lab:$LAB_IMAGE_TAG" >/dev/null 2>&1 || true
  rm -rf "$work" "reports/compose-test-$$"
  rmdir reports 2>/dev/null || true
  find docker/prebuilt -type f ! -name README.md -delete 2>/dev/null || true
  if [ "$status" -eq 0 ]; then say "passed"; else say "FAILED" >&2; fi
  exit "$status"
}
trap cleanup EXIT
fail() { say "FAILED: $*" >&2; exit 1; }

say "config -q"
"${compose[@]}" config -q

say "base images (stand-ins where no registry is reachable)"
timeout 300 docker/ci/base-images.sh

profile="${LAB_PREBUILT_PROFILE:-debug}"
say "binaries: cargo build ($profile), copied into the prebuilt image"
release=()
[ "$profile" = release ] && release=(--release)
cargo build --quiet "${release[@]}" --bins -p system1-http -p system2-ws -p agents -p dashboard -p experiments
for bin in system1 system2 agents dashboard lab; do
  ln -f "target/$profile/$bin" docker/prebuilt/ 2>/dev/null || cp "target/$profile/$bin" docker/prebuilt/
done
agents="target/$profile/agents"
timeout 300 docker build -q --target prebuilt -t "telemetry-lab:$LAB_IMAGE_TAG" -f docker/Dockerfile . >/dev/null

say "up -d, with System 1's API scaled to 3 replicas behind nginx"
up=true
timeout 180 "${compose[@]}" up -d --no-build --scale system1-api=3

say "waiting until every service is healthy"
deadline=$((SECONDS + 120))
while :; do
  waiting=()
  for id in $("${compose[@]}" ps -q); do
    read -r name state health code < <(docker inspect -f \
      '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}' "$id")
    case "$state/$health" in
      running/healthy) ;;
      exited/none) [ "$code" -eq 0 ] || fail "$name exited with $code" ;; # tls-cert, a one-shot job
      *) waiting+=("$name:$state/$health") ;;
    esac
  done
  [ "${#waiting[@]}" -eq 0 ] && break
  [ "$SECONDS" -lt "$deadline" ] || fail "not healthy after 120 s: ${waiting[*]}"
  sleep 2
done
count=$("${compose[@]}" ps -q | wc -l)
[ "$count" -eq 13 ] || fail "$count containers, not 13 (redis, 3 API replicas, 2 workers, the broadcaster, System 2, the dashboard, 2 agents, tls-cert, nginx)"
say "all $count containers healthy (tls-cert done)"

say "the dashboard through nginx"
curl -fsS "$http/" -o "$work/page.html"
grep -q "Telemetry lab" "$work/page.html" || fail "the page at / is not the dashboard"
curl -fsS "$http/config.json" | grep -q '"/system1/ws"' || fail "/config.json does not give the relative System 1 WebSocket"
curl -fsS "$http/api/status/system1" | grep -q '"status":200' || fail "the dashboard's System 1 relay has no healthy document"
version=$(curl -fsS -k --http2 -o /dev/null -w '%{http_version}' "https://127.0.0.1:$LAB_HTTPS_PORT/")
[ "$version" = 2 ] || fail "the TLS port answered HTTP/$version, not HTTP/2"

say "an ingest POST through nginx"
now_ms=$(($(date +%s%N) / 1000000))
code=$(curl -sS -o "$work/post.json" -w '%{http_code}' -H 'Content-Type: application/json' \
  --data "{\"serverId\":\"ci-post-1\",\"timestamp\":$now_ms,\"metrics\":{\"cpu\":12.5,\"memory\":40.1,\"disk\":55.0,\"network\":{\"in\":300,\"out\":250}},\"seq\":1}" \
  "$http/metrics")
[ "$code" = 202 ] || fail "POST /metrics answered $code: $(cat "$work/post.json")"

# Agents on the host, through nginx's published port: they post (System 1) or stream (System 2) and
# subscribe to the system's dashboard WebSocket, counting every metric by seq.
load() { # name, then the agents' flags
  local name=$1
  shift
  "$agents" --agents 5 --rate 100 --duration 3s --cooldown 3s --quiet --id-prefix "ci-$name-" \
    --json "$work/$name.json" "$@" >"$work/$name.log" 2>&1 || fail "agents ($name): $(tail -5 "$work/$name.log")"
  grep -Eq '^  "lost": 0,' "$work/$name.json" || fail "$name: metrics lost: $(grep -E '"(sent|acked|lost|errors)"' "$work/$name.json" | tr -d '\n')"
  grep -Eq '^  "errors": 0,' "$work/$name.json" || fail "$name: errors: $(grep -A5 errors_by_kind "$work/$name.json" | tr -d '\n')"
  grep -Eq '^  "delivered": [1-9]' "$work/$name.json" || fail "$name: the dashboard WebSocket delivered nothing"
  say "$name: $(grep -E '^  "(sent|acked|delivered|lost)"' "$work/$name.json" | tr -d ' \n')"
}
say "both systems' WebSockets deliver updates, through nginx"
load system1 --target "$http/metrics" --dashboard "ws://127.0.0.1:$LAB_HTTP_PORT/system1/ws"
load system2 --target "ws://127.0.0.1:$LAB_HTTP_PORT/system2/ws" --dashboard "ws://127.0.0.1:$LAB_HTTP_PORT/system2/ws"

# nginx's access log names the upstream of each request: the ingest went to every API replica.
replicas=$(docker logs "$("${compose[@]}" ps -q nginx)" 2>/dev/null | grep -E '"POST /metrics HTTP/1.1" 202' |
  grep -oE 'upstream=[0-9.]+:4000' | sort -u | wc -l)
[ "$replicas" -eq 3 ] || fail "nginx sent the ingest to $replicas API replicas, not 3"
say "nginx spread the ingest over all 3 API replicas (least_conn)"

say "kill one System 1 worker: the other carries on"
mapfile -t workers < <("${compose[@]}" ps -q system1-worker)
[ "${#workers[@]}" -eq 2 ] || fail "expected 2 worker containers, found ${#workers[@]}"
docker kill "${workers[0]}" >/dev/null
[ "$(docker inspect -f '{{.State.Running}}' "${workers[0]}")" = false ] || fail "the killed worker still runs"
load system1-after-kill --target "$http/metrics" --dashboard "ws://127.0.0.1:$LAB_HTTP_PORT/system1/ws"
[ "$(docker inspect -f '{{.State.Health.Status}}' "${workers[1]}")" = healthy ] || fail "the other worker is not healthy"

# The experiments in their container: a short `lab run quick` (each step its own private Redis and
# systems inside the container) writes its report into the mounted ./reports, as the current user.
say "docker compose run --rm lab run quick (shortened), into ./reports"
mkdir -p reports
out="reports/compose-test-$$"
LAB_UID=$(id -u) LAB_GID=$(id -g) timeout 180 "${compose[@]}" run --rm lab run quick \
  --set duration=2s --set warmup=0s --set cooldown=0s --out "$out" >"$work/lab-run.log" 2>&1 ||
  fail "lab run in its container: $(tail -20 "$work/lab-run.log")"
[ -s "$out/report.md" ] && [ -s "$out/report.html" ] || fail "no report in $out: $(ls "$out" 2>&1)"
grep -q "System 2" "$out/report.md" || fail "$out/report.md has no System 2 figures"

say "down -v"
timeout 120 "${compose[@]}" down -v --remove-orphans >/dev/null 2>&1
up=false
[ -z "$("${compose[@]}" ps -q)" ] || fail "containers left after down"
docker volume ls -q | grep -q "^${COMPOSE_PROJECT_NAME}_" && fail "volumes left after down -v"
say "took $((SECONDS - started)) s"
