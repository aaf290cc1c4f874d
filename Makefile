# DistTrain: build, test, train, bundle. Needs only the .NET 10 SDK (packages come from NuGet).
#   make test                 build everything and run all tests (what CI runs); installs fonts-dejavu-core if no font is present
#   make train                train the tiny MUDDFormer on the embedded corpus (CPU, a few minutes)
#   make bench                tiny-model CPU steps/s and Parquet reader tokens/s
#   make launch               the same job on two CPU workers (coordinator + ring all-reduce, cluster/local-cpu.yaml)
#   make bundle               self-contained linux-x64 disttrain (no libtorch) with configs/ as a tar.xz for GPU hosts (cluster/Dockerfile)
#   make build TORCH_LIB=/path/to/site-packages/torch/lib    GPU build: use that libtorch (CUDA) instead of the CPU one
#   make test-elastic-trials  20 elastic jobs with a worker killed at random (recovery times, steps lost; not in CI: ~30 min)
#   make test-cuda-emulation  the CUDA kernel sources run on the CPU against plain loops (g++, ~1.5 min; no GPU, no NVRTC)
#   make test-gpu             on a GPU host only, never in CI: the bundle's `disttrain kernel-test` (fused kernels against the reference)
#                             BUNDLE_BIN=path/to/disttrain (default: make bundle's output), TORCH_LIB (default: python3's torch/lib)

DOTNET        ?= dotnet
CONFIGURATION ?= Release
TORCH_LIB     ?=
TRAIN_CONFIG  ?= configs/tiny-muddformer.yaml
ARGS          ?=

BACKEND  := $(if $(TORCH_LIB),-p:TorchBackend=external,)
CLI_DLL  := src/DistTrain.Cli/bin/$(CONFIGURATION)/net10.0/disttrain.dll
DISTTRAIN = $(if $(TORCH_LIB),LD_LIBRARY_PATH=$(TORCH_LIB):$$LD_LIBRARY_PATH,) $(DOTNET) $(CLI_DLL)
BUNDLE   := artifacts/disttrain-linux-x64.tar.xz

export DOTNET_CLI_TELEMETRY_OPTOUT := 1
export DOTNET_NOLOGO := 1
export DOTNET_SKIP_FIRST_TIME_EXPERIENCE := 1

MANIFEST      ?= cluster/local-cpu.yaml
BUNDLE_BIN    ?= artifacts/bundle/disttrain/disttrain

.PHONY: build test test-elastic-trials test-cuda-emulation test-gpu train launch bench bundle corpus fonts clean

build:
	$(DOTNET) build DistTrain.sln -c $(CONFIGURATION) $(BACKEND) -v minimal

test: build fonts
	$(DOTNET) test DistTrain.sln -c $(CONFIGURATION) --no-build --blame-hang-timeout 10m -m:1 \
	  --filter "Category!=Trials" --logger "console;verbosity=normal"

# issue 15's trials: ELASTIC_TRIALS (default 20) elastic jobs, each with a worker killed at random; figures in artifacts/elastic-trials.txt
test-elastic-trials: build
	mkdir -p artifacts
	$(DOTNET) test tests/DistTrain.Cli.Tests -c $(CONFIGURATION) --no-build --filter "Category=Trials" --logger "console;verbosity=normal"

test-cuda-emulation:
	tests/cuda-emulation/run.sh

# The GPU host has no .NET SDK: it runs the self-contained bundle against the PyTorch wheel's libtorch (see docs/benchmarks/run-gpu-kernels.sh).
test-gpu:
	@test -x $(BUNDLE_BIN) || { echo "no bundle at $(BUNDLE_BIN): unpack $(BUNDLE) (make bundle) and set BUNDLE_BIN"; exit 1; }
	torch_lib=$${TORCH_LIB:-$$(python3 -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')}; \
	  LD_LIBRARY_PATH=$$torch_lib:$$LD_LIBRARY_PATH $(BUNDLE_BIN) kernel-test

train: build
	$(DISTTRAIN) train --config $(TRAIN_CONFIG) $(ARGS)

launch: build
	DISTTRAIN_JOB_TOKEN=$${DISTTRAIN_JOB_TOKEN:-local-$$$$} $(DISTTRAIN) launch --manifest $(MANIFEST) --config $(TRAIN_CONFIG) $(ARGS)

bench: build
	$(DISTTRAIN) bench --config $(TRAIN_CONFIG) $(ARGS)

# Self-contained, trimmed of libtorch: the target host brings libtorch (a PyTorch install's torch/lib).
bundle:
	rm -rf artifacts/bundle
	$(DOTNET) publish src/DistTrain.Cli/DistTrain.Cli.csproj -c Release -r linux-x64 --self-contained \
	  -p:TorchBackend=external -o artifacts/bundle/disttrain -v minimal
	cp -r configs artifacts/bundle/disttrain/configs   # the shipped configs and corpus: disttrain/configs/405m-muddformer.yaml runs as is
	tar -C artifacts/bundle -cf - disttrain | xz -T0 -6 > $(BUNDLE)
	@size=$$(stat -c %s $(BUNDLE)); echo "$(BUNDLE): $$((size / 1048576)) MiB"; \
	  test $$size -lt 62914560 || { echo "bundle is over 60 MB"; exit 1; }

# `disttrain plot` draws text with a font from /usr/share/fonts (Skia without fontconfig, ScottPlot bundles none): without one its labels are blank, so it refuses.
fonts:
	find /usr/share/fonts \( -name '*.ttf' -o -name '*.otf' -o -name '*.ttc' \) -print -quit 2>/dev/null | grep -q . || { apt-get update && apt-get install -y fonts-dejavu-core; }

# Rebuilds the embedded corpus (configs/corpus/kjv) from Debian's bible-kjv; the result is committed.
corpus: build
	command -v bible >/dev/null || apt-get install -y bible-kjv
	DISTTRAIN="$(DISTTRAIN)" configs/corpus/kjv/make-corpus.sh

clean:
	rm -rf artifacts runs
	find src tests -type d \( -name bin -o -name obj \) -prune -exec rm -rf {} +
