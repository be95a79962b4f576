"""CLI verbs: one module per verb, each with `register(subparsers)`; `edgeml.cli` discovers them.

A verb is a thin shell: it parses arguments and calls one importable function."""
