# Knative deployment targets (included by the Makefile). Each prints the pack/kubectl/kn commands
# it runs; DRY_RUN=1 prints them without running anything. The work is in scripts/knative.sh.
#
#   make build   IMAGE=ghcr.io/acme/detection-api           pack build --publish, print the digest
#   make render  [IMAGE_REF=<image>@sha256:<digest>]         print the bundle (the release with IMAGE_REF)
#   make deploy  IMAGE=... [VERSION=v1.2.0] [IMAGE_REF=...]  build, push, apply, wait for Ready
#   make canary  PERCENT=10 [VERSION=...]                    new revision tagged `candidate`, PERCENT% of traffic
#   make promote [REVISION=...]                              100% to the candidate, which becomes `current`
#   make rollback [REVISION=...]                             100% back to `current` (or to REVISION)
#   make status | make undeploy [PURGE=1]

# Cloud Native Buildpacks (Paketo): Python + Procfile support; one image, `web` and `worker` processes.
BUILDER        ?= docker.io/paketobuildpacks/builder-jammy-base:latest
RUN_IMAGE      ?= docker.io/paketobuildpacks/run-jammy-base:latest
PYTHON_VERSION ?= 3.11
# Repository the image is pushed to (no tag: the release pins it by digest).
IMAGE          ?= registry.example.com/detection-api/detection-api
IMAGE_REF      ?=
# Names the revision detection-api-<VERSION> (default: git describe --tags --always --dirty).
VERSION        ?=
OVERLAY        ?= knative/overlays/prod
NAMESPACE      ?= detection-api
SERVICE        ?= detection-api
PERCENT        ?= 10
REVISION       ?=
PURGE          ?= 0
WAIT_TIMEOUT   ?= 300s
DRY_RUN        ?= 0

KNATIVE_SH := scripts/knative.sh
KNATIVE_ENV = DRY_RUN='$(DRY_RUN)' IMAGE='$(IMAGE)' IMAGE_REF='$(IMAGE_REF)' VERSION='$(VERSION)' \
	OVERLAY='$(OVERLAY)' NAMESPACE='$(NAMESPACE)' SERVICE='$(SERVICE)' PERCENT='$(PERCENT)' \
	REVISION='$(REVISION)' PURGE='$(PURGE)' WAIT_TIMEOUT='$(WAIT_TIMEOUT)' BUILDER='$(BUILDER)' \
	RUN_IMAGE='$(RUN_IMAGE)' PYTHON_VERSION='$(PYTHON_VERSION)'

.PHONY: build render deploy canary promote rollback status undeploy

build render deploy canary promote rollback status undeploy:
	@$(KNATIVE_ENV) $(KNATIVE_SH) $@
