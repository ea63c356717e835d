"""`python -m shiftsr ...` (and `accelerate launch -m shiftsr ...`): the shiftsr command."""
from shiftsr.cli import main

main(prog_name="shiftsr")
