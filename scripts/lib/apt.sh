# Sourced by the scripts: `apt_install PACKAGE...` installs those of the
# Debian packages that are missing (apt-get update first, no recommends) and
# does nothing when all are there. Announces itself with the caller's
# `section` function when it has one.

# `dpkg -s` alone also succeeds for a removed package whose config files remain.
apt_installed() {
    [[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" == "install ok installed" ]]
}

apt_install() {
    local package missing=()
    for package in "$@"; do
        apt_installed "$package" || missing+=("$package")
    done
    ((${#missing[@]})) || return 0
    if declare -F section >/dev/null; then
        section "apt-get install ${missing[*]}"
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
}
