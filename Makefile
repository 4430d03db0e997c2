# Portcullis — build, generate, lint, test, bench and demo.
# `make test` and `make demo` install the system packages they need (Debian, as
# root) through scripts/deps.sh before they run.

GO ?= go
# Flags and packages of the first `make test` pass (embedded broker). The
# timeout is per package binary; test/netns loads 1M bans per backend and has
# needed more than go test's default 10 min under -race on a busy machine.
TEST_FLAGS ?= -race -count=1 -timeout 15m
# go test starts packages in the order given: the slowest (privileged
# end-to-end suites) come first so the rest run beside them.
TEST_PKGS ?= ./test/netns/... ./test/nginx/... ./...
# Packages that run a second time against real Apache Kafka (test/kafka) in
# `make test`; extend with `KAFKA_PKGS += ./yourpkg/...` or on the command line.
KAFKA_PKGS ?= ./decisionfeed/... ./test/interop/... ./crowdsec/... ./engine/acquire/... ./engine/daemon/... \
	./cmd/fw-bouncer/... ./cmd/nginx-bouncer/... ./cmd/cf-bouncer/... ./cmd/portcullis/...
KAFKA_PORT ?= 19092
# Packages that need the SASL_SSL node and the three-broker cluster that
# test/kafka/kafka.sh starts (start-secure on KAFKA_SECURE_PORT and the two
# ports above it, start-cluster on KAFKA_CLUSTER_PORT and the five above);
# `make test` runs them last, and leaves them out of the first pass.
REALKAFKA_PKGS ?= ./test/realkafka/...
KAFKA_SECURE_PORT ?= 19094
KAFKA_CLUSTER_PORT ?= 19097
# Benchmark selection and budget for `make bench`: bounded, the machine is shared.
BENCH ?= .
BENCH_FLAGS ?= -run '^$$' -benchmem -benchtime 1s -count 1
BENCH_PKGS ?= ./...
GOLANGCI_LINT_VERSION ?= v2.15.0
# golangci-lint is built once from the Go module proxy into .cache/bin
# (gitignored); the first `make lint` takes a few minutes for that.
GOLANGCI_LINT := .cache/bin/golangci-lint-$(GOLANGCI_LINT_VERSION)
# Commands `make demo` builds; the demo grows with the project.
DEMO_CMDS ?= ./cmd/portcullis ./cmd/fw-bouncer ./test/demo/portcullis-demo

.PHONY: all build generate generate-check test bench bench-nginx lint demo deps kafka-start kafka-stop clean

all: build

## build: compile every command into bin/
build:
	$(GO) build -o bin/ ./cmd/...

## generate: regenerate the bpf2go bindings and objects under bpf/ (needs clang)
generate:
	$(GO) generate ./...

## generate-check: fail when the committed bpf/ output differs from a fresh
## generate; skipped (with a message) where clang is not installed, except
## under CI=true, where a missing clang fails it
generate-check:
	@if ! command -v clang >/dev/null 2>&1; then \
		if [ "$$CI" = true ]; then \
			echo "generate-check: clang not found (CI=true: failing; scripts/deps.sh installs it)"; exit 1; \
		fi; \
		echo "generate-check: clang not found, skipped (scripts/deps.sh installs it)"; \
	else \
		$(GO) generate ./... && \
		git diff --exit-code --stat -- bpf/ && \
		untracked=$$(git ls-files --others --exclude-standard -- bpf/) && \
		if [ -n "$$untracked" ]; then \
			echo "generate-check: generate made files that are not committed:"; \
			echo "$$untracked"; exit 1; \
		fi && \
		echo "generate-check: bpf/ is up to date"; \
	fi

## deps: install the missing system packages for tests (Debian, as root)
deps:
	scripts/deps.sh test

## test: $(TEST_PKGS) with -race on the embedded broker, then $(KAFKA_PKGS) on real Kafka,
## then $(REALKAFKA_PKGS) on a SASL_SSL node and a three-broker cluster
test: deps
	GO='$(GO)' TEST_FLAGS='$(TEST_FLAGS)' TEST_PKGS='$(TEST_PKGS)' KAFKA_PKGS='$(KAFKA_PKGS)' KAFKA_PORT='$(KAFKA_PORT)' \
		REALKAFKA_PKGS='$(REALKAFKA_PKGS)' KAFKA_SECURE_PORT='$(KAFKA_SECURE_PORT)' KAFKA_CLUSTER_PORT='$(KAFKA_CLUSTER_PORT)' \
		scripts/test.sh

## bench: run the benchmarks once each, bounded ($(BENCH_FLAGS))
bench:
	$(GO) test $(BENCH_FLAGS) -bench '$(BENCH)' $(BENCH_PKGS)

## bench-nginx: wrk against nginx alone and every protected mode with 1M bans,
## side by side; one line per mode ending in ratio=N.NN (a few minutes)
bench-nginx:
	GO='$(GO)' scripts/bench-nginx.sh

## lint: gofmt -l empty, go vet clean, golangci-lint (.golangci.yml) clean, shellcheck clean
lint: $(GOLANGCI_LINT)
	scripts/deps.sh lint
	shellcheck scripts/*.sh test/kafka/kafka.sh .ci/run
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$unformatted" ]; then echo "gofmt -l:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GOLANGCI_LINT) run ./...

$(GOLANGCI_LINT):
	mkdir -p .cache/bin
	GOBIN=$(CURDIR)/.cache/bin $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv .cache/bin/golangci-lint $@

## demo: the single-host pipeline on the embedded broker (grows with the project)
demo:
	scripts/deps.sh demo
	$(GO) build -o bin/ $(DEMO_CMDS)
	scripts/demo.sh

## kafka-start / kafka-stop: a real Apache Kafka node on 127.0.0.1:$(KAFKA_PORT),
## the SASL_SSL node on $(KAFKA_SECURE_PORT) and the cluster on $(KAFKA_CLUSTER_PORT)
kafka-start:
	test/kafka/kafka.sh start $(KAFKA_PORT)
	test/kafka/kafka.sh start-secure $(KAFKA_SECURE_PORT)
	test/kafka/kafka.sh start-cluster $(KAFKA_CLUSTER_PORT)
kafka-stop:
	test/kafka/kafka.sh stop $(KAFKA_PORT)
	test/kafka/kafka.sh stop $(KAFKA_SECURE_PORT)
	test/kafka/kafka.sh stop $(KAFKA_CLUSTER_PORT)

clean:
	rm -rf bin/
