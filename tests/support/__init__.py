"""Helpers shared by tests: rendering the Knative manifests, the metric-name contract."""
