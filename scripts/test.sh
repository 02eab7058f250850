#!/usr/bin/env bash
# Runs GoTrack's whole test suite on a Debian machine with Go installed.
# It installs what the tests need when it is missing (Prometheus, promtool,
# the Pushgateway, the Alertmanager, nginx and PostgreSQL, from Debian's
# packages), starts a throwaway PostgreSQL cluster unless PG_TEST_DSN names a
# server, then runs gofmt, vet, the go.mod tidiness check, staticcheck
# (installed at a pinned version) and the
# race-enabled tests. Extra arguments go to go test (say, -run Postgres).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=()
command -v prometheus >/dev/null 2>&1 || packages+=(prometheus)
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || packages+=(prometheus-pushgateway)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || packages+=(nginx)
command -v prometheus-alertmanager >/dev/null 2>&1 || packages+=(prometheus-alertmanager)
command -v openssl >/dev/null 2>&1 || packages+=(openssl) # the signing example of docs/sources.md
command -v curl >/dev/null 2>&1 || packages+=(curl)
if ((${#packages[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "test.sh: installing ${packages[*]} from Debian's packages" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# Debian's promtool is built without Kubernetes service discovery; the
# kubernetes_sd_configs example is checked with an upstream one, built once
# into .tools/bin (a minute or two the first time). Only the Kubernetes
# discovery plugin is compiled in: the other plugins pull modules that the
# module proxy does not always serve.
if ! promtool check config --syntax-only deploy/prometheus/kubernetes-sd.yml >/dev/null 2>&1; then
  if [ ! -x .tools/bin/promtool ]; then
    echo "test.sh: building an upstream promtool with Kubernetes service discovery" >&2
    GOBIN="$PWD/.tools/bin" go install -tags remove_all_sd,enable_kubernetes_sd github.com/prometheus/prometheus/cmd/promtool@v0.316.0
  fi
  export GOTRACK_PROMTOOL_K8S="$PWD/.tools/bin/promtool"
fi

# The real JavaScript clients the tests drive (Segment's and RudderStack's
# SDKs, puppeteer-core for chromium) and gotrack.js's build toolchain, at
# the versions pinned in their package-lock.json files.
# npm ci refuses a lock file that lacks optional packages for other
# platforms (test/js's lacks msgpackr-extract's macOS and Windows builds,
# which the registry reachable here does not serve); npm install --no-save
# then installs the same locked versions without touching the lock file.
npmflags=(--ignore-scripts --no-audit --no-fund --loglevel=error)
for dir in test/js web/tracker; do
  (cd "$dir" && { npm ci "${npmflags[@]}" 2>/dev/null || npm install --no-save "${npmflags[@]}"; })
done

. scripts/pg.sh
trap pg_stop EXIT
pg_start

# The tests that need these tools fail, rather than skip, when they are missing.
export GOTRACK_TEST_STRICT=1

unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "test.sh: gofmt would change: $unformatted" >&2
  exit 1
fi
go vet ./...

# go.mod and go.sum must be exactly what `go mod tidy` writes.
if ! go mod tidy -diff >&2; then
  echo "test.sh: go mod tidy would change go.mod or go.sum (diff above); run go mod tidy" >&2
  exit 1
fi

# staticcheck, pinned: 0.8.2 is the 2026.2.2 release, which supports Go 1.26.
staticcheck_version=v0.8.2
gobin=$(go env GOBIN)
[ -n "$gobin" ] || gobin=$(go env GOPATH)/bin
if ! "$gobin/staticcheck" -version 2>/dev/null | grep -qF "(${staticcheck_version#v})"; then
  echo "test.sh: installing staticcheck $staticcheck_version" >&2
  go install "honnef.co/go/tools/cmd/staticcheck@$staticcheck_version"
fi
"$gobin/staticcheck" ./...
go test -race -count=1 -timeout 25m "$@" ./...
