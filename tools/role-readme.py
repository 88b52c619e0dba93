#!/usr/bin/env python3
"""Keep each role's README variable table in step with meta/argument_specs.yml.

The table sits between the markers
    <!-- BEGIN ARGUMENT SPECS -->  and  <!-- END ARGUMENT SPECS -->
in roles/<role>/README.md. `--check` exits 1 when a table is stale (the lint
stage of the test suite runs it); without it the tables are rewritten.
"""
import argparse
import pathlib
import sys

import yaml

BEGIN = "<!-- BEGIN ARGUMENT SPECS -->"
END = "<!-- END ARGUMENT SPECS -->"
ROOT = pathlib.Path(__file__).resolve().parent.parent


def cell(text):
    return str(text).replace("|", "\\|").replace("\n", " ")


def render(spec):
    rows = ["| variable | type | default | description |", "|---|---|---|---|"]
    for name, opt in sorted(spec.get("options", {}).items()):
        default = opt.get("default", "(required)" if opt.get("required") else "")
        if "choices" in opt:
            kind = "%s, one of %s" % (opt.get("type", "str"), ", ".join(map(str, opt["choices"])))
        else:
            kind = opt.get("type", "str")
        desc = opt.get("description", "")
        if isinstance(desc, list):
            desc = " ".join(desc)
        shown = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
        rows.append("| `%s` | %s | `%s` | %s |" % (name, cell(kind), cell(shown), cell(desc)))
    return "\n".join(rows)


def update(role_dir, check):
    specs = yaml.safe_load((role_dir / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    readme = role_dir / "README.md"
    text = readme.read_text() if readme.exists() else ""
    if BEGIN not in text or END not in text:
        print("%s: no %s ... %s markers" % (readme.relative_to(ROOT), BEGIN, END))
        return False
    head, rest = text.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    body = "\n\n".join(render(specs[ep]) if ep == "main" else "Entry point `%s`:\n\n%s" % (ep, render(specs[ep])) for ep in specs)
    new = "%s%s\n%s\n%s%s" % (head, BEGIN, body, END, tail)
    if new == text:
        return True
    if check:
        print("%s: variable table is stale; run tools/role-readme.py" % readme.relative_to(ROOT))
        return False
    readme.write_text(new)
    print("updated %s" % readme.relative_to(ROOT))
    return True


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check, exit 1 when stale")
    args = parser.parse_args()
    ok = all([update(d, args.check) for d in sorted((ROOT / "roles").iterdir()) if (d / "meta" / "argument_specs.yml").exists()])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
