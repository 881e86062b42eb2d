# Sluice build, run, test and benchmark entry points.
GO       ?= go
BIN      := bin
BINARIES := sluiced sluice
PKGS     := ./...

export PATH := $(shell $(GO) env GOPATH)/bin:$(PATH)

.PHONY: all build run test test-deps unit e2e bench fmt vet clean $(addprefix $(BIN)/,$(BINARIES))

all: build

build: $(addprefix $(BIN)/,$(BINARIES))

$(addprefix $(BIN)/,$(BINARIES)):
	$(GO) build -o $@ ./cmd/$(notdir $@)

# Runs the registry on its embedded defaults: SQLite and blobs under ./data,
# listening on 127.0.0.1:5000.
run: $(BIN)/sluiced
	./$(BIN)/sluiced serve

test-deps:
	./scripts/install-test-deps.sh

# Installs what the tests need, then runs every test with the race detector.
test: test-deps build
	$(GO) vet $(PKGS)
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

bench: build
	./bench/run.sh

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
