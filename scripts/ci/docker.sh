#!/usr/bin/env bash
# Provides what the Docker suites need on a Debian 12 machine where we are root: the Docker
# engine (Debian's docker.io, started here because such machines run no init system) and the
# local base image berth-base:bookworm. No image registry is reachable, so the image is built
# from a debootstrap of the Debian mirror this machine's apt already uses, then `docker import`ed.
#
# Idempotent and bounded in time: every step is skipped when its result is already there.
# The testkit's containers backend builds its own image (berth-testkit:<hash>) FROM this base
# image lazily, on its first cluster (a few seconds, then cached): nothing more is built here.
#
#   bash scripts/ci/docker.sh          install if missing, start dockerd if needed, build the image
#   bash scripts/ci/docker.sh stop     stop the dockerd this script started (by its recorded pid)
#
# Environment (all optional):
#   BERTH_DOCKER_IMAGE        image to build (default berth-base:bookworm)
#   BERTH_DOCKERD_LOG         dockerd's log (default /tmp/berth-dockerd.log)
#   BERTH_DOCKERD_PIDFILE     where the started dockerd's pid is kept (default /tmp/berth-dockerd.pid)
#   BERTH_DOCKERD_START_TIMEOUT  seconds to wait for `docker info` after starting dockerd (default 60)
set -euo pipefail

IMAGE="${BERTH_DOCKER_IMAGE:-berth-base:bookworm}"
SUITE=bookworm
DOCKERD_LOG="${BERTH_DOCKERD_LOG:-/tmp/berth-dockerd.log}"
PIDFILE="${BERTH_DOCKERD_PIDFILE:-/tmp/berth-dockerd.pid}"
START_TIMEOUT="${BERTH_DOCKERD_START_TIMEOUT:-60}"
APT_TIMEOUT=900
DEBOOTSTRAP_TIMEOUT=900
IMPORT_TIMEOUT=300
# dockerd and debootstrap live in /usr/sbin, which a non-login PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive

START=$SECONDS
log() { printf '[docker.sh +%ss] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf '[docker.sh] ERROR: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then SUDO=(); elif command -v sudo >/dev/null 2>&1; then SUDO=(sudo -n); else
  die "must run as root (or with passwordless sudo): it installs packages and starts dockerd"
fi

# The pid recorded in $PIDFILE when that process is still a running dockerd.
recorded_dockerd() {
  [ -s "$PIDFILE" ] || return 1
  local pid
  pid="$(cat "$PIDFILE")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = dockerd ] || return 1
  printf '%s' "$pid"
}

if [ "${1:-}" = stop ]; then
  if pid="$(recorded_dockerd)"; then
    log "stopping dockerd (pid $pid, started by this script)"
    "${SUDO[@]}" kill -TERM "$pid"
    for _ in $(seq 1 150); do [ -d "/proc/$pid" ] || break; sleep 0.2; done
    [ -d "/proc/$pid" ] && die "dockerd (pid $pid) still runs 30 s after SIGTERM; see $DOCKERD_LOG"
    rm -f "$PIDFILE"
    log "dockerd stopped"
  else
    log "no dockerd started by this script is running; nothing to stop"
  fi
  exit 0
fi
[ $# -eq 0 ] || die "unknown argument '$1' (expected nothing or 'stop')"

apt_updated=false
apt_install() {
  if [ "$apt_updated" = false ]; then
    log "apt-get update"
    "${SUDO[@]}" timeout "$APT_TIMEOUT" apt-get update -qq || die "apt-get update failed"
    apt_updated=true
  fi
  log "apt-get install $*"
  "${SUDO[@]}" timeout "$APT_TIMEOUT" apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed"
}

# --- 1. the engine -----------------------------------------------------------------------------
# The machine may ship a docker CLI of its own; only Debian's package brings the daemon.
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v docker >/dev/null 2>&1 || missing+=(docker.io)
if [ ${#missing[@]} -gt 0 ]; then apt_install docker.io; else log "docker.io: already installed ($(command -v dockerd))"; fi

docker_ok() { timeout 10 docker info >/dev/null 2>&1; }

if docker_ok; then
  log "dockerd: already running ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
else
  if pid="$(recorded_dockerd)"; then
    log "dockerd (pid $pid, started earlier by this script) is not answering yet; waiting for it"
  else
    rm -f "$PIDFILE"
    # A dockerd that died without cleaning up leaves its pid file behind and then refuses to start.
    if [ -s /var/run/docker.pid ] && ! [ -d "/proc/$(cat /var/run/docker.pid)" ]; then
      log "removing the stale /var/run/docker.pid"
      "${SUDO[@]}" rm -f /var/run/docker.pid
    fi
    log "starting dockerd in the background (log: $DOCKERD_LOG, pid file: $PIDFILE)"
    # setsid: its own session, so it outlives this script and the CI step that ran it.
    "${SUDO[@]}" setsid dockerd --host=unix:///var/run/docker.sock </dev/null >"$DOCKERD_LOG" 2>&1 &
    pid=$!
    echo "$pid" >"$PIDFILE"
  fi
  deadline=$((SECONDS + START_TIMEOUT))
  until docker_ok; do
    if ! [ -d "/proc/$pid" ]; then
      tail -n 30 "$DOCKERD_LOG" >&2 || true
      rm -f "$PIDFILE"
      die "dockerd exited during startup; its log is above ($DOCKERD_LOG)"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 30 "$DOCKERD_LOG" >&2 || true
      die "dockerd did not answer 'docker info' within ${START_TIMEOUT}s; its log is above ($DOCKERD_LOG)"
    fi
    sleep 0.5
  done
  log "dockerd: running (pid $pid, engine $(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
fi

# --- 2. the base image -------------------------------------------------------------------------
# The first URI apt uses for $SUITE itself (not -updates or -security), from deb822 .sources
# files and one-line .list files alike. Files apt ignores (other suffixes) are ignored here too.
apt_mirror() {
  local file
  shopt -s nullglob
  for file in /etc/apt/sources.list.d/*.sources; do
    awk -v suite="$SUITE" '
      BEGIN { RS = ""; FS = "\n" }
      {
        types = ""; uris = ""; suites = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
          line = $i
          if (line ~ /^[ \t]*#/) continue
          split(line, kv, ":")
          key = tolower(kv[1]); value = substr(line, length(kv[1]) + 2)
          gsub(/^[ \t]+|[ \t]+$/, "", value)
          if (key == "types") types = value
          else if (key == "uris") uris = value
          else if (key == "suites") suites = value
          else if (key == "enabled") enabled = tolower(value)
        }
        if (enabled == "no" || (" " types " ") !~ / deb /) next
        if ((" " suites " ") ~ (" " suite " ")) { split(uris, u, /[ \t]+/); print u[1]; exit }
      }' "$file"
  done
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$file" ] || continue
    # deb [options] uri suite components...
    sed -E -e 's/#.*//' -e 's/\[[^]]*\]//' "$file" | awk -v suite="$SUITE" '$1 == "deb" && $3 == suite { print $2; exit }'
  done
  shopt -u nullglob
}

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  log "image $IMAGE: already present ($(docker image inspect --format '{{.Id}}' "$IMAGE" | cut -c1-19))"
else
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap
  mirror="$(apt_mirror | head -n 1)"
  [ -n "$mirror" ] || die "no apt source for '$SUITE' in /etc/apt/sources.list or /etc/apt/sources.list.d/"
  rootfs="$(mktemp -d /var/tmp/berth-rootfs.XXXXXX)"
  trap 'rm -rf "$rootfs"' EXIT
  log "debootstrap --variant=minbase $SUITE into $rootfs from $mirror (about 20-60 s)"
  if ! "${SUDO[@]}" timeout "$DEBOOTSTRAP_TIMEOUT" debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" \
    >/tmp/berth-debootstrap.log 2>&1; then
    tail -n 30 /tmp/berth-debootstrap.log >&2 || true
    die "debootstrap failed; its log is above (/tmp/berth-debootstrap.log)"
  fi
  # Nothing of the build machine's apt state or caches belongs in the image.
  "${SUDO[@]}" rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  log "docker import -> $IMAGE"
  "${SUDO[@]}" tar -C "$rootfs" --numeric-owner -c . | timeout "$IMPORT_TIMEOUT" docker import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    --message "debootstrap --variant=minbase $SUITE (scripts/ci/docker.sh)" \
    - "$IMAGE" >/dev/null || die "docker import failed"
  "${SUDO[@]}" rm -rf "$rootfs"
  trap - EXIT
  log "image $IMAGE: built ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
fi

docker run --rm --network none "$IMAGE" /bin/sh -c 'test -x /bin/bash' >/dev/null \
  || die "a container of $IMAGE could not run /bin/bash; check $DOCKERD_LOG"
log "ready: engine and $IMAGE work (took $((SECONDS - START)) s)"
