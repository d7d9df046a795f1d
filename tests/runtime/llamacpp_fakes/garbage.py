#!/usr/bin/env python3
# Stands in for a llama.cpp side that crashed: no JSON, non-zero exit.
import sys

print("Segmentation fault (pretend)")
sys.exit(139)
