# A throw-away PostgreSQL server for the storage tests, on loopback only.
#
#   source .ci/postgres.sh && postgres_start     # exports INVRES_TEST_POSTGRES_URL
#   ...                                          # run the tests
#   postgres_stop                                # stops the server, removes its folder
#
# Uses Debian's PostgreSQL (apt-get install postgresql if no server is installed). The cluster
# lives in a temporary folder (initdb), listens on 127.0.0.1 at a free port, and accepts the
# user "invres" with a password over TCP (so that the tests can also try a wrong one).
# As root, the server runs as the "postgres" system user (PostgreSQL refuses to run as root).

postgres_bin() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$bin" ] && [ -x "$bin/initdb" ] && echo "$bin"
}

postgres_as_owner() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

postgres_start() {
    local bin port password
    bin=$(postgres_bin)
    if [ -z "$bin" ]; then
        echo "postgres: no server installed; apt-get install postgresql"
        if [ "$(id -u)" -eq 0 ]; then
            apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        else
            sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        fi
        bin=$(postgres_bin)
    fi
    if [ -z "$bin" ]; then echo "postgres: could not install the server"; return 1; fi
    POSTGRES_TEMP=$(mktemp -d -t invres-postgres.XXXXXX) || return 1
    export POSTGRES_TEMP POSTGRES_BIN="$bin"
    password="invres-$RANDOM$RANDOM"
    printf '%s\n' "$password" >"$POSTGRES_TEMP/pwfile"
    if [ "$(id -u)" -eq 0 ]; then chown -R postgres: "$POSTGRES_TEMP"; fi
    postgres_as_owner "$bin/initdb" -D "$POSTGRES_TEMP/data" -U invres --pwfile="$POSTGRES_TEMP/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-instructions >"$POSTGRES_TEMP/initdb.log" 2>&1 \
        || { echo "postgres: initdb failed"; cat "$POSTGRES_TEMP/initdb.log"; return 1; }
    port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    postgres_as_owner "$bin/pg_ctl" -D "$POSTGRES_TEMP/data" -l "$POSTGRES_TEMP/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $POSTGRES_TEMP -c max_connections=100 -c fsync=off" start \
        >/dev/null || { echo "postgres: the server did not start"; cat "$POSTGRES_TEMP/server.log"; return 1; }
    export INVRES_TEST_POSTGRES_URL="postgresql://invres:$password@127.0.0.1:$port/postgres"
    echo "postgres: $("$bin/postgres" --version) on 127.0.0.1:$port (data in $POSTGRES_TEMP)"
}

postgres_stop() {
    if [ -n "${POSTGRES_TEMP:-}" ] && [ -d "$POSTGRES_TEMP/data" ]; then
        postgres_as_owner "$POSTGRES_BIN/pg_ctl" -D "$POSTGRES_TEMP/data" -m immediate -w stop >/dev/null 2>&1
    fi
    if [ -n "${POSTGRES_TEMP:-}" ]; then rm -rf "$POSTGRES_TEMP"; fi
    unset POSTGRES_TEMP INVRES_TEST_POSTGRES_URL
}
