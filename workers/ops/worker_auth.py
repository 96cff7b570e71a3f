"""`opsq test-auth --workers`: the credentials each running worker holds, compared with this shell's.

Each worker answers the remote-control command of workers.credential_fingerprints with fingerprints only; the
same fingerprints of this process's settings tell whether a worker holds the same token, another one, or none.
A worker without the token the shell has (started before it was exported) or with another one (started before
it was rotated) is stale: its actions fail as auth, or act as someone else, until it is restarted."""

from __future__ import annotations

from typing import Any

from executors.registry import EXECUTORS
from workers.celery_app import app as celery_app
from workers.credential_fingerprints import CONTROL_COMMAND, held
from workers.ops.health import FAIL, OK, WARN, Check
from workers.settings import get_settings

RESTART = "restart it to read the current settings (docs/RUNBOOK.md, \"Authentication failed\")"


def ask_workers(app: Any = None, timeout: float = 2.0) -> dict[str, Any]:
    """node name -> its reply, from every worker that answers within `timeout` seconds."""
    replies = (app or celery_app).control.broadcast(CONTROL_COMMAND, reply=True, timeout=timeout) or []
    return {node: reply for answer in replies for node, reply in answer.items()}


def _compare(platform: str, mine: dict[str, Any], theirs: dict[str, Any]) -> Check | None:
    """One platform of one worker against this shell's settings; None when there is nothing to say (a platform
    that needs no token, with no credential on either side)."""
    problems: list[str] = []
    notes: list[str] = []
    for name, fp in mine["credentials"].items():
        other = theirs.get("credentials", {}).get(name)
        label = "token" if name == "token" else name
        if fp is not None and other is None:
            problems.append(f"no {label}, this shell has one ({fp}): a stale worker, started before it was set; "
                            + RESTART)
        elif fp is not None and other != fp:
            problems.append(f"{label} {other} differs from this shell's ({fp}): a stale worker, started before it "
                            "changed, or another configuration; " + RESTART)
        elif fp is None and other is not None:
            notes.append(f"{label} {other}; this shell has none to compare (export it here)")
        elif fp is not None:
            notes.append(f"{label} {fp}, the same as this shell's")
        elif name == "token" and EXECUTORS[platform].needs_token:
            notes.append("no token here nor in the worker: its actions fail as auth (opsq validate-env)")
    if theirs.get("base_url") != mine["base_url"]:
        notes.append(f"calls {theirs.get('base_url')}, this shell's settings say {mine['base_url']}")
    if problems:
        return Check(platform, FAIL, "; ".join(problems + notes))
    if not notes:
        return None
    same = all(n.endswith("the same as this shell's") for n in notes)
    return Check(platform, OK if same else WARN, "; ".join(notes))


def worker_credentials(platforms: list[str] | None = None, app: Any = None, timeout: float = 2.0) -> list[Check]:
    """Per worker that answers, a line naming it (host, pid), then one per platform whose queue it consumes."""
    mine = held(get_settings())
    wanted = list(mine) if platforms is None else platforms
    for platform in wanted:
        if platform not in mine:
            raise ValueError(f"unknown platform {platform!r} (known: {', '.join(mine)})")
    replies = ask_workers(app, timeout)
    if not replies:
        return [Check("workers", FAIL, f"no worker answered within {timeout:g} s (none running on this Redis? "
                                       "start one: opsq worker; opsq health lists them)")]
    out: list[Check] = []
    for node, reply in sorted(replies.items()):
        if not isinstance(reply, dict) or "platforms" not in reply:
            why = reply.get("error") if isinstance(reply, dict) else reply
            out.append(Check(node, FAIL, f"cannot tell its credentials ({why}): an older opsqueue? upgrade and "
                                         "restart it"))
            continue
        queues = set(reply.get("queues", []))
        consumed = [p for p in wanted if p in queues]
        out.append(Check(node, OK, f"host {reply.get('hostname')}, pid {reply.get('pid')}, "
                                   f"consumes {', '.join(consumed) or 'none of these platforms'}"))
        for platform in consumed:
            check = _compare(platform, mine[platform], reply["platforms"].get(platform, {}))
            if check is not None:
                out.append(Check(f"{node} {platform}", check.status, check.detail))
    return out
