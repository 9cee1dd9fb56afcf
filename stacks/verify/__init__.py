"""`make verify`: prove the deployed mirror works in this account, one line per check, OK or what to fix.

    python -m stacks.verify --config mirror.yaml [--build] [--region REGION]

cli.py reads the command line and runs the checks in order; each check is a module of its own: stack.py (the stack,
its cache rules, the Docker Hub secret), planner.py (the planner and the images in ECR), alarm.py (the alarm topic),
members.py (the organization's StackSet), build.py (--build). They return checks.py's Check line and make their
AWS clients with clients.py; none imports cli.py or another check.
"""
