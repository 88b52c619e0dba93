#!/usr/bin/env python3
"""Count what each molecule scenario proves, so a faster suite can show it proves no less.

For every molecule/<scenario>/ it prints the test sequence, the testinfra test
cases (each parametrized case counted once per parameter set, as pytest
collects them) and the Ansible assertions (the ansible.builtin.assert tasks in the
scenario's playbooks and task files; failed_when conditions are not counted). `--json` prints the same as JSON, for
comparing two checkouts:

    tools/scenario-proofs.py > after.txt
    git stash; tools/scenario-proofs.py > before.txt; git stash pop
"""
import argparse
import ast
import json
import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent


def testinfra_cases(scenario):
    total = 0
    for path in sorted((scenario / "tests").glob("test_*.py")):
        tree = ast.parse(path.read_text())
        names = {}
        for node in tree.body:
            if isinstance(node, ast.Assign) and isinstance(node.value, (ast.List, ast.Tuple)):
                for target in node.targets:
                    if isinstance(target, ast.Name):
                        names[target.id] = len(node.value.elts)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
                cases = 1
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call) and getattr(deco.func, "attr", "") == "parametrize":
                        values = deco.args[1]
                        if isinstance(values, (ast.List, ast.Tuple)):
                            cases *= len(values.elts)
                        elif isinstance(values, ast.Name):
                            cases *= names.get(values.id, 1)
                total += cases
    return total


def assert_tasks(node):
    if isinstance(node, dict):
        found = int("ansible.builtin.assert" in node or "assert" in node)
        return found + sum(assert_tasks(v) for v in node.values())
    if isinstance(node, list):
        return sum(assert_tasks(v) for v in node)
    return 0


def ansible_asserts(scenario):
    total = 0
    for path in sorted(scenario.rglob("*.yml")):
        if path.name == "molecule.yml" or "group_vars" in path.parts:
            continue
        try:
            total += assert_tasks(yaml.safe_load(path.read_text()))
        except yaml.YAMLError:
            continue
    return total


def sequence(scenario):
    config = yaml.safe_load((scenario / "molecule.yml").read_text()) or {}
    return config.get("scenario", {}).get("test_sequence", ["(molecule default)"])


def collect():
    rows = []
    for scenario in sorted(p for p in (ROOT / "molecule").iterdir() if (p / "molecule.yml").exists()):
        stage = scenario / "stage"
        rows.append({
            "scenario": scenario.name,
            "starts_from": stage.read_text().strip() if stage.exists() else "test-host image",
            "steps": sequence(scenario),
            "testinfra_cases": testinfra_cases(scenario),
            "assert_tasks": ansible_asserts(scenario),
        })
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    rows = collect()
    if args.json:
        json.dump(rows, sys.stdout, indent=1)
        print()
        return 0
    print("| scenario | starts from | steps | testinfra cases | assert tasks |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| %s | %s | %s | %d | %d |" % (row["scenario"], row["starts_from"], ", ".join(row["steps"]),
                                            row["testinfra_cases"], row["assert_tasks"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
