# Two commands set everything up on a fresh Debian machine with Python 3.11:
#   make demo   the main job (hopguard hunt) over the example data in examples/
#   make test   the whole test suite (what CI runs)
# Both create .venv on first use; as root they also apt-get the system tools the tests need.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# System tools: the network lab (tests/lab, 'hopguard lab run') drives these real programs.
APT_PACKAGES := iproute2 procps nftables tcpdump auditd socat ncat curl dnsutils dnsmasq-base \
	tinyproxy openssh-server openssh-client openssl microsocks dante-server proxychains4 \
	stunnel4 sshuttle
DEMO_DB ?= out/demo.duckdb

.PHONY: demo test lint typecheck bench system-deps lab-data clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Debian: apt-get install python3.11 python3.11-venv)"; exit 1; }
	$(PYTHON) -m venv $(VENV) || { echo "python venv failed; on Debian: apt-get install python3.11-venv"; exit 1; }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

system-deps:
	@if [ -n "$(APT_PACKAGES)" ] && [ "$$(id -u)" = 0 ]; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; fi; \
	fi

demo: $(STAMP) system-deps
	@mkdir -p $(dir $(DEMO_DB))
	@rm -f $(DEMO_DB) $(DEMO_DB).wal
	@echo "Endpoint logs that do not name their machine get its name (--host); hunt stores each file once"
	$(BIN)/hopguard ingest --no-progress --db $(DEMO_DB) --host esx-02 examples/esx-02-shell.log >/dev/null
	$(BIN)/hopguard ingest --no-progress --db $(DEMO_DB) --host mac-alice examples/mac-alice-unified.ndjson >/dev/null
	$(BIN)/hopguard ingest --no-progress --db $(DEMO_DB) --host app-07 examples/app-07-iptables-save.txt \
	  examples/app-07-nft-monitor.log >/dev/null
	@echo "Threat intel: a partner's STIX 2.1 bundle and the lab's Tor consensus are imported first (--intel)"
	$(BIN)/hopguard hunt --no-progress --config examples/hopguard.toml --db $(DEMO_DB) \
	  --intel examples/intel/isac-c2.stix.json \
	  --intel examples/lab/tor-relay/intel/cached-consensus \
	  -o $(dir $(DEMO_DB))report.html examples/
	@echo
	@echo "The intel store (hopguard intel list) and what matched it:"
	@$(BIN)/hopguard intel list --db $(DEMO_DB)
	@$(BIN)/hopguard sql --db $(DEMO_DB) "SELECT detector, severity, title FROM finding WHERE detector LIKE 'intel.%' ORDER BY list_position(['critical', 'high', 'medium', 'low', 'info'], severity), detector, title LIMIT 12"
	@echo
	@echo "One chain, explained from its evidence (hopguard explain ID):"
	@$(BIN)/hopguard explain --db $(DEMO_DB) $$($(BIN)/hopguard sql --db $(DEMO_DB) -f csv \
	  "SELECT id FROM finding WHERE detector = 'chain.multihop' ORDER BY first_seen LIMIT 1" | tail -n 1)
	@echo
	@echo "One query over every host and source: proxy and relay tools started anywhere"
	$(BIN)/hopguard sql --db $(DEMO_DB) "SELECT ts, coalesce(host, sensor) AS host, platform, user, left(command_line, 90) AS command_line FROM process WHERE regexp_matches(command_line, '(portproxy|socat|microsocks| nc |ncat|ssh -[LRD])') ORDER BY ts"
	@echo
	@echo "The HTML report (self-contained): $(dir $(DEMO_DB))report.html"

test: $(STAMP) system-deps
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy
	$(BIN)/pytest -q -m "not bench"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

lab-data: $(STAMP) system-deps
	@[ "$$(id -u)" = 0 ] || { echo "make lab-data needs root (network namespaces, audit)"; exit 1; }
	$(BIN)/python -m hopguard.lab.examples --dest examples/lab

# bench/pcap.py compares packet ingest with these (installed as root, like system-deps).
BENCH_APT := tshark libndpi-bin

bench: $(STAMP)
	@$(MAKE) --no-print-directory system-deps APT_PACKAGES="$(BENCH_APT)"
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/pcap.py
	$(BIN)/python bench/hunt.py
	$(BIN)/python bench/sigma.py
	$(BIN)/python bench/intel.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache .ruff_cache
