"""The README's "Production readiness" section and docs/runbook.md: the sections the
issue asks for, every path they name exists, every checklist line points at something real, and
the runbook's commands use verbs and objects that exist."""

from __future__ import annotations

import re

import pytest

from detection_api.cli import build_parser
from support import k8s_render as k8s

PRODUCTION_TEXT = k8s.readme_section("Production readiness")
RUNBOOK = k8s.REPO / "docs" / "runbook.md"
PRODUCTION_SECTIONS = (
    "HTTPS and exposure",
    "Automated canary with Flagger, or `make canary` by hand",
    "Quotas",
    "Backups and disaster recovery",
    "Security scanning",
    "Production checklist",
)
RUNBOOK_SECTIONS = (
    "TAK outage",
    "Redis loss",
    "Stuck queue",
    "Dead letters",
    "Certificate expiry",
    "Rollback",
)
# The old guide's checklist, each line in its own words.
CHECKLIST = (
    "TLS via cert-manager",
    "Automated canary with Flagger",
    "Resource quotas",
    "Backups of the persistent volumes",
    "A disaster-recovery plan",
    "Security scanning",
    "Trained operators",
)
# Objects of the Knative installation the runbook restarts (namespace knative-serving).
KNATIVE_OWN = {("deployment", "controller")}
PATH = re.compile(r"`((?:knative|scripts|docs|tests|examples)/[^`\s]*|lint\.mk|constraints\.txt)`")


def headings(text: str) -> list[str]:
    return re.findall(r"^#+ (.+)$", text, re.MULTILINE)


DOCS = {"production": PRODUCTION_TEXT, "runbook": RUNBOOK.read_text()}


@pytest.mark.parametrize(
    ("doc", "sections"), [("production", PRODUCTION_SECTIONS), ("runbook", RUNBOOK_SECTIONS)]
)
def test_the_issues_sections_are_there(doc, sections) -> None:
    found = headings(DOCS[doc])
    for section in sections:
        assert section in found, section


def test_the_readme_ends_with_the_checklist() -> None:
    readme = (k8s.REPO / "README.md").read_text()
    assert "### Production checklist" in readme[-4000:]
    assert "\n## " not in readme[readme.index("### Production checklist") :]


@pytest.mark.parametrize("doc", ["production", "runbook"])
def test_every_path_named_exists(doc) -> None:
    named = set(PATH.findall(DOCS[doc]))
    assert named
    missing = [p for p in sorted(named) if not (k8s.REPO / p.rstrip("/")).exists()]
    assert missing == []


def test_each_checklist_line_points_at_a_manifest_test_or_document() -> None:
    text = PRODUCTION_TEXT
    checklist = text[text.index("### Production checklist") :]
    items = re.split(r"\n- \[x\] ", checklist)[1:]
    for wanted in CHECKLIST:
        (item,) = [i for i in items if i.startswith(wanted)]
        paths = PATH.findall(item)
        assert paths, wanted
        assert all((k8s.REPO / p.rstrip("/")).exists() for p in paths), wanted


def test_runbook_uses_the_operator_verbs_that_exist() -> None:
    text = RUNBOOK.read_text()
    parser = build_parser()
    for line in re.findall(r"^dapi (.+?)(?:\s+#.*)?$", text, re.MULTILINE):
        words = [w for w in line.split() if not w.startswith("<") and w != "[<ID>" and w != "...]"]
        parser.parse_args(words)  # exits (SystemExit) on an unknown verb or option
    for verb in ("queue status", "queue dead", "queue requeue", "queue purge --dead --older-than"):
        assert f"dapi {verb}" in text, verb
    assert "rq info" in text


def test_runbook_names_objects_of_the_bundle() -> None:
    text = RUNBOOK.read_text()
    objs = k8s.bundle("prod")
    names = {(o["kind"], o["metadata"]["name"]) for o in objs}
    for kind, name in re.findall(r"\b(deployment|statefulset|cronjob)/([a-z0-9-]+)", text):
        if (kind, name) in KNATIVE_OWN:
            continue
        expected = {"deployment": "Deployment", "statefulset": "StatefulSet", "cronjob": "CronJob"}
        assert (expected[kind], name) in names, f"{kind}/{name}"
    for name in re.findall(r"NetworkPolicy `([a-z0-9-]+)`|`(allow-[a-z0-9-]+)`", text):
        policy = next(n for n in name if n)
        assert ("NetworkPolicy", policy) in names or policy == "allow-backup-egress-https"
