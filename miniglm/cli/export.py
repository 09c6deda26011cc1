"""`miniglm export`: a checkpoint as a Hugging Face model directory or a GGUF file (llama.cpp, Ollama).

    miniglm export runs/sft --out export/sft-hf                       # transformers directory, f32
    miniglm export runs/sft --out export/sft.gguf                     # GGUF (format from the suffix), f16
    miniglm export runs/sft --format gguf --dtype q8_0 --out sft-q8.gguf

RUN_DIR exports the run's best checkpoint (--checkpoint latest: its newest); a checkpoint directory
or a Hugging Face Llama directory is exported as it is. --format defaults to gguf when --out ends
in .gguf, else hf. dtypes: hf f32 (default), f16, bf16; gguf f32, f16 (default), q8_0. The output
is built beside the target and renamed into place; an existing target needs --overwrite.
Load the directory with AutoModelForCausalLM/AutoTokenizer.from_pretrained(DIR); run the GGUF
with llama.cpp (`llama-cli -m FILE --jinja` for the chat template) or an Ollama Modelfile.
"""

from __future__ import annotations

import sys
from pathlib import Path

from miniglm.cli.common import Parser

DEFAULT_DTYPE = {"hf": "f32", "gguf": "f16"}


def build_parser() -> Parser:
    p = Parser(prog="miniglm export", description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("source", metavar="RUN_OR_CHECKPOINT",
                   help="run directory, checkpoint directory, or Hugging Face Llama directory")
    p.add_argument("--out", required=True, metavar="PATH", help="the directory (hf) or .gguf file (gguf) to write")
    p.add_argument("--format", choices=["hf", "gguf"],
                   help="hf: transformers model directory; gguf: llama.cpp file (default: from --out's suffix)")
    p.add_argument("--dtype", metavar="DTYPE",
                   help="weight dtype: hf f32|f16|bf16 (default f32), gguf f32|f16|q8_0 (default f16)")
    p.add_argument("--checkpoint", choices=["best", "latest"], default="best",
                   help="which checkpoint of a run directory (default best)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Path(args.out)
    fmt = args.format or ("gguf" if out.suffix.lower() == ".gguf" else "hf")
    dtype = args.dtype or DEFAULT_DTYPE[fmt]
    from miniglm.export.output import ExportError

    if fmt == "hf":
        from miniglm.export.hf import HF_DTYPES as allowed
        from miniglm.export.hf import export_hf as write
    else:
        from miniglm.export.gguf import GGUF_DTYPES as allowed
        from miniglm.export.gguf import export_gguf as write
        from miniglm.extras import require

        require("gguf", "export")  # before loading anything: a missing package is a hint, not a traceback
    if dtype not in allowed:  # checked before the (slow) load, and again by the writer
        raise ExportError(f"--dtype {dtype} is not supported for --format {fmt} (choose from {', '.join(allowed)})")
    from miniglm.export.source import load_source

    src = load_source(args.source, which=args.checkpoint)
    path = write(src, out, dtype=dtype, overwrite=args.overwrite)
    m = src.loaded.model
    size = sum(f.stat().st_size for f in path.iterdir()) if path.is_dir() else path.stat().st_size
    print(f"{src.path} (step {src.loaded.meta.get('step')}, {m.num_params() / 1e6:.2f}M parameters) -> "
          f"{path} ({fmt}, {dtype}, {size / 1e6:.1f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
