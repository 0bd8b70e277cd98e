# Installs Debian packages for real peers the tests and benchmarks run against.
# Usage: source scripts/peers.sh; install_peers PACKAGE...   (a program missing after that fails)
install_peers() {
  local missing=()
  for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local install="apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${missing[*]}"
  if [ "$(id -u)" = 0 ]; then sh -c "$install" >/dev/null; else sudo sh -c "$install" >/dev/null; fi
}
