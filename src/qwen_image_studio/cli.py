"""The `qwen-image-studio` console command and its subcommands."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import UserError
from .params.spec import SUBCOMMANDS


def _demo(args: argparse.Namespace) -> int:
    from .demo.workspace import create_demo

    paths = create_demo(Path(args.dir), seed=args.seed, force=args.force)
    print(f"demo workspace written to {Path(args.dir).resolve()}")
    for key, path in paths.items():
        print(f"  {key}: {path}")
    return 0


def _config(args: argparse.Namespace) -> int:
    from .params.cli import parse_args, to_argv
    from .params.config_files import document, load_config, save_config
    from .params.json_schema import form_schema
    from .params.validate import check_for_stage

    if args.action == "schema":
        print(json.dumps(form_schema(), ensure_ascii=False, indent=2))
        return 0
    if args.action == "from-cli":
        stage = SUBCOMMANDS[args.stage]
        config, _ = parse_args(stage, args.rest)
        if args.output:
            print(f"saved {save_config(config, args.output)}")
        else:
            print(json.dumps(document(config), ensure_ascii=False, indent=2))
        return 0
    config = load_config(args.file)
    if args.action == "validate":
        for name in args.stage or []:
            check_for_stage(config, SUBCOMMANDS[name])
        print(f"{args.file}: valid")
    elif args.action == "show":
        print(json.dumps(config.model_dump(mode="json"), ensure_ascii=False, indent=2))
    elif args.action == "to-cli":
        print(" ".join(to_argv(config, SUBCOMMANDS[args.stage[0] if args.stage else "train"])))
    return 0


def _dataset(args: argparse.Namespace) -> int:
    from .data.inspect import run_inspect

    return run_inspect(args.rest)


def _lora(args: argparse.Namespace) -> int:
    from .models.lora_convert import convert_lora

    out = convert_lora(args.input, args.output, args.to)
    print(f"wrote {out} ({args.to} form)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; stage subcommands forward their arguments untouched."""
    parser = argparse.ArgumentParser(prog="qwen-image-studio", description="Qwen-Image LoRA training studio.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, stage in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=f"run the {stage.value} stage (see `{name} --help`)", add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
    demo = sub.add_parser("demo", help="tiny demo models and dataset")
    demo_sub = demo.add_subparsers(dest="action", required=True)
    create = demo_sub.add_parser("create", help="write a demo workspace to DIR")
    create.add_argument("dir")
    create.add_argument("--seed", type=int, default=0)
    create.add_argument("--force", action="store_true", help="overwrite an existing demo in DIR")
    create.set_defaults(func=_demo)
    cfg = sub.add_parser("config", help="configuration files: validate, show, schema, convert")
    cfg.add_argument("action", choices=["validate", "show", "schema", "from-cli", "to-cli"])
    cfg.add_argument("file", nargs="?", help="configuration JSON (validate/show/to-cli); from-cli: the STAGE")
    cfg.add_argument(
        "--stage",
        action="append",
        choices=list(SUBCOMMANDS),
        help="validate: also check what this stage needs; to-cli: the stage",
    )
    cfg.add_argument("--output", help="from-cli: write the configuration here")
    cfg.add_argument("rest", nargs=argparse.REMAINDER, help="from-cli: the stage's command line")
    cfg.set_defaults(func=_config)
    ds = sub.add_parser("dataset", help="dataset tools: inspect CONFIG [--json] [--edit]")
    ds.add_argument("action", choices=["inspect"])
    ds.add_argument("rest", nargs=argparse.REMAINDER)
    ds.set_defaults(func=_dataset)
    lora = sub.add_parser("lora", help="LoRA file tools: convert IN OUT --to diffusers|comfyui")
    lora_sub = lora.add_subparsers(dest="action", required=True)
    conv = lora_sub.add_parser(
        "convert",
        help="rewrite a Qwen-Image LoRA in another key form (the trainer's file already loads in ComfyUI and "
        "diffusers; use this for tools that read PEFT keys only, or to bring a PEFT/diffusers LoRA to ComfyUI form)",
    )
    conv.add_argument("input", help="LoRA .safetensors (lora_unet_, diffusion_model. or transformer. keys)")
    conv.add_argument("output", help="the file to write")
    conv.add_argument(
        "--to",
        required=True,
        choices=["diffusers", "comfyui"],
        help="diffusers: PEFT transformer.X.lora_A/B (alpha folded in); comfyui: lora_unet_ + alpha",
    )
    conv.set_defaults(func=_lora)
    web = sub.add_parser("webui", help="start the web UI (same as python qwen_webui.py)", add_help=False)
    web.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in SUBCOMMANDS:
        from .stages.runner import main as run_stage

        return run_stage(SUBCOMMANDS[argv[0]], argv[1:])
    if argv and argv[0] == "webui":
        from .webui.main import main as webui_main

        return webui_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "config" and args.action == "from-cli":
        if args.file not in SUBCOMMANDS:
            parser.error(f"config from-cli needs STAGE ({', '.join(SUBCOMMANDS)}) and its flags")
        args.stage = args.file
    elif args.command == "config" and args.action in ("validate", "show", "to-cli") and not args.file:
        parser.error(f"config {args.action} needs a configuration file")
    try:
        return args.func(args)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
