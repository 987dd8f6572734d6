# A throw-away MariaDB (MySQL) server for the storage tests, on loopback only.
#
#   source .ci/mysql.sh && mysql_start     # exports INVRES_TEST_MYSQL_URL
#   ...                                    # run the tests
#   mysql_stop                             # stops the server, removes its folder
#
# Uses Debian's MariaDB (apt-get install mariadb-server if no server is installed). The data
# folder is temporary (mariadb-install-db), the server listens on 127.0.0.1 at a free port and
# accepts the user "invres" with a password over TCP (so that the tests can also try a wrong one);
# the administrator (root, or the user running this) logs in only through the server's own socket.
# As root, the server runs as the "mysql" system user.

mysql_install() {
    if command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ]; then return 0; fi
    echo "mysql: no server installed; apt-get install mariadb-server"
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
    else
        sudo apt-get update -qq >/dev/null && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server >/dev/null
    fi
}

mysql_start() {
    local server user admin port password
    mysql_install
    server=$(command -v mariadbd || echo /usr/sbin/mariadbd)
    if [ ! -x "$server" ]; then echo "mysql: could not install the server"; return 1; fi
    MYSQL_TEMP=$(mktemp -d -t invres-mysql.XXXXXX) || return 1
    export MYSQL_TEMP
    user=$(id -un) admin=$(id -un)
    if [ "$(id -u)" -eq 0 ]; then user=mysql admin=root; chown "$user": "$MYSQL_TEMP"; fi
    mariadb-install-db --no-defaults --datadir="$MYSQL_TEMP/data" --user="$user" --auth-root-authentication-method=socket \
        --skip-test-db >"$MYSQL_TEMP/install.log" 2>&1 || { echo "mysql: mariadb-install-db failed"; cat "$MYSQL_TEMP/install.log"; return 1; }
    port=$(python3 -c "import socket; s = socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    # --no-defaults: nothing from /etc/mysql (the system server's socket, pid file and logs)
    "$server" --no-defaults --user="$user" --datadir="$MYSQL_TEMP/data" --socket="$MYSQL_TEMP/socket" \
        --pid-file="$MYSQL_TEMP/server.pid" --log-error="$MYSQL_TEMP/server.log" --port="$port" \
        --bind-address=127.0.0.1 --skip-name-resolve --innodb-flush-log-at-trx-commit=0 --innodb-buffer-pool-size=64M \
        --max-connections=200 >/dev/null 2>&1 &
    MYSQL_PID=$!
    export MYSQL_PID
    for _ in $(seq 1 120); do
        if mariadb-admin --no-defaults --socket="$MYSQL_TEMP/socket" -u"$admin" ping >/dev/null 2>&1; then break; fi
        if ! kill -0 "$MYSQL_PID" 2>/dev/null; then break; fi
        sleep 0.5
    done
    if ! mariadb-admin --no-defaults --socket="$MYSQL_TEMP/socket" -u"$admin" ping >/dev/null 2>&1; then
        echo "mysql: the server did not start"; cat "$MYSQL_TEMP/server.log"; return 1
    fi
    password="invres-$RANDOM$RANDOM"
    # the tests create a database per test: the user may create and drop any database
    mariadb --no-defaults --socket="$MYSQL_TEMP/socket" -u"$admin" -e "
        CREATE USER 'invres'@'127.0.0.1' IDENTIFIED BY '$password';
        GRANT ALL PRIVILEGES ON *.* TO 'invres'@'127.0.0.1';
        CREATE DATABASE invres;" || { echo "mysql: could not create the test user"; return 1; }
    export INVRES_TEST_MYSQL_URL="mysql+pymysql://invres:$password@127.0.0.1:$port/invres"
    echo "mysql: $("$server" --version | sed 's/^.*Ver //; s/ for .*//') on 127.0.0.1:$port (data in $MYSQL_TEMP)"
}

mysql_stop() {
    if [ -n "${MYSQL_PID:-}" ] && kill -0 "$MYSQL_PID" 2>/dev/null; then
        kill -KILL "$MYSQL_PID" 2>/dev/null
        wait "$MYSQL_PID" 2>/dev/null  # only a child of this shell; otherwise wait until it is gone
        for _ in $(seq 1 50); do kill -0 "$MYSQL_PID" 2>/dev/null || break; sleep 0.1; done
    fi
    if [ -n "${MYSQL_TEMP:-}" ]; then rm -rf "$MYSQL_TEMP"; fi
    unset MYSQL_TEMP MYSQL_PID INVRES_TEST_MYSQL_URL
}
