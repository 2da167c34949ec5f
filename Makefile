# ChatterPro — make test runs everything CI runs.
GO ?= go
SYSTEM_DEPS = redis-server redis-sentinel nginx chromium

.PHONY: test deps vet run lb-demo soak bench js-test fuzz

test: deps vet js-test
	$(GO) test -race -count=1 -p 1 -timeout 9m ./...
	# Allocation checks, built without the race detector (under which
	# sync.Pool drops pooled buffers on purpose; see fanout_alloc_test.go).
	$(GO) test -count=1 -run 'Allocations' ./consumer ./internal/slicepool

vet:
	$(GO) vet ./...

# The JavaScript client's unit tests (Node's test runner, fake sockets), and
# its declarations checked by tsc, installed into .node-tools when missing.
TSC = .node-tools/node_modules/.bin/tsc
js-test:
	node --test client/jstest/
	@[ -x $(TSC) ] || npm install --prefix .node-tools --no-save --no-audit --no-fund typescript@5
	$(TSC) --noEmit -p client/jstest

# The tests start their own redis-server (Sentinels too), nginx and headless chromium;
# install them when missing (Debian; needs root, as in CI).
deps:
	@missing=""; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v redis-sentinel >/dev/null 2>&1 || missing="$$missing redis-sentinel"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(SYSTEM_DEPS); \
	fi

run:
	$(GO) run ./cmd/chatterpro

# Redis, three nodes and nginx on loopback, to try in a browser (Ctrl-C stops).
lb-demo: deps
	bash scripts/lb-demo.sh

# Not part of make test: 3 nodes behind nginx, 1000 clients, 20 rooms,
# 5 minutes, one node restarted every minute; prints delivered, lost,
# duplicated and latency percentiles.
soak: deps
	$(GO) test -tags soak -run TestSoak -count=1 -timeout 20m -v ./cmd/chatterpro

# Load scenarios against ChatterPro, a bare coder/websocket hub and
# centrifuge in the same run; rewrites the tables of BENCHMARKS.md.
bench:
	$(GO) run ./cmd/chatbench -scenario all -socketio -runs 1 -step 3s -json bench-results.json -md BENCHMARKS.md

# chatbench's centrifuge anchor is a Go module of its own, which ./... at
# the root skips.
.PHONY: vet-anchor
vet: vet-anchor
vet-anchor:
	cd cmd/chatbench/anchors/centrifuge && $(GO) vet ./...

# Not part of make test (which runs the seed corpora): runs each fuzz
# target (func Fuzz... in a *_fuzz_test.go file) for FUZZTIME, one at a
# time: go test -fuzz takes one target per run.
FUZZTIME ?= 30s
fuzz:
	@set -e; for file in $$(find . -name '*_fuzz_test.go' | sort); do \
		for target in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$file); do \
			echo "fuzzing $$(dirname $$file) $$target for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$target\$$" -fuzztime $(FUZZTIME) ./$$(dirname $$file); \
		done; \
	done
