#!/usr/bin/env python3
# Stands in for scripts/llamacpp_bench.py without llama-cpp-python (what it prints when the import fails).
print('{"status": "not installed", "message": "pip install llama-cpp-python"}')
