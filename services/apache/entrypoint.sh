#!/bin/sh
# Start the front door's httpd in the foreground with httpd.conf from this
# folder. Every setting httpd.conf reads from the environment gets an explicit
# default here, and a value httpd could not use stops the start with one line
# on stderr: httpd alone would start with an unset ${VARIABLE} left in place.
set -eu

fail() {
    echo "entrypoint.sh: $1" >&2
    exit 64
}

HTTPD_DIR=$(cd "$(dirname "$0")" && pwd)

: "${BIND_HOST:=0.0.0.0}"
: "${PORT:=8080}"
: "${CATALOG_URL:=http://catalog:8080}"
: "${CUSTOMER_URL:=http://customer:8080}"
: "${ORDER_URL:=http://order:8080}"
: "${PROXY_REUSE:=off}"
: "${PROXY_TIMEOUT_SECONDS:=5}"
: "${TMPDIR:=/tmp}"

case "$PROXY_REUSE" in
    on) PROXY_DISABLE_REUSE=Off ;;
    off) PROXY_DISABLE_REUSE=On ;;
    *) fail "PROXY_REUSE='$PROXY_REUSE' is not a setting; set it to on or off" ;;
esac

case "$PORT" in
    '' | *[!0-9]* | 0*) fail "PORT='$PORT' is not a port; set it to a number from 1 to 65535" ;;
esac
if [ "${#PORT}" -gt 5 ] || [ "$PORT" -gt 65535 ]; then
    fail "PORT='$PORT' is not a port; set it to a number from 1 to 65535"
fi

case "$PROXY_TIMEOUT_SECONDS" in
    '' | *[!0-9]* | 0*)
        fail "PROXY_TIMEOUT_SECONDS='$PROXY_TIMEOUT_SECONDS' is not a timeout; set it to a whole number of seconds above 0"
        ;;
esac

# A trailing slash would double the one httpd.conf puts before each path.
CATALOG_URL=${CATALOG_URL%/}
CUSTOMER_URL=${CUSTOMER_URL%/}
ORDER_URL=${ORDER_URL%/}
for setting in "CATALOG_URL=$CATALOG_URL" "CUSTOMER_URL=$CUSTOMER_URL" "ORDER_URL=$ORDER_URL"; do
    case "${setting#*=}" in
        http://?*) ;;
        *) fail "${setting%%=*}='${setting#*=}' is not a backend; set it to a URL such as http://catalog:8080" ;;
    esac
done

if [ ! -d "$TMPDIR" ] || [ ! -w "$TMPDIR" ]; then
    fail "TMPDIR='$TMPDIR' is not a writable folder; mount one (an emptyDir at /tmp) or point TMPDIR at one"
fi

# httpd's workers cannot run as root; drop to nobody when started as root.
if [ "$(id -u)" = 0 ]; then
    set -- -DDROP_ROOT "$@"
fi

export HTTPD_DIR BIND_HOST PORT CATALOG_URL CUSTOMER_URL ORDER_URL
export PROXY_REUSE PROXY_DISABLE_REUSE PROXY_TIMEOUT_SECONDS TMPDIR
exec /usr/sbin/apache2 -f "$HTTPD_DIR/httpd.conf" -DFOREGROUND "$@"
