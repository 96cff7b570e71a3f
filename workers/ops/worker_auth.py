"""`opsq test-auth --workers`: the credentials each running worker holds, compared with this shell's.

Each worker answers the remote-control command of workers.credential_fingerprints with fingerprints keyed by a
nonce sent with this one question (never printed): the same fingerprints of this process's settings, under the
same nonce, tell whether a worker holds the same token, another one, or none. The secrets a person chooses (webhook
signing keys, the proxy's URL) are compared the same way, and what their executor lets be shown of them (set, how
many, host:port) is printed beside the fingerprint. A worker without the token the shell has (started before it was
exported) or with another one (started before it was rotated) is stale: its actions fail as auth, act as someone
else, or sign with a key the receiver no longer accepts, until it is restarted. Platforms not in OPSQ_PLATFORMS are
one line each, not compared."""

from __future__ import annotations

from typing import Any

from executors.registry import EXECUTORS
from workers.celery_app import app as celery_app
from workers.credential_fingerprints import CONTROL_COMMAND, KEYED, NONCE_ARGUMENT, held, new_nonce
from workers.ops.health import FAIL, OK, WARN, Check
from workers.settings import get_settings

RESTART = "restart it to read the current settings (docs/RUNBOOK.md, \"Authentication failed\")"
SAME = "the same as this shell's"


def ask_workers(nonce: str, app: Any = None, timeout: float = 2.0) -> dict[str, Any]:
    """node name -> its reply, from every worker that answers within `timeout` seconds."""
    replies = (app or celery_app).control.broadcast(CONTROL_COMMAND, arguments={NONCE_ARGUMENT: nonce}, reply=True,
                                                    timeout=timeout) or []
    return {node: reply for answer in replies for node, reply in answer.items()}


def _labelled(fp: str | None, shown: str | None) -> str:
    """A fingerprint with what its executor lets be shown of the secret ("a1b2c3d4 (proxy.corp:3128, password
    set)"), for reading: the fingerprint alone decides."""
    return f"{fp} ({shown})" if shown else str(fp)


def _compare(platform: str, mine: dict[str, Any], theirs: dict[str, Any]) -> Check | None:
    """One platform of one worker against this shell's settings (both fingerprinted under one nonce); None when
    there is nothing to say (a platform that needs no token, with no credential on either side)."""
    problems: list[str] = []
    notes: list[tuple[str, bool]] = []  # (text, whether it says "the same as this shell's")
    credentials, shown = theirs.get("credentials", {}), theirs.get("shown", {})
    for name, fp in mine["credentials"].items():
        other = credentials.get(name)
        if name not in credentials and name in shown:
            # An opsqueue from before these were fingerprinted: its `shown` alone cannot tell a rotated key.
            problems.append(f"{name} cannot be compared (it sends no fingerprint of it: an older opsqueue? upgrade "
                            "and restart it)")
            continue
        ours = _labelled(fp, mine.get("shown", {}).get(name))
        if fp is not None and other is None:
            problems.append(f"no {name}, this shell has one ({ours}): a stale worker, started before it was set; "
                            + RESTART)
        elif fp is not None and other != fp:
            problems.append(f"{name} {_labelled(other, shown.get(name))} differs from this shell's ({ours}): a stale "
                            "worker, started before it changed, or another configuration; " + RESTART)
        elif fp is None and other is not None:
            notes.append((f"{name} {_labelled(other, shown.get(name))}; this shell has none to compare (export it "
                          "here)", False))
        elif fp is not None:
            notes.append((f"{name} {ours}, {SAME}", True))
        elif name == "token" and EXECUTORS[platform].needs_token:
            notes.append(("no token here nor in the worker: its actions fail as auth (opsq validate-env)", False))
    if theirs.get("base_url") != mine["base_url"]:
        notes.append((f"calls {theirs.get('base_url')}, this shell's settings say {mine['base_url']}", False))
    if problems:
        return Check(platform, FAIL, "; ".join(problems + [text for text, _ in notes]))
    if not notes:
        return None
    return Check(platform, OK if all(same for _, same in notes) else WARN, "; ".join(text for text, _ in notes))


def worker_credentials(platforms: list[str] | None = None, app: Any = None, timeout: float = 2.0) -> list[Check]:
    """Per worker that answers, a line naming it (host, pid), then one per platform whose queue it consumes; first,
    one line per platform asked about that is not in OPSQ_PLATFORMS (not compared)."""
    settings = get_settings()
    nonce = new_nonce()
    mine = held(settings, nonce)
    wanted = list(mine) if platforms is None else platforms
    for platform in wanted:
        if platform not in mine:
            raise ValueError(f"unknown platform {platform!r} (known: {', '.join(mine)})")
    out = [Check(p, OK, "not used (not in OPSQ_PLATFORMS): not compared") for p in wanted if not settings.uses(p)]
    wanted = [p for p in wanted if settings.uses(p)]
    replies = ask_workers(nonce, app, timeout)
    if not replies:
        return [*out, Check("workers", FAIL, f"no worker answered within {timeout:g} s (none running on this "
                                             "Redis? start one: opsq worker; opsq health lists them)")]
    for node, reply in sorted(replies.items()):
        if not isinstance(reply, dict) or "platforms" not in reply or not reply.get(KEYED):
            why = reply if not isinstance(reply, dict) else reply.get("error", "its fingerprints are not keyed")
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
