"""Lambda entry points: `mirror.handlers.planner.handler` and `mirror.handlers.copier.handler`."""
