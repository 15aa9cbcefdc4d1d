"""The exchange core: configuration, standards, the lake, sync runs and the ``govx`` CLI."""
