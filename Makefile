# ociboot: `make demo` runs the main job, `make check` runs every test.
# Both install what they need (Debian packages through apt-get when run as root,
# Go modules through the module proxy).

GO        ?= go
BIN       := bin/ociboot
GOFLAGS_B := -trimpath
TAGS      := containers_image_openpgp
export CGO_ENABLED := 0

.PHONY: all build deps check test vet fmt-check demo bench fuzz man clean e2e

all: build

build:
	$(GO) build $(GOFLAGS_B) -tags '$(TAGS)' -o $(BIN) ./cmd/ociboot

# deps installs the Debian packages the tests use; it does nothing for what is present.
deps:
	./hack/install-deps.sh

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet -tags '$(TAGS)' ./...

test:
	$(GO) test -tags '$(TAGS)' -count=1 -timeout 25m ./...

# check is the README's test command and what CI runs (.ci/run).
check: deps fmt-check vet build test

# e2e is the VM test alone (root): a test OS installed to a disk image and booted in qemu
# through seven boots (tests/vm_e2e_test.go). make check runs it too.
e2e: deps
	$(GO) test -tags '$(TAGS)' -count=1 -timeout 20m -run TestVMBoot -v ./tests/

demo: build
	./hack/demo.sh

bench:
	$(GO) test -tags '$(TAGS)' -run '^$$' -bench . -benchmem ./composefs/

# bench-pull: the end-to-end pull benchmark (root): a debootstrap+kernel image in a loopback
# docker-registry, ociboot image pull cold and warm beside skopeo copy and umoci unpack.
# Builds and caches the image in $OCIBOOT_BENCH_CACHE (default ~/.cache/ociboot-bench;
# ~1.3 GB, and ~2 GB more while it runs).
.PHONY: bench-pull
bench-pull: build
	./hack/bench-pull.sh

fuzz:
	$(GO) test -tags '$(TAGS)' -run '^$$' -fuzz FuzzParseDump -fuzztime 60s ./composefs/

# man writes the man pages of every verb into man/, from the command tree itself.
man: build
	./$(BIN) man man

clean:
	rm -rf bin man
