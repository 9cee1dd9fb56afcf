"""The local CLI (`python -m lambdas.mirror`): the planner and the copier in one process, against any registry."""
