#!/usr/bin/env bash
# lb-demo: ChatterPro as operators run it, on this machine's loopback:
# one redis-server, three chatterpro nodes sharing it, and nginx in front
# with the shipped deploy/nginx.conf. Open the printed URL in two browsers,
# kill a node (the PIDs are printed) and watch the chat carry on.
# Ctrl-C stops everything.
#
# Environment: LB_PORT (default 8080), NODE_PORTS (default "3001 3002 3003"),
# REDIS_PORT (default 6390). Needs go, redis-server and nginx.
set -euo pipefail

cd "$(dirname "$0")/.."
LB_PORT=${LB_PORT:-8080}
NODE_PORTS=${NODE_PORTS:-"3001 3002 3003"}
REDIS_PORT=${REDIS_PORT:-6390}
SECRET=${CHATTERPRO_SECRET:-lb-demo-secret-$(date +%s)-$RANDOM$RANDOM}

NGINX=$(command -v nginx || echo /usr/sbin/nginx)
for bin in go redis-server "$NGINX"; do
	command -v "$bin" >/dev/null 2>&1 || { echo "lb-demo: $bin not found (Debian: apt-get install redis-server nginx)" >&2; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/chatterpro-lb-demo.XXXXXX")
PIDS=()
cleanup() {
	trap - INT TERM EXIT
	echo
	echo "lb-demo: stopping"
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup INT TERM EXIT

echo "lb-demo: building chatterpro"
go build -o "$WORK/chatterpro" ./cmd/chatterpro

redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK" --save '' \
	--appendonly yes --daemonize no --loglevel warning >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 50); do
	redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
	sleep 0.1
done

UPSTREAMS=""
for port in $NODE_PORTS; do
	CHATTERPRO_SECRET=$SECRET "$WORK/chatterpro" --addr "127.0.0.1:$port" \
		--layer "redis://127.0.0.1:$REDIS_PORT/0" --presence-ttl 10s \
		>"$WORK/node-$port.log" 2>&1 &
	PIDS+=($!)
	echo "lb-demo: node on 127.0.0.1:$port, pid $! (log $WORK/node-$port.log)"
	UPSTREAMS="$UPSTREAMS 127.0.0.1:$port"
done

# The shipped config with this demo's ports and every file in $WORK
# (the same rewrite the tests do in internal/nginxtest).
mkdir -p "$WORK/nginx"
awk -v listen="127.0.0.1:$LB_PORT" -v ups="$UPSTREAMS" -v dir="$WORK/nginx" '
	/^[ \t]*(pid|error_log|access_log|user|client_body_temp_path|proxy_temp_path|fastcgi_temp_path|uwsgi_temp_path|scgi_temp_path)[ \t]/ { next }
	/^[ \t]*worker_processes[ \t]/ { print "worker_processes 2;"; print "pid " dir "/nginx.pid;"; next }
	/^[ \t]*http[ \t]*\{/ { print; print "    access_log " dir "/access.log;";
		n = split("client_body proxy fastcgi uwsgi scgi", t, " ");
		for (i = 1; i <= n; i++) print "    " t[i] "_temp_path " dir "/" t[i] "_temp;";
		next }
	/^[ \t]*upstream[ \t]/ { inup = 1 }
	inup && /^[ \t]*\}/ { inup = 0 }
	inup && /^[ \t]*server[ \t]/ {
		if (!done) { params = $0; sub(/^[ \t]*server[ \t]+[^ \t;]+/, "", params);
			n = split(ups, u, " "); for (i = 1; i <= n; i++) print "        server " u[i] params; done = 1 }
		next }
	/^[ \t]*listen[ \t]/ { print "        listen " listen ";"; next }
	{ print }
' deploy/nginx.conf >"$WORK/nginx/nginx.conf"
if [ "$(id -u)" = 0 ]; then sed -i '1i user root;' "$WORK/nginx/nginx.conf"; fi
"$NGINX" -p "$WORK/nginx/" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)

for _ in $(seq 100); do
	curl -fsS "http://127.0.0.1:$LB_PORT/healthz" >/dev/null 2>&1 && break
	sleep 0.1
done
echo
echo "  ChatterPro behind nginx: http://localhost:$LB_PORT/"
echo "  Kill a node (kill -9 <pid> above) and keep chatting; Ctrl-C stops everything."
echo
wait
