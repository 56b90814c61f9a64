# The two everyday commands: `make run` and `make test`. The environment is created on first use.
.PHONY: setup run test bench image

setup:
	bash bin/setup-env

run: setup
	bin/in-env python -m pipeline.local_runner $(ARGS)

test: setup
	bash tests/test_in_env.sh
	bin/in-env sh bin/install-browser
	bin/in-env python -m pytest $(PYTEST_ARGS)

bench: setup
	bin/in-env python bench/table.py $(ARGS)
	bin/in-env python bench/quantization_aware.py  # the three int8 files of a digits run (a few minutes)
	bin/in-env python bench/network_efficiency.py  # images/s and share of the CPU's peak per network (5 minutes)
	bin/in-env python bench/photos.py  # CIFAR-10 from ../shared/datasets when present (about 20-35 minutes)

# The Kubeflow pipeline image (pipeline/kubeflow/Dockerfile), built here or found cached; prints its tag last.
image: setup
	bash bin/image $(VARIANT)
