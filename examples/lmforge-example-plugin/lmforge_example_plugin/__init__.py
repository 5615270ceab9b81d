"""An example lmforge plugin: the Alpaca chat template and an ``lmforge hello`` command."""
