"""lmforge-templates: the built-in chat templates of lmforge (``lmforge list`` names them)."""
