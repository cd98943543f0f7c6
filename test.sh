#!/usr/bin/env bash
# The whole test suite: formatting, lints, every unit and end-to-end test, and a check that the
# benchmarks still build and run their assertions once, the Kubernetes manifests validated and the
# container image built and run (as root: buildah). Needs a Rust toolchain, python3 and git;
# installs the Debian packages the tests drive when they are missing (as root, with apt-get).
set -euo pipefail
cd "$(dirname "$0")"

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

# The reload tests drive real git repositories with the git command; the OpenFeature and
# Unleash conformance tests install real clients into a Python venv and with npm (they do it
# themselves, from tests/conformance/), so python3's venv module and Node.js must exist.
missing=""
command -v git > /dev/null || missing="$missing git"
python3 -m venv --help > /dev/null 2>&1 || missing="$missing python3-venv"
command -v npm > /dev/null || missing="$missing nodejs npm"
# The mirror conformance tests drive Debian's ruby-unleash 3.2.5 and ruby-flipper 0.25.4.
ruby -e 'require "unleash"; require "flipper"' > /dev/null 2>&1 || missing="$missing ruby-unleash ruby-flipper"
# The browser conformance test (tests/e2e/browser.rs) drives Debian's headless Chromium with
# puppeteer-core (npm, installed by the test): no chromedriver needed.
command -v chromium > /dev/null || missing="$missing chromium"
# The configuration matrix (tests/e2e/matrix) serves git over https:// with nginx and fcgiwrap
# (git http-backend) and over ssh:// with sshd, each started by the tests on 127.0.0.1.
[ -x /usr/sbin/nginx ] || command -v nginx > /dev/null || missing="$missing nginx"
[ -x /usr/sbin/fcgiwrap ] || command -v fcgiwrap > /dev/null || missing="$missing fcgiwrap"
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v ssh-keygen > /dev/null || missing="$missing openssh-client"
if [ -n "$missing" ]; then
    echo "== installing$missing"
    # Debian starts a packaged service (nginx on port 80, sshd on 22) where it can: the tests
    # start their own, so none is started while installing.
    policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        policy=/usr/sbin/policy-rc.d
    fi
    status=0
    { apt-get update -qq && apt-get install -y -qq $missing; } || status=$?
    [ -z "$policy" ] || rm -f "$policy"
    [ "$status" = 0 ] || exit "$status"
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== bucketing expectations in tests/spec agree with Python's zlib.crc32"
python3 tests/spec/gen_bucket_vectors.py > /dev/null

echo "== cargo test (unit, end-to-end, property and specification tests)"
cargo test --workspace --locked

echo "== vexil validate flags/ (the embedded example repository)"
cargo run --quiet --locked -p vexil -- validate flags

echo "== Kubernetes manifests: rendered and validated strictly against Kubernetes' schemas"
deploy/validate-manifests.sh

echo "== the container image: the Dockerfile built offline with buildah, run and checked"
deploy/image-smoke.sh

echo "== benchmarks compile and their setup assertions hold (one quick pass, no timing)"
cargo bench --locked -p vexil-core --bench core -- --test
cargo bench --locked -p vexil-core --bench reload -- --test
cargo bench --locked -p vexil-server --bench load -- --test
cargo bench --locked -p vexil-server --bench mirrors -- --test
