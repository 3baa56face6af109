"""Outputs for people and other tools: console tables (cli/), ECS JSON lines (ecs.py)."""
