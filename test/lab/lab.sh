#!/usr/bin/env bash
# lab.sh - a real Keystone (v3) + Swift on 127.0.0.1 for imagefs' integration tests.
#
# Debian 12 packages (Swift 2.30, Keystone 22/Zed), no systemd, no Apache, no docker: every server is a
# background process in its own session, and all config, data, logs and pidfiles live under LAB_DIR.
# See README.md next to this file. Usage: lab.sh help
#
# Everything here was learned the hard way on these machines; the comments say why each odd setting exists.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true # bash 5.2: '&' in ${x//pat/rep} would mean "the match"

LAB_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) # test/lab in the repository
LAB_DIR=$(realpath -m "${LAB_DIR:-/var/tmp/imagefs-lab}")
LAB_TOKEN_EXPIRATION=${LAB_TOKEN_EXPIRATION:-300}
LAB_SMALL_SLO_SEGMENTS=${LAB_SMALL_SLO_SEGMENTS:-4}

# Debian's python, never the one on PATH: pyenv's python3 comes first on PATH on these machines, and every
# OpenStack module lives in /usr/lib/python3/dist-packages. (Debian's CLIs have #!/usr/bin/python3 anyway.)
PY=/usr/bin/python3
unset PYTHONHOME PYTHONPATH
# Everything talks to 127.0.0.1; never through a proxy.
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost

MEMCACHED_PORT=11311 # not 11211, so a system memcached (or a package's) cannot be confused with ours
KEYSTONE_PORT=5000
PROXY_PORT=8080
SMALL_SLO_PROXY_PORT=8081
ACCOUNT_PORT=6202 CONTAINER_PORT=6201 OBJECT_PORT=6200

KEYSTONE_URL=http://127.0.0.1:$KEYSTONE_PORT
SWIFT_URL=http://127.0.0.1:$PROXY_PORT
SMALL_SLO_PROXY_URL=http://127.0.0.1:$SMALL_SLO_PROXY_PORT

# Fixed, lab-only credentials (a throwaway local lab; nothing here is a real secret).
ADMIN_PASSWORD=lab-admin-password     # admin / project admin (keystone-manage bootstrap)
DEMO_PASSWORD=lab-demo-password       # demo / project demo, role member
SERVICE_PASSWORD=lab-imagefs-password # imagefs / project service, roles service + member
SWIFT_PASSWORD=lab-swift-password     # swift / project service, role service: Swift's authtoken user

# Worker counts keep the whole lab around 1 GiB RSS on a 2-core machine (each Swift worker is a full
# Python process; the master adds one more). The object server does the hashing and disk I/O.
PROXY_WORKERS=2 SMALL_SLO_PROXY_WORKERS=1 ACCOUNT_WORKERS=1 CONTAINER_WORKERS=1 OBJECT_WORKERS=2

COMPONENTS=(memcached keystone account container object proxy proxy-small-slo)

PACKAGES=(swift swift-proxy swift-account swift-container swift-object python3-swift python3-swiftclient
	python3-keystone python3-keystonemiddleware python3-keystoneclient python3-openstackclient
	memcached uwsgi-core uwsgi-plugin-python3 curl procps)
# Only python3-keystone, NOT the "keystone" package: its postinst (dbconfig-common, debconf) wants
# /etc/keystone, a keystone user and a running Keystone on :5000. python3-keystone has keystone-manage and
# keystone-wsgi-public, which is all the lab needs.

ETC_KEYSTONE=$LAB_DIR/etc/keystone
ETC_SWIFT=$LAB_DIR/etc/swift
LOG=$LAB_DIR/log
RUN=$LAB_DIR/run
STATE=$LAB_DIR/state
KEYSTONE_DB=$LAB_DIR/lib/keystone/keystone.db

say() { printf 'lab: %s\n' "$*" >&2; }
die() {
	printf 'lab: error: %s\n' "$*" >&2
	exit 1
}

# ---------------------------------------------------------------------------------------------------------
# Packages
# ---------------------------------------------------------------------------------------------------------

missing_packages() {
	local installed
	installed=$(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${PACKAGES[@]}" 2>/dev/null || true)
	local p
	for p in "${PACKAGES[@]}"; do
		grep -qx "$p installed" <<<"$installed" || echo "$p"
	done
}

# Daemons a package's postinst might start (pid list), so that install can stop the ones it caused.
daemon_pids() {
	command -v ps >/dev/null || return 0
	# shellcheck disable=SC2009 # pgrep cannot match these patterns on the full command line as precisely
	ps -eo pid=,args= | grep -E '(^|[ /])(memcached|uwsgi(-core)?|swift-[a-z-]+-server|keystone-[a-z-]+)( |$)' |
		grep -v grep | awk '{print $1}' || true
}

cmd_install() {
	local missing=()
	mapfile -t missing < <(missing_packages)
	if ((${#missing[@]} == 0)); then
		say "packages: all installed"
		return 0
	fi
	((EUID == 0)) || die "installing packages needs root: missing ${missing[*]}"
	say "installing: ${missing[*]}"
	local before temp_policy="" t0=$SECONDS
	before=$(daemon_pids)
	# Package postinsts start their services with the default configs on the default ports (memcached on
	# 11211, swift-proxy on 8080...). invoke-rc.d asks policy-rc.d first; exit 101 means "not allowed".
	# Some images ship one; on a machine without it, create one just for this install.
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		temp_policy=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\n# temporary, created by imagefs test/lab/lab.sh install\nexit 101\n' >"$temp_policy"
		chmod 755 "$temp_policy"
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	local rc=0
	{
		DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
				-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
				-o DPkg::Lock::Timeout=120 "${missing[@]}"
	} >&2 || rc=$?
	if [[ -n $temp_policy ]]; then
		rm -f "$temp_policy"
		trap - EXIT
	fi
	# Belt and braces: stop any daemon that appeared during the install (it can only be a postinst's).
	local pid stray=()
	for pid in $(daemon_pids); do
		grep -qx "$pid" <<<"$before" || stray+=("$pid")
	done
	if ((${#stray[@]})); then
		say "stopping daemons started by package scripts: ${stray[*]}"
		kill -TERM "${stray[@]}" 2>/dev/null || true
		sleep 1
		kill -KILL "${stray[@]}" 2>/dev/null || true
	fi
	((rc == 0)) || die "apt-get failed (exit $rc)"
	mapfile -t missing < <(missing_packages)
	((${#missing[@]} == 0)) || die "still missing after install: ${missing[*]}"
	say "packages installed in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------------------------------------
# Processes: pidfiles with start times, one session per server
# ---------------------------------------------------------------------------------------------------------

# Start time of a process (field 22 of /proc/PID/stat, in clock ticks since boot). Together with the pid it
# identifies a process for good: a recycled pid has a different start time.
proc_starttime() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) } # the command name (field 2) may contain spaces and parentheses
	# shellcheck disable=SC2086 # split into fields on purpose; they are numbers and one state letter
	set -- $stat # now $1 is field 3
	echo "${20}"
}

# Live (non-zombie) members of session $1.
session_members() {
	ps -eo pid=,sid=,stat= | awk -v s="$1" '$2 == s && $3 !~ /^Z/ {print $1}'
}

# Waits (at most 10 s) until the given sessions have no processes at all, zombies included. PID 1 on these
# machines reaps orphans only every few seconds, and a `ps` right after `down` should show nothing.
wait_reaped() {
	local deadline=$((SECONDS + 10)) left
	while (($#)); do
		left=$(ps -eo sid= | awk -v list=" $* " 'index(list, " " $1 " ") {n++} END {print n + 0}')
		((left > 0 && SECONDS < deadline)) || break
		sleep 0.1
	done
}

# Prints the pid of a running component and succeeds, or fails.
comp_pid() {
	local pidfile=$RUN/$1.pid pid st
	[[ -f $pidfile ]] || return 1
	read -r pid st <"$pidfile" || return 1
	[[ -n $pid && $(proc_starttime "$pid" 2>/dev/null) == "$st" ]] || return 1
	[[ $(ps -o stat= -p "$pid" 2>/dev/null) != Z* ]] || return 1
	echo "$pid"
}

# The command line of a component, in the global array CMD.
comp_cmd() {
	case $1 in
	memcached)
		CMD=(/usr/bin/memcached -l 127.0.0.1 -p "$MEMCACHED_PORT" -U 0 -m 64 -c 1024)
		# memcached refuses to run as root without -u.
		if ((EUID == 0)); then
			if id memcache >/dev/null 2>&1; then CMD+=(-u memcache); else CMD+=(-u nobody); fi
		fi
		;;
	keystone)
		# uwsgi in HTTP mode instead of Apache + mod_wsgi.
		#  --processes 2 --threads 1: with 2 threads sqlite fails ("SQLite objects created in a thread can
		#    only be used in that same thread"). Two processes are fine once the DB is in WAL mode.
		#  --lazy-apps: each worker opens its own DB connections and memcache pool after the fork.
		#  --add-header "Connection: close": --http-socket has no keep-alive but does not say so; keep-alive
		#    clients (python requests, Go) then see "connection reset" on their next request (6 in 30 tries).
		#  --die-on-term: SIGTERM means shutdown (uwsgi's default is a reload).
		#  OS_KEYSTONE_CONFIG_DIR: how keystone-wsgi-public finds keystone.conf outside /etc/keystone.
		CMD=(/usr/bin/uwsgi-core --plugins python3 --master --die-on-term --need-app --lazy-apps
			--processes 2 --threads 1 --enable-threads
			--http-socket "127.0.0.1:$KEYSTONE_PORT" --wsgi-file /usr/bin/keystone-wsgi-public
			--add-header "Connection: close" --buffer-size 65535
			--env "OS_KEYSTONE_CONFIG_DIR=$ETC_KEYSTONE" --env "OS_KEYSTONE_CONFIG_FILES=keystone.conf")
		;;
	# -v: also log to stdout (= log/NAME.log). Without it the lines go to syslog, and with no syslog
	# daemon here Swift falls back to UDP localhost:514, where they are lost.
	account | container | object) CMD=("/usr/bin/swift-$1-server" "$ETC_SWIFT/$1-server.conf" -v) ;;
	proxy) CMD=(/usr/bin/swift-proxy-server "$ETC_SWIFT/proxy-server.conf" -v) ;;
	proxy-small-slo) CMD=(/usr/bin/swift-proxy-server "$ETC_SWIFT/proxy-server-small-slo.conf" -v) ;;
	*) die "unknown component $1" ;;
	esac
}

comp_conf() {
	case $1 in
	keystone) echo "$ETC_KEYSTONE/keystone.conf" ;;
	account | container | object) echo "$ETC_SWIFT/$1-server.conf" ;;
	proxy) echo "$ETC_SWIFT/proxy-server.conf" ;;
	proxy-small-slo) echo "$ETC_SWIFT/proxy-server-small-slo.conf" ;;
	esac
}

comp_port() {
	case $1 in
	memcached) echo "$MEMCACHED_PORT" ;;
	keystone) echo "$KEYSTONE_PORT" ;;
	account) echo "$ACCOUNT_PORT" ;;
	container) echo "$CONTAINER_PORT" ;;
	object) echo "$OBJECT_PORT" ;;
	proxy) echo "$PROXY_PORT" ;;
	proxy-small-slo) echo "$SMALL_SLO_PROXY_PORT" ;;
	esac
}

# What a running component was started with: its command line and config file. When the freshly rendered
# version differs (e.g. another LAB_TOKEN_EXPIRATION), `up` restarts that component, and only that one.
comp_spec() {
	comp_cmd "$1"
	local conf
	conf=$(comp_conf "$1")
	{
		printf '%s\0' "${CMD[@]}"
		[[ -z $conf ]] || cat "$conf"
	} | sha256sum | cut -d' ' -f1
}

http_ok() { curl -fsS --noproxy '*' -o /dev/null --max-time 3 "$1" 2>/dev/null; }

port_open() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

comp_healthy() {
	case $1 in
	memcached)
		timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$MEMCACHED_PORT; printf 'version\r\n' >&3;
			read -r line <&3; [[ \$line == VERSION* ]]" 2>/dev/null
		;;
	keystone) http_ok "$KEYSTONE_URL/v3" ;;
	*) http_ok "http://127.0.0.1:$(comp_port "$1")/healthcheck" ;;
	esac
}

comp_start() {
	local name=$1 log=$LOG/$1.log pid
	if comp_pid "$name" >/dev/null; then return 0; fi
	local port
	port=$(comp_port "$name")
	if port_open "$port"; then
		die "port $port is already in use by a process this lab (LAB_DIR=$LAB_DIR) did not start;" \
			"stop it first (e.g. another lab, or a package's daemon)"
	fi
	comp_cmd "$name"
	# Keep logs from growing without bound across many test runs.
	if [[ -f $log ]] && (($(stat -c %s "$log") > 64 * 1024 * 1024)); then mv -f "$log" "$log.old"; fi
	printf '\n==== %s starting %s: %s\n' "$(date '+%F %T')" "$name" "${CMD[*]}" >>"$log"
	# setsid: each server in its own session and process group. Swift's master signals its whole process
	# group on shutdown, which without setsid could include the caller. A background job of this
	# non-interactive shell is never a group leader, so setsid calls setsid(2) and execs without forking:
	# $! is the server's pid. fd 9 is the lab lock: it must not leak into the server.
	setsid "${CMD[@]}" </dev/null >>"$log" 2>&1 9>&- &
	pid=$!
	local st
	st=$(proc_starttime "$pid") || die "$name exited at once; see $log:"$'\n'"$(tail -n 20 "$log")"
	echo "$pid $st" >"$RUN/$name.pid"
	comp_spec "$name" >"$RUN/$name.spec"
	# Check the assumption above (pid == session id).
	local sid
	sid=$(ps -o sid= -p "$pid" | tr -d ' ') || true
	[[ -z $sid || $sid == "$pid" ]] || say "warning: $name (pid $pid) is not its own session leader (sid $sid)"
	say "started $name (pid $pid)"
}

comp_stop() {
	local name=$1 pidfile=$RUN/$1.pid pid st
	[[ -f $pidfile ]] || return 0
	read -r pid st <"$pidfile" || true
	if [[ -z ${pid:-} ]]; then
		rm -f "$pidfile"
		return 0
	fi
	local now
	now=$(proc_starttime "$pid" 2>/dev/null) || now=""
	if [[ -n $now && $now != "$st" ]]; then
		# The pid now belongs to an unrelated process: ours is long gone (and since Linux never hands out a
		# pid that is still in use as a session id, so are any of its children).
		rm -f "$pidfile" "$RUN/$name.spec"
		return 0
	fi
	# Either the leader is alive (start time matches), or it is gone and whatever is left in its session
	# (workers outliving their master) is ours: a session id is not reused while any member lives.
	if [[ -n $now ]]; then kill -TERM -- "-$pid" 2>/dev/null || true; fi
	local members=()
	mapfile -t members < <(session_members "$pid")
	if ((${#members[@]})); then
		[[ -n $now ]] || kill -TERM "${members[@]}" 2>/dev/null || true
		local deadline=$((SECONDS + 15))
		while mapfile -t members < <(session_members "$pid") && ((${#members[@]})); do
			if ((SECONDS >= deadline)); then
				say "$name did not stop within 15 s; sending SIGKILL to: ${members[*]}"
				kill -KILL -- "-$pid" 2>/dev/null || true
				kill -KILL "${members[@]}" 2>/dev/null || true
				sleep 0.5
				break
			fi
			sleep 0.1
		done
		say "stopped $name (pid $pid)"
	fi
	rm -f "$pidfile" "$RUN/$name.spec"
	STOPPED+=("$pid")
}
STOPPED=() # sessions stopped by this run, for wait_reaped

# Waits until all named components answer; fails early (with the log tail) if one of them dies.
wait_healthy() {
	local timeout=$1 name
	shift
	local deadline=$((SECONDS + timeout)) pending=("$@")
	while ((${#pending[@]})); do
		local still=()
		for name in "${pending[@]}"; do
			if comp_healthy "$name"; then continue; fi
			comp_pid "$name" >/dev/null ||
				die "$name exited during startup; last lines of $LOG/$name.log:"$'\n'"$(tail -n 25 "$LOG/$name.log")"
			still+=("$name")
		done
		pending=("${still[@]}")
		((${#pending[@]})) || break
		((SECONDS < deadline)) || die "not answering after ${timeout}s: ${pending[*]} (see $LOG)"
		sleep 0.2
	done
}

# Starts a component, or restarts it if it runs with an outdated command line or config.
comp_ensure() {
	local name=$1
	if comp_pid "$name" >/dev/null; then
		if [[ $(comp_spec "$name") == "$(cat "$RUN/$name.spec" 2>/dev/null)" ]]; then return 0; fi
		say "$name: configuration changed, restarting it"
		comp_stop "$name"
	else
		# A stale pidfile, or leftovers of a crashed server still in its session: clean up first.
		comp_stop "$name"
	fi
	comp_start "$name"
}

# ---------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------

# render TEMPLATE DEST KEY=VALUE... : substitutes @KEY@; rewrites DEST only when its content changes.
render() {
	local tpl=$1 dest=$2 kv text
	shift 2
	text=$(<"$tpl")
	for kv; do text=${text//@${kv%%=*}@/${kv#*=}}; done
	if [[ $text =~ @[A-Z_]+@ ]]; then die "render $tpl: no value for ${BASH_REMATCH[0]}"; fi
	if [[ -f $dest && "$(<"$dest")" == "$text" ]]; then return 0; fi
	printf '%s\n' "$text" >"$dest.tmp"
	chmod 600 "$dest.tmp" # it holds the lab's (fake) service password
	mv -f "$dest.tmp" "$dest"
}

render_configs() {
	local c=$LAB_HOME/conf
	render "$c/keystone.conf.in" "$ETC_KEYSTONE/keystone.conf" \
		LAB_DIR="$LAB_DIR" TOKEN_EXPIRATION="$LAB_TOKEN_EXPIRATION" MEMCACHED_PORT="$MEMCACHED_PORT"
	local common=(LAB_DIR="$LAB_DIR" MEMCACHED_PORT="$MEMCACHED_PORT" KEYSTONE_PORT="$KEYSTONE_PORT"
		SWIFT_USERNAME=swift SWIFT_PASSWORD="$SWIFT_PASSWORD" USER="$(id -un)")
	render "$c/proxy-server.conf.in" "$ETC_SWIFT/proxy-server.conf" "${common[@]}" \
		NAME=proxy PORT="$PROXY_PORT" WORKERS="$PROXY_WORKERS" SLO_MAX_SEGMENTS=1000
	render "$c/proxy-server.conf.in" "$ETC_SWIFT/proxy-server-small-slo.conf" "${common[@]}" \
		NAME=proxy-small-slo PORT="$SMALL_SLO_PROXY_PORT" WORKERS="$SMALL_SLO_PROXY_WORKERS" \
		SLO_MAX_SEGMENTS="$LAB_SMALL_SLO_SEGMENTS"
	render "$c/storage-server.conf.in" "$ETC_SWIFT/account-server.conf" \
		LAB_DIR="$LAB_DIR" USER="$(id -un)" APP=account PORT="$ACCOUNT_PORT" WORKERS="$ACCOUNT_WORKERS"
	render "$c/storage-server.conf.in" "$ETC_SWIFT/container-server.conf" \
		LAB_DIR="$LAB_DIR" USER="$(id -un)" APP=container PORT="$CONTAINER_PORT" WORKERS="$CONTAINER_WORKERS"
	render "$c/storage-server.conf.in" "$ETC_SWIFT/object-server.conf" \
		LAB_DIR="$LAB_DIR" USER="$(id -un)" APP=object PORT="$OBJECT_PORT" WORKERS="$OBJECT_WORKERS"
}

check_settings() {
	if ! [[ $LAB_TOKEN_EXPIRATION =~ ^[0-9]+$ ]] || ((LAB_TOKEN_EXPIRATION < 1)); then
		die "LAB_TOKEN_EXPIRATION must be a number of seconds, got '$LAB_TOKEN_EXPIRATION'"
	fi
	((LAB_TOKEN_EXPIRATION > 60)) ||
		say "warning: LAB_TOKEN_EXPIRATION=$LAB_TOKEN_EXPIRATION: ncw/swift (and rclone) cannot use tokens" \
			"with <= 60 s lifetime (they treat < 60 s left as expired)"
	if ! [[ $LAB_SMALL_SLO_SEGMENTS =~ ^[0-9]+$ ]] || ((LAB_SMALL_SLO_SEGMENTS < 1)); then
		die "LAB_SMALL_SLO_SEGMENTS must be a positive number, got '$LAB_SMALL_SLO_SEGMENTS'"
	fi
	case $LAB_DIR in / | /usr | /usr/* | /etc | /etc/* | /bin | /sbin | /lib* | /boot* | /proc* | /sys* | /dev*)
		die "refusing LAB_DIR=$LAB_DIR" ;;
	esac
}

preflight() {
	# Swift reads /etc/swift/swift.conf (hash path prefix/suffix, storage policies) from a hard-coded
	# path; swift_dir only moves the rings and the other files. Debian's swift package ships it (prefix and
	# suffix "changeme", which is valid), and the lab uses it as it is.
	[[ -f /etc/swift/swift.conf ]] ||
		die "/etc/swift/swift.conf is missing. Swift reads it from that fixed path; Debian's swift package" \
			"ships it. Restore it with: apt-get install --reinstall -o Dpkg::Options::=--force-confmiss swift"
	[[ -x $PY ]] || die "$PY is missing (Debian's python3)"
}

prepare_dirs() {
	mkdir -p "$ETC_KEYSTONE" "$ETC_SWIFT" "$LOG" "$RUN" "$STATE" "$LAB_DIR/lib/keystone" \
		"$LAB_DIR/srv/node/d1" "$LAB_DIR/cache"
	# Marks the directory as the lab's, so that `purge` never removes anything else.
	[[ -f $LAB_DIR/.imagefs-lab ]] || echo "imagefs test lab (test/lab/lab.sh); safe to delete when down" \
		>"$LAB_DIR/.imagefs-lab"
}

# The lab lock serialises concurrent up/down calls (e.g. from parallel test packages).
take_lock() {
	mkdir -p "$LAB_DIR"
	exec 9>>"$LAB_DIR/.lock"
	flock -w 600 9 || die "could not lock $LAB_DIR/.lock"
}

# Environment for the python helpers (py/*.py); they never print tokens.
helper_env() {
	export LAB_KEYSTONE_URL=$KEYSTONE_URL LAB_SWIFT_URL=$SWIFT_URL LAB_SMALL_SLO_PROXY_URL=$SMALL_SLO_PROXY_URL
	export LAB_ADMIN_PASSWORD=$ADMIN_PASSWORD LAB_DEMO_PASSWORD=$DEMO_PASSWORD
	export LAB_SERVICE_PASSWORD=$SERVICE_PASSWORD LAB_SWIFT_PASSWORD=$SWIFT_PASSWORD
	export LAB_SMALL_SLO_SEGMENTS LAB_TOKEN_EXPIRATION
}

# ---------------------------------------------------------------------------------------------------------
# Keystone
# ---------------------------------------------------------------------------------------------------------

# One-time database and key setup; keystone-manage works on the DB directly (Keystone need not run).
keystone_init() {
	[[ -f $STATE/keystone-init.done ]] && return 0
	say "initialising Keystone (db_sync, WAL, fernet and credential keys, bootstrap)"
	local km=(/usr/bin/keystone-manage --config-file "$ETC_KEYSTONE/keystone.conf") mlog=$LOG/keystone-manage.log
	local me grp
	me=$(id -un) grp=$(id -gn)
	{
		"${km[@]}" db_sync &&
			# The default rollback journal makes concurrent writers wait and fail ("database is locked").
			# WAL is a property of the DB file, so it is set once, right after the tables exist.
			$PY -c 'import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print("journal_mode:", c.execute("PRAGMA journal_mode=WAL").fetchone()[0]); c.close()' "$KEYSTONE_DB" &&
			"${km[@]}" fernet_setup --keystone-user "$me" --keystone-group "$grp" &&
			"${km[@]}" credential_setup --keystone-user "$me" --keystone-group "$grp" &&
			"${km[@]}" bootstrap --bootstrap-username admin --bootstrap-password "$ADMIN_PASSWORD" \
				--bootstrap-project-name admin --bootstrap-role-name admin \
				--bootstrap-service-name keystone --bootstrap-region-id RegionOne \
				--bootstrap-admin-url "$KEYSTONE_URL/v3" --bootstrap-internal-url "$KEYSTONE_URL/v3" \
				--bootstrap-public-url "$KEYSTONE_URL/v3"
	} >>"$mlog" 2>&1 || die "keystone-manage failed; last lines of $mlog:"$'\n'"$(tail -n 25 "$mlog")"
	grep -q 'journal_mode: wal' "$mlog" || die "could not switch $KEYSTONE_DB to WAL"
	touch "$STATE/keystone-init.done"
}

# Users, projects, roles and the object-store endpoints (py/identities.py, idempotent). Re-run only when
# the script or the passwords change.
keystone_identities() {
	local stamp
	stamp=$({
		cat "$LAB_HOME/py/identities.py"
		echo "$DEMO_PASSWORD $SERVICE_PASSWORD $SWIFT_PASSWORD $SWIFT_URL"
	} | sha256sum | cut -d' ' -f1)
	[[ $(cat "$STATE/identities.done" 2>/dev/null) == "$stamp" ]] && return 0
	helper_env
	$PY "$LAB_HOME/py/identities.py" >&2 || die "creating the Keystone identities failed"
	echo "$stamp" >"$STATE/identities.done"
}

# ---------------------------------------------------------------------------------------------------------
# Swift
# ---------------------------------------------------------------------------------------------------------

swift_init() {
	if [[ ! -f $STATE/xattr.ok ]]; then
		# The object server keeps metadata in user xattrs; fail here rather than on the first PUT.
		$PY -c 'import os,sys; p=os.path.join(sys.argv[1],".xattr-test"); open(p,"w").close(); os.setxattr(p,"user.swift.test",b"x"); os.unlink(p)' \
			"$LAB_DIR/srv/node/d1" || die "$LAB_DIR does not support user xattrs, which Swift needs"
		touch "$STATE/xattr.ok"
	fi
	if [[ ! -f $ETC_SWIFT/account.builder || ! -f $ETC_SWIFT/container.builder || ! -f $ETC_SWIFT/object.builder ]]; then
		$PY "$LAB_HOME/py/rings.py" "$ETC_SWIFT" >&2 || die "building the rings failed"
	fi
}

# ---------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------

cmd_up() {
	check_settings
	take_lock
	[[ -z $(missing_packages) ]] || cmd_install
	local t1=$SECONDS
	preflight
	prepare_dirs
	render_configs
	local first_time=false
	[[ -f $STATE/selftest.done ]] || first_time=true

	# Swift does not need Keystone to start (authtoken gets its own token on first use), so its servers
	# boot while keystone-manage works on the first run.
	comp_ensure memcached
	swift_init
	local c
	for c in account container object proxy proxy-small-slo; do comp_ensure "$c"; done
	wait_healthy 30 memcached
	keystone_init
	comp_ensure keystone
	wait_healthy 90 keystone account container object proxy proxy-small-slo
	keystone_identities

	if $first_time; then
		say "first start: running the self test"
		cmd_selftest >&2
		touch "$STATE/selftest.done"
	fi
	say "up in $((SECONDS - t1)) s"
	summary
}

summary() {
	cat <<EOF
imagefs lab is up (LAB_DIR=$LAB_DIR)
  keystone    $KEYSTONE_URL/v3   token expiration $(configured_expiration) s
  swift       $SWIFT_URL         slo.max_manifest_segments 1000
  swift       $SMALL_SLO_PROXY_URL         slo.max_manifest_segments $LAB_SMALL_SLO_SEGMENTS (small-SLO proxy)
  memcached   127.0.0.1:$MEMCACHED_PORT;  account/container/object servers on $ACCOUNT_PORT/$CONTAINER_PORT/$OBJECT_PORT
  logs        $LOG
  use it:     eval "\$($LAB_HOME/lab.sh env)"   # or: env service | env admin
EOF
}

cmd_down() {
	local purge=false
	[[ ${1:-} == --purge ]] && purge=true
	if [[ ! -d $LAB_DIR ]]; then
		say "nothing to do: $LAB_DIR does not exist"
		return 0
	fi
	take_lock
	local i
	for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do comp_stop "${COMPONENTS[i]}"; done
	wait_reaped "${STOPPED[@]}"
	if $purge; then
		[[ -f $LAB_DIR/.imagefs-lab ]] || die "$LAB_DIR has no .imagefs-lab marker; not removing it"
		rm -rf -- "$LAB_DIR"
		say "removed $LAB_DIR"
	fi
}

cmd_status() {
	local name pid bad=0
	for name in "${COMPONENTS[@]}"; do
		local port
		port=$(comp_port "$name")
		if pid=$(comp_pid "$name") && comp_healthy "$name"; then
			printf '%-16s up    127.0.0.1:%-5s pid %s\n' "$name" "$port" "$pid"
		elif [[ -n ${pid:-} ]]; then
			printf '%-16s down  127.0.0.1:%-5s pid %s runs but does not answer\n' "$name" "$port" "$pid"
			bad=1
		else
			printf '%-16s down  127.0.0.1:%-5s\n' "$name" "$port"
			bad=1
		fi
		pid=""
	done
	return $bad
}

configured_expiration() {
	local v=""
	[[ -f $ETC_KEYSTONE/keystone.conf ]] && v=$(sed -n 's/^expiration = //p' "$ETC_KEYSTONE/keystone.conf")
	echo "${v:-$LAB_TOKEN_EXPIRATION}"
}

cmd_env() {
	local who=${1:-demo} user password project
	case $who in
	demo) user=demo password=$DEMO_PASSWORD project=demo ;;
	service) user=imagefs password=$SERVICE_PASSWORD project=service ;;
	admin) user=admin password=$ADMIN_PASSWORD project=admin ;;
	*) die "usage: lab.sh env [demo|service|admin]" ;;
	esac
	local kv
	for kv in OS_AUTH_URL="$KEYSTONE_URL/v3" OS_USERNAME="$user" OS_PASSWORD="$password" \
		OS_PROJECT_NAME="$project" OS_USER_DOMAIN_NAME=Default OS_PROJECT_DOMAIN_NAME=Default \
		OS_REGION_NAME=RegionOne OS_INTERFACE=public OS_IDENTITY_API_VERSION=3; do
		printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
	done
	[[ $who == demo ]] || return 0
	for kv in LAB_SERVICE_USERNAME=imagefs LAB_SERVICE_PASSWORD="$SERVICE_PASSWORD" \
		LAB_SERVICE_PROJECT_NAME=service LAB_ADMIN_USERNAME=admin LAB_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
		LAB_ADMIN_PROJECT_NAME=admin LAB_SWIFT_URL="$SWIFT_URL" LAB_SMALL_SLO_PROXY_URL="$SMALL_SLO_PROXY_URL" \
		LAB_TOKEN_EXPIRATION="$(configured_expiration)" LAB_DIR="$LAB_DIR"; do
		printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
	done
}

cmd_keystone() {
	case ${1:-} in
	stop)
		take_lock
		comp_stop keystone
		wait_reaped "${STOPPED[@]}"
		;;
	start)
		check_settings
		take_lock
		preflight
		prepare_dirs
		render_configs
		comp_pid memcached >/dev/null || say "warning: memcached is down; Keystone will be slow (lab.sh up starts it)"
		keystone_init
		comp_ensure keystone
		wait_healthy 90 keystone
		say "keystone is up"
		;;
	*) die "usage: lab.sh keystone stop|start" ;;
	esac
}

cmd_selftest() {
	local name
	for name in "${COMPONENTS[@]}"; do comp_healthy "$name" || die "$name is down; run lab.sh up first"; done
	LAB_TOKEN_EXPIRATION=$(configured_expiration)
	LAB_SMALL_SLO_SEGMENTS=$(sed -n 's/^max_manifest_segments = //p' "$ETC_SWIFT/proxy-server-small-slo.conf")
	helper_env
	$PY "$LAB_HOME/py/selftest.py"
}

cmd_logs() {
	case ${1:-} in
	"") echo "$LOG" ;;
	-f | tail) exec tail -n "${2:-20}" -F "$LOG"/*.log ;;
	*) die "usage: lab.sh logs [-f]" ;;
	esac
}

usage() {
	cat <<EOF
usage: lab.sh COMMAND   (LAB_DIR=$LAB_DIR)
  install                 apt-get install the packages the lab needs (skips installed ones)
  up                      install if needed, start whatever is down, wait until Keystone and Swift answer
  down [--purge]          stop everything the lab started; --purge also removes LAB_DIR
  purge                   same as down --purge
  restart                 down, then up
  status                  one line per component; exit 1 if any is down
  env [demo|service|admin]  print export lines for OS_* (and LAB_* for demo)
  keystone stop|start     stop or start Keystone only (outage tests)
  selftest                check service tokens, trusts, /info and the token lifetime
  logs [-f]               print the log directory (or follow all logs)
environment: LAB_DIR, LAB_TOKEN_EXPIRATION (default 300), LAB_SMALL_SLO_SEGMENTS (default 4)
EOF
}

main() {
	# Servers inherit the working directory: never let them pin the caller's (a test's temp dir or a
	# FUSE mount point would then be busy).
	cd /
	local cmd=${1:-help}
	shift || true
	case $cmd in
	install)
		take_lock
		cmd_install
		;;
	up) cmd_up ;;
	down) cmd_down "$@" ;;
	purge) cmd_down --purge ;;
	restart)
		cmd_down
		cmd_up
		;;
	status) cmd_status ;;
	env) cmd_env "$@" ;;
	keystone) cmd_keystone "$@" ;;
	selftest) cmd_selftest ;;
	logs) cmd_logs "$@" ;;
	help | -h | --help) usage ;;
	*)
		usage >&2
		exit 2
		;;
	esac
}

main "$@"
