"""Outputs for people and other tools: findings as console tables and JSON lines (findings.py,
ECS names via ecs.py), the self-contained HTML report (html.py, templates/) and the evidence
chain of one finding or incident back to the stored rows and input files (explain.py)."""
