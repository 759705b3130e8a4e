"""Create one RabbitMQ user per taskcore role with the permissions in permissions.json.

    TASKCORE_BROKER_PASSWORD_TOPOLOGY=... TASKCORE_BROKER_PASSWORD_API=... \\
    TASKCORE_BROKER_PASSWORD_EXECUTOR=... TASKCORE_BROKER_PASSWORD_AGGREGATOR=... \\
    TASKCORE_BROKER_PASSWORD_EVENT_BRIDGE=... \\
    python deploy/rabbitmq/create_service_users.py --vhost taskcore

Run it where `rabbitmqctl` reaches the broker (on a node, or in its container). Users are
`taskcore-<role>`; an existing user gets its password changed. Passwords come from the
environment only, and are never printed (rabbitmqctl 3.10 takes them as an argument, so
run this on a host where other users cannot list your processes). `--dry-run` prints the
permissions it would set. See deploy/README.md, "Broker: a user per service".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

PERMISSIONS = Path(__file__).with_name("permissions.json")


def roles() -> dict[str, dict[str, str]]:
    loaded: dict[str, dict[str, str]] = json.loads(PERMISSIONS.read_text())
    return {role: p for role, p in loaded.items() if not role.startswith("_")}


def password_variable(role: str) -> str:
    return "TASKCORE_BROKER_PASSWORD_" + role.upper().replace("-", "_")


def ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vhost", default="/")
    parser.add_argument("--prefix", default="taskcore-")
    parser.add_argument("--dry-run", action="store_true")
    args = parser.parse_args()
    missing = [password_variable(r) for r in roles() if not os.environ.get(password_variable(r))]
    if missing and not args.dry_run:
        print(f"Set {', '.join(missing)} first.", file=sys.stderr)
        return 2
    existing = "" if args.dry_run else subprocess.run(
        ["rabbitmqctl", "-q", "list_users", "--no-table-headers"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout  # fmt: skip
    names = {line.split("\t")[0] for line in existing.splitlines()}
    for role, p in roles().items():
        user = f"{args.prefix}{role}"
        rights = f"configure {p['configure']} write {p['write']} read {p['read']}"
        print(f"{user} on {args.vhost}: {rights}")
        if args.dry_run:
            continue
        password = os.environ[password_variable(role)]
        ctl("change_password" if user in names else "add_user", user, password)
        ctl("set_permissions", "-p", args.vhost, user, p["configure"], p["write"], p["read"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
