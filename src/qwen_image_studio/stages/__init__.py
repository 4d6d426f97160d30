"""One module per command (cache latents, cache text-encoder outputs, train, generate), run by `runner`.

A stage module exposes ``run(config: StudioConfig, args: argparse.Namespace, events: EventWriter) -> None``
and raises `UserError` for problems a user can fix.
"""
