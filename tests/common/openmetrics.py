#!/usr/bin/python3
"""Parses an OpenMetrics text exposition (stdin) with the Prometheus project's own parser
(prometheus_client, Debian's python3-prometheus-client) and prints it as JSON: for each
family, its type and its samples as [name, labels, value]. A text the parser refuses
exits non-zero with its error."""
import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families

families = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    families[family.name] = {
        "type": family.type,
        "samples": [[s.name, s.labels, s.value] for s in family.samples],
    }
print(json.dumps(families))
