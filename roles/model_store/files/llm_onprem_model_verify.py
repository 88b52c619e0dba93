#!/usr/bin/python3
"""Re-hash the published model files and export the result for node-exporter's textfile collector.

Installed by the model_store role beside model_fetch.py and model_verify.py (the project's
module_utils, the same code the model_fetch module runs) and started by
llm-onprem-model-verify.timer:

    llm_onprem_model_verify.py --store /var/lib/llm-onprem/models \\
        --metrics-file /var/lib/prometheus/node-exporter/llm-onprem-model-verify.prom

Exit status: 0 every file matches its manifest, 1 a file is missing, of the wrong size or of
another sha256, 2 the run could not complete (details on stderr and in the journal).
"""

import argparse
import os
import sys

# Run as "python3 -I": the script's own directory is added explicitly, nothing else.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import model_verify  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="model store root (model_store_root)")
    parser.add_argument("--metrics-file", required=True, help="the .prom file to write (atomically)")
    args = parser.parse_args(argv)
    code, log = model_verify.run(args.store, args.metrics_file)
    for line in log:
        print(line, file=sys.stderr if line.startswith(("error:", "mismatch:")) else sys.stdout, flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
