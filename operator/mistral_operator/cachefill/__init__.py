"""The program that runs inside cache-fill Jobs on GPU nodes."""
