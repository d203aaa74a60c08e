"""Fine-tune Llama 3.1 8B Instruct into a Bengali counselor with QLoRA (4-bit NF4 + LoRA).

  python bengali_empathy_finetuner.py                    # the real run: corpus in data/, HF_TOKEN set, CUDA GPU
  python bengali_empathy_finetuner.py --preset full      # whole corpus, 3 epochs, LoRA r32, early stopping
  python bengali_empathy_finetuner.py --preset demo      # embedded 135M model on sample data, CPU, minutes
  python bengali_empathy_finetuner.py --config run.yaml --max-steps 100 --resume
  python bengali_empathy_finetuner.py --preset demo --export merged --adapter outputs/demo --out outputs/demo-merged --verify
  python bengali_empathy_finetuner.py --export gguf --adapter DIR --out DIR2     # + Ollama Modelfile (needs llama.cpp)

Preference tuning on top of the fine-tuned adapter (people's ratings and comparisons, or data/preferences.jsonl):
  python bengali_empathy_finetuner.py --stage dpo --preference-data prefs.jsonl --adapter outputs/llama31_bengali_empathy
  python bengali_empathy_finetuner.py --stage kto --preference-data outputs/feedback.db   # the feedback database

Outputs go to --output-dir: the adapter, tokenizer, resolved config, data splits and manifest, and one
record appended to outputs/llama_empathy_experiments_experiments.jsonl.
"""

import dataclasses

from bengali_empathy.cli import main_guard, make_parser, user_path
from bengali_empathy.config import config_from_args
from bengali_empathy.errors import ConfigError


def main() -> int | None:
    from bengali_empathy.export import add_export_args

    parser = make_parser(__doc__)
    add_export_args(parser)  # also --adapter: the adapter to export, or the one --stage kto/dpo starts from
    args = parser.parse_args()
    cfg = config_from_args(args)
    if args.export:
        from bengali_empathy.export import run_export

        return run_export(args, cfg)
    if args.out or args.verify:
        raise ConfigError("--out and --verify go with --export merged|gguf")
    if cfg.stage == "sft":
        if args.adapter or cfg.preference_data:
            raise ConfigError("--adapter and --preference-data go with --stage kto or dpo (or --adapter with "
                              "--export); --stage sft (the default) trains a new adapter on --data")
        from bengali_empathy import train  # heavy imports (torch, transformers) after the flags are checked

        train.run(cfg)
        return None
    if args.adapter:
        explicit = cfg.explicit_keys
        cfg = dataclasses.replace(cfg, adapter=str(user_path(args.adapter)))
        cfg.explicit_keys = explicit | {"adapter"}
    from bengali_empathy import train_prefs

    train_prefs.run(cfg)
    return None


if __name__ == "__main__":
    main_guard(main)
