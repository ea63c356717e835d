"""Subcommands of `shiftsr` that live in their own modules; registered in shiftsr.cli."""
