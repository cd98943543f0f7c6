# Shared by the benchmark scripts (sourced, not run): installing what they need and finding the
# vexil binary.

# install_missing PACKAGE...: installs the Debian packages given (as root with apt-get), or says
# which are missing and exits.
install_missing() {
    [ "$#" -gt 0 ] || return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
        apt-get update -qq && apt-get install -y -qq "$@"
    else
        echo "missing: apt-get install -y $*" >&2
        exit 1
    fi
}

# vexil_binary: $VEXIL_BIN, or a release build of this checkout.
vexil_binary() {
    if [ -n "${VEXIL_BIN:-}" ]; then
        echo "$VEXIL_BIN"
    else
        cargo build --release --locked -q -p vexil
        echo "${CARGO_TARGET_DIR:-target}/release/vexil"
    fi
}
