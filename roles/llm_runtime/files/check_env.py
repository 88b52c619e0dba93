"""Import check of an llm-onprem Python environment.

Run by the llm_runtime role with the environment's own python before its
symlink is switched:  python check_env.py serve|quant cpu|gpu
Prints one JSON object; any import error ends it with a traceback and rc 1.
"""

import json
import os
import subprocess
import sys
import time


def main():
    kind, device = sys.argv[1], sys.argv[2]
    start = time.monotonic()
    info = {"kind": kind, "device": device, "prefix": sys.prefix, "python": "%d.%d.%d" % sys.version_info[:3]}

    import torch

    a = torch.arange(16, dtype=torch.float32).reshape(4, 4)
    info["torch"] = torch.__version__
    info["torch_ok"] = bool(torch.equal(a @ torch.eye(4), a))
    info["cuda"] = torch.version.cuda
    if device == "gpu":
        info["cuda_available"] = torch.cuda.is_available()
        info["cuda_devices"] = torch.cuda.device_count()
        info["cudnn"] = torch.backends.cudnn.version()
        try:
            nccl = torch.cuda.nccl.version()
            info["nccl"] = ".".join(str(x) for x in nccl) if isinstance(nccl, tuple) else str(nccl)
        except (AttributeError, RuntimeError) as exc:
            info["nccl"] = None
            info["nccl_error"] = str(exc)
        if info["cuda_devices"] > 0:
            b = a.to("cuda")
            info["cuda_ok"] = bool(torch.equal((b @ torch.eye(4, device="cuda")).cpu(), a))

    if kind == "serve":
        import vllm
        from vllm.platforms import current_platform

        info["vllm"] = vllm.__version__
        info["platform"] = current_platform.device_type
        cli = os.path.join(sys.prefix, "bin", "vllm")
        if os.path.exists(cli):
            run = subprocess.run([cli, "--version"], capture_output=True, text=True, timeout=900, check=False)
            lines = run.stdout.strip().splitlines()
            info["vllm_cli_rc"] = run.returncode
            info["vllm_cli"] = lines[-1] if lines else ""
            if run.returncode != 0:
                info["vllm_cli_error"] = run.stderr.strip().splitlines()[-3:]
    else:
        import compressed_tensors
        import llmcompressor
        import transformers

        info["llmcompressor"] = llmcompressor.__version__
        info["compressed_tensors"] = compressed_tensors.__version__
        info["transformers"] = transformers.__version__

    info["seconds"] = round(time.monotonic() - start, 1)
    print(json.dumps(info, sort_keys=True))


if __name__ == "__main__":
    main()
