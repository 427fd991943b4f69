# Thin targets: each is one command a newcomer could type by hand. Node 24 comes from node_modules
# (the `node` package), nats-server and nats from .tools/bin (built by `make tools`).
SHELL := /bin/bash
export PATH := $(CURDIR)/.tools/bin:$(CURDIR)/node_modules/.bin:$(PATH)

.PHONY: setup tools up up-cluster down demo demo-rollout test chaos bench lint typecheck check clean

setup: node_modules tools ## install npm packages and the pinned NATS binaries

node_modules: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch node_modules

tools: ## build pinned nats-server and nats CLI into .tools/bin (skips what is installed)
	@./tools/install.sh

up: setup ## run a local mesh in the background (nats-server with the rendered dev config)
	bin/causeway up

up-cluster: setup ## the same on a local 3-node JetStream cluster, every stream and bucket at R3
	bin/causeway up --cluster 3

down: ## stop what `make up` or `make up-cluster` started
	bin/causeway down

demo: setup ## run the mesh end to end with embedded defaults, then stop it
	bin/causeway demo

test: setup ## the whole test suite on real nats-servers
	npm test

demo-rollout: setup ## a rollout a failing candidate rolls back on its own (scripts/rollout-demo.sh), with lineage traces per version
	scripts/rollout-demo.sh

chaos: setup ## fault scenarios on a 3-node mesh (leader kill, SIGSTOP, rolling restart, agent/coordinator/lineage kill, all nodes down, PostgreSQL down, network partitions) with per-flow accounting
	npm run chaos

bench: setup ## benchmarks: ratios against hand-written baselines measured in the same run
	npm run bench

lint: node_modules
	npm run lint

typecheck: node_modules
	npm run typecheck

check: typecheck lint test

clean:
	rm -rf .data
