"""Model definitions. Every module here registers its models with `edgeml.registry.register_model`
and is imported by the registry on first use."""
