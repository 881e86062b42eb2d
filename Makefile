# Sluice build, run, test and benchmark entry points.
GO       ?= go
BIN      := bin
BINARIES := sluiced sluice sluice-snapshotter
PKGS     := ./...

export PATH := $(shell $(GO) env GOPATH)/bin:$(PATH)

.PHONY: all build run node test test-deps bench bench-images fuzz fmt clean portal-screenshots $(addprefix $(BIN)/,$(BINARIES))

all: build

build: $(addprefix $(BIN)/,$(BINARIES))

$(addprefix $(BIN)/,$(BINARIES)):
	$(GO) build -o $@ ./cmd/$(notdir $@)

# Runs the registry on its embedded defaults: SQLite and blobs under ./data,
# listening on 127.0.0.1:5000.
run: $(BIN)/sluiced
	./$(BIN)/sluiced serve

# Starts a throw-away containerd and sluice-snapshotter in a scratch
# directory (as root), to try a lazy start against `make run`'s registry
# without touching the system's containerd; Ctrl-C stops and removes them.
node: build
	./scripts/node.sh

test-deps:
	./scripts/install-test-deps.sh

# Installs what the tests need, then runs every test with the race detector.
test: test-deps build
	$(GO) vet $(PKGS)
	SLUICE_TEST_STRICT=1 $(GO) test -race -count=1 -timeout 15m $(PKGS)

# Takes the portal's screenshots in docs/portal/ again, from its browser
# test (Chromium, headless).
portal-screenshots: test-deps
	SLUICE_PORTAL_SCREENSHOTS=$(CURDIR)/docs/portal $(GO) test -count=1 -run TestPortal ./test/portal/

# Runs every benchmark in bench/ (as root) and prints their tables.
bench: build bench-images
	./bench/run.sh

# Builds the Debian images the benchmarks use (once; cached outside the repo).
bench-images:
	./bench/images/build.sh

# Runs each fuzz target for FUZZTIME (default 30s).
FUZZTIME ?= 30s
fuzz:
	@for pkg in $$(go list ./...); do \
		for t in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
			echo "== $$pkg $$t"; $(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
		done; \
	done

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
