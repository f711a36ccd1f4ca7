"""Former home of the DeepImageJ rules: they live in :mod:`bioimgzoo.validation.consumers.deepimagej`.

Kept so that ``from bioimgzoo.validation.deepimagej import check_deepimagej`` (the
exporter, older callers) goes on working; the rules are now those of
``shared/docs/consumer-rules.md``.
"""

from __future__ import annotations

from .consumers.deepimagej import (FIXES, RULES, TOOL, RuleResult, check_deepimagej, format_results, has_failures,
                                   rule_results, simulate)

FAMILY = TOOL.family

__all__ = ["RuleResult", "RULES", "FIXES", "FAMILY", "check_deepimagej", "format_results", "has_failures",
           "rule_results", "simulate"]
