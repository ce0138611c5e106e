.PHONY: demo test setup lint bench broker-stop

demo: setup            ## run the main job on the local broker
	.venv/bin/streamml demo fraud

test:                  ## install what is needed, lint, type-check and run every test
	bash scripts/test.sh

setup:
	bash scripts/setup.sh

lint:
	bash scripts/lint.sh

bench:
	bash scripts/setup-bench.sh
	.venv/bin/streamml bench --quick

broker-stop:
	.venv/bin/streamml kafka stop
