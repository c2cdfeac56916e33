"""Parse a Prometheus text exposition with the reference parser.

usage: parse_metrics.py < exposition

Prints one JSON object: {"families": {name: type}, "samples": [{"name",
"labels", "value"}]}. Exits non-zero (with the parser's error) when the
text is not valid exposition format.
"""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def main():
    text = sys.stdin.read()
    families = {}
    samples = []
    for family in text_string_to_metric_families(text):
        families[family.name] = family.type
        for s in family.samples:
            value = s.value
            if math.isinf(value):
                value = "inf"
            samples.append({"name": s.name, "labels": s.labels, "value": value})
    print(json.dumps({"families": families, "samples": samples}))


if __name__ == "__main__":
    main()
