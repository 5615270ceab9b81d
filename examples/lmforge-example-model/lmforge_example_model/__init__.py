"""An example lmforge model plugin: the OLMo 2 architecture for the pytorch engine."""
