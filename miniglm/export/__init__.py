"""Moving models in and out of MiniGLM: Hugging Face directories and GGUF files (llama.cpp, Ollama).

    source.py     what an export reads: a checkpoint, its run's config and eval report
    output.py     where an export goes: written beside the target, renamed into place
    hf.py         -> a `transformers` LlamaForCausalLM directory (config, weights, tokenizer, card)
    card.py       the model card (README.md) of that directory
    gguf.py       -> one GGUF file for llama.cpp / Ollama / LM Studio
    hf_import.py  <- a Hugging Face Llama directory, read as a checkpoint (`--init-from`, `sample`)

`miniglm export` is the command (`miniglm/cli/export.py`). `transformers` and `gguf` are imported
lazily through `miniglm.extras.require`, so the import side (`hf_import`) needs neither.
"""
