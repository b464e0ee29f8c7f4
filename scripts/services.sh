#!/usr/bin/env bash
# Start the PostgreSQL and Redis that the integration tests use, when they are installed but
# stopped. Fails with a clear message when one is missing: the tests never pass by skipping.
set -euo pipefail

pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
redis_ready() { redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; }

if ! pg_ready; then
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    echo "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start || true
  else
    echo "PostgreSQL is not installed (need a server on 127.0.0.1:5432 with trust auth)" >&2
    exit 1
  fi
fi
if ! redis_ready; then
  if command -v redis-server >/dev/null; then
    echo "starting Redis"
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  else
    echo "Redis is not installed (need a server on 127.0.0.1:6379)" >&2
    exit 1
  fi
fi
for _ in $(seq 1 50); do
  if pg_ready && redis_ready; then
    echo "PostgreSQL and Redis are up"
    exit 0
  fi
  sleep 0.2
done
pg_ready || echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2
redis_ready || echo "Redis did not come up on 127.0.0.1:6379" >&2
exit 1
