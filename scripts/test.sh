#!/usr/bin/env bash
# Runs GoTrack's whole test suite on a Debian machine with Go installed.
# It installs what the tests need (Prometheus and promtool from Debian's
# packages) when it is missing, then runs vet and the race-enabled tests.
# Extra arguments are passed to go test (for example -run Prometheus).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v prometheus >/dev/null 2>&1 || packages+=(prometheus)
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
if ((${#packages[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "test.sh: installing ${packages[*]} from Debian's packages" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# The tests that need these tools fail, rather than skip, when they are missing.
export GOTRACK_TEST_STRICT=1

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "test.sh: gofmt would change: $unformatted" >&2
  exit 1
fi
go vet ./...
go test -race -count=1 -timeout 20m "$@" ./...
