"""lmforge plugin package."""
