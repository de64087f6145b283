#!/usr/bin/env bash
# Make a local PostgreSQL answer on 127.0.0.1 with a login role and a database for Dagster, the
# ones deploy/dagster.yaml names through its environment variables. Idempotent: safe to run
# before every test session; a second run only checks, resets the password and exits.
#
#   DAGSTER_POSTGRES_USER=... DAGSTER_POSTGRES_PASSWORD=... DAGSTER_POSTGRES_DB=... \
#       [DAGSTER_POSTGRES_PORT=5432] scripts/ensure-postgres.sh
#
# As root it installs Debian's `postgresql` package when missing, creates a cluster on the port
# when none uses it, starts it (pg_ctlcluster) and creates the role and the database.
# The server keeps Debian's defaults: it listens on localhost only, and TCP logins need a
# password (scram-sha-256).
#
# Exit status: 0 ready; 77 this machine cannot provide PostgreSQL (not root, no apt-get, the
# package cannot be installed, the cluster does not start), with the reason on stderr, so that
# callers may skip; anything else is an error to fix. The password is never printed.
set -euo pipefail

CANNOT=77
say() { echo "ensure-postgres: $*" >&2; }
cannot() { say "$*"; exit "$CANNOT"; }
die() { say "$*"; exit 1; }

user=${DAGSTER_POSTGRES_USER:?DAGSTER_POSTGRES_USER is not set}
password=${DAGSTER_POSTGRES_PASSWORD:?DAGSTER_POSTGRES_PASSWORD is not set}
db=${DAGSTER_POSTGRES_DB:?DAGSTER_POSTGRES_DB is not set}
port=${DAGSTER_POSTGRES_PORT:-5432}
host=${DAGSTER_POSTGRES_HOST:-127.0.0.1}

# Names go into SQL as identifiers: allow only plain lower-case ones, so no quoting can break.
ident='^[a-z_][a-z0-9_]{0,62}$'
[[ $user =~ $ident ]] || die "DAGSTER_POSTGRES_USER must match $ident"
[[ $db =~ $ident ]] || die "DAGSTER_POSTGRES_DB must match $ident"
[[ $port =~ ^[0-9]{1,5}$ ]] || die "DAGSTER_POSTGRES_PORT must be a port number"
case $host in
    127.0.0.1 | localhost) ;;
    *) die "DAGSTER_POSTGRES_HOST is $host; this script only manages a server on this machine" ;;
esac

[[ $(id -u) -eq 0 ]] || cannot "needs root to install and start PostgreSQL (running as $(id -un))"

# Two test sessions starting at once must not both create the role or the cluster.
lock_dir=/run/lock
[[ -d $lock_dir && -w $lock_dir ]] || lock_dir=/tmp
exec 9> "$lock_dir/stream-assets-ensure-postgres.lock"
flock -w 600 9 || die "another ensure-postgres.sh held the lock for 10 minutes"

# Commands that may leave a server running behind them (apt's postinst starts the new cluster on
# some machines; pg_ctlcluster always does): the server must not inherit the lock (fd 9), or every
# later run would wait for it, nor the caller's stdout/stderr, or a caller that reads them to the
# end (a test capturing output) would hang until the server stops. Output goes to a log that is
# shown only on failure.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
detached() {
    if "$@" < /dev/null > "$log" 2>&1 9>&-; then return 0; fi
    tail -n 20 "$log" >&2
    return 1
}

server_installed() {
    command -v pg_ctlcluster > /dev/null && compgen -G '/usr/lib/postgresql/*/bin/postgres' > /dev/null
}

if ! server_installed; then
    command -v apt-get > /dev/null || cannot "PostgreSQL is not installed and there is no apt-get"
    say "installing PostgreSQL from Debian's packages (apt-get install postgresql)"
    export DEBIAN_FRONTEND=noninteractive
    # Lock timeout: wait for another apt/dpkg run instead of failing at once.
    detached apt-get -o DPkg::Lock::Timeout=600 update -qq \
        || cannot "apt-get update failed; PostgreSQL cannot be installed here"
    detached apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends postgresql \
        || cannot "apt-get install postgresql failed"
    server_installed || cannot "postgresql was installed but no server binary was found"
fi

# The cluster that owns the port, else a new one. Debian creates `main` on 5432 with the package,
# but a machine may have removed it or moved it to another port.
cluster=$(pg_lsclusters --no-header | awk -v p="$port" '$3 == p { print $1, $2; exit }')
if [[ -z $cluster ]]; then
    version=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
    name=main
    [[ -e /etc/postgresql/$version/main ]] && name=stream_assets
    say "creating cluster $version/$name on port $port"
    detached pg_createcluster --port "$port" "$version" "$name" \
        || cannot "pg_createcluster $version $name failed"
    cluster="$version $name"
fi
read -r version name <<< "$cluster"

status=$(pg_lsclusters --no-header | awk -v v="$version" -v n="$name" '$1 == v && $2 == n { print $4 }')
if [[ $status != online* ]]; then
    say "starting cluster $version/$name"
    detached pg_ctlcluster "$version" "$name" start \
        || cannot "pg_ctlcluster $version $name start failed (see /var/log/postgresql/)"
fi

# The server may still be recovering; TCP on 127.0.0.1 is also what Dagster will use.
ready=false
for _ in $(seq 60); do
    if pg_isready -q -h 127.0.0.1 -p "$port"; then ready=true; break; fi
    sleep 0.5
done
$ready || die "cluster $version/$name runs but does not accept TCP connections on 127.0.0.1:$port"

# As the postgres superuser over the Unix socket (peer authentication). The SQL goes through
# stdin, so the password is in no process's arguments; quotes in it are doubled for SQL.
sql_password=${password//\'/\'\'}
(cd / && runuser -u postgres -- psql --no-psqlrc -X -q -v ON_ERROR_STOP=1 -p "$port" -d postgres) \
    > /dev/null <<SQL
SELECT format('CREATE ROLE %I LOGIN', '$user')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$user') \gexec
ALTER ROLE "$user" WITH LOGIN PASSWORD '$sql_password';
SELECT format('CREATE DATABASE %I OWNER %I', '$db', '$user')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$db') \gexec
SQL

say "ready: 127.0.0.1:$port (cluster $version/$name), role $user, database $db"
