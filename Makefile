# llm-onprem: the two commands are `make demo` and `make test` (see README.md).
.PHONY: demo demo-clean test lint unit molecule kvm

# The whole pipeline against a disposable local test host (a podman container),
# ending with a working OpenAI-compatible endpoint; prints a curl command.
demo:
	bin/llm-onprem-demo

demo-clean:
	bin/llm-onprem-demo clean

# Everything CI runs: installs what is missing, then lint, unit tests, syntax,
# every molecule scenario and the KVM scenario, with a timing summary.
test:
	tests/run.sh

lint:
	tests/run.sh setup lint

unit:
	tests/run.sh setup unit

# One podman scenario: make molecule SCENARIO=host_tuning
molecule:
	tests/run.sh setup image podman molecule-$(SCENARIO)

kvm:
	tests/run.sh setup image podman kvm
