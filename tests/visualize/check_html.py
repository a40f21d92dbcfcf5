"""Checks a timeline page written by `visualize --record`.

usage: check_html.py PAGE REPLICAS

The page must be well-formed XML (it is XHTML with inline SVG), self-contained (no script, no
link to anything outside), and hold one lane per replica, some message arrows and some commits.
"""
import re
import sys
import xml.etree.ElementTree as ElementTree

SVG = "{http://www.w3.org/2000/svg}"
XHTML = "{http://www.w3.org/1999/xhtml}"


def main(path, replicas):
    problems = []
    text = open(path, encoding="utf-8").read()
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as error:
        print(f"{path}: not well-formed XML: {error}")
        return 1
    if root.tag != XHTML + "html":
        problems.append(f"the root element is {root.tag}, not XHTML's html")
    lanes = [g for g in root.iter(SVG + "g") if g.get("class") == "lane"]
    if len(lanes) != replicas:
        problems.append(f"{len(lanes)} lanes, expected {replicas}")
    names = sorted(g.get("id") for g in lanes)
    if names != sorted(f"lane-S{i}" for i in range(1, replicas + 1)):
        problems.append(f"lanes named {names}")
    arrows = [line for g in root.iter(SVG + "g") if g.get("class") == "messages"
              for line in g.iter(SVG + "line")]
    if not arrows:
        problems.append("no message arrows")
    commits = [p for p in root.iter(SVG + "path") if "commits through" in "".join(p.itertext())]
    if not commits:
        problems.append("no commit marks")
    if list(root.iter(XHTML + "script")) or list(root.iter(SVG + "script")):
        problems.append("a script")
    outside = re.findall(r'(?:href|src)\s*=\s*"[^"#][^"]*"|url\((?!#)[^)]*\)|@import', text)
    if outside:
        problems.append(f"references outside the page: {outside[:3]}")
    for problem in problems:
        print(f"{path}: {problem}")
    if not problems:
        print(f"{path}: well-formed, {len(lanes)} lanes, {len(arrows)} arrows, "
              f"{len(commits)} commits")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
