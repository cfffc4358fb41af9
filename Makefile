# The two commands of the README. Each makes .venv at the repository root when it is
# missing or older than pyproject.toml, then runs.
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test chromium pango kafka-jars wrk

demo: $(STAMP) pango
	$(VENV)/bin/cdrflow demo
	@echo '(cdrflow is $(VENV)/bin/cdrflow; ". $(VENV)/bin/activate" puts it on your PATH)'
	@echo 'Billing in Dagster (summaries, invoices, re-rating): cdrflow ui, then open http://127.0.0.1:3000 (Ctrl-C stops it)'

test: $(STAMP) chromium pango kafka-jars
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -m "not benchmark"

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

# Headless Chromium for tests/stats/test_report_browser.py, from Debian's packages.
chromium:
	@command -v chromium >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }

# Pango for WeasyPrint, which prints invoices to PDF (billing/render.py), from Debian's packages.
pango:
	@{ ldconfig -p | grep -q libpango-1.0.so.0 && ldconfig -p | grep -q libpangoft2-1.0.so.0; } || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y libpango-1.0-0 libpangoft2-1.0-0; }

# The Kafka broker of the integration tests (tests/kafka): jars from Maven Central into
# tools/kafka/target/lib (git-ignored), fetched again only when tools/kafka/pom.xml changes.
kafka-jars: $(STAMP)
	@command -v mvn >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y maven openjdk-17-jdk-headless; }
	$(VENV)/bin/python -m pipelines.kafka_broker jars

# The HTTP load generator of the live worker's benchmark (bench/live.py: POST /authorize),
# from Debian's packages; only the benchmark needs it.
wrk:
	@command -v wrk >/dev/null 2>&1 || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk; }
