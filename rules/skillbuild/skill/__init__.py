"""SKILL.md itself: parse and render, the gates, prompts and schemas."""
