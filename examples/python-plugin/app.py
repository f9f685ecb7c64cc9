"""A wasmtp policy plugin in Python, built with componentize-py.

Refuses senders from `blocked_domains` at MAIL (550 5.7.1), and senders whose SPF
result is `fail` (550 5.7.23, RFC 7372), and tags every accepted message with an
`X-Python-Policy` header at data, with its DKIM and DMARC results. Config ([plugin.config]):

    blocked_domains = ["spam.example"]
    tag = "checked"
"""

import json

from wit_world import exports
from wit_world.imports import log, types
from wit_world.imports.types import (
    AuthStatus,
    Change_AddHeader,
    DataResult,
    DataVerdict_Continue,
    Header,
    Hook,
    Reply,
    Verdict_Continue,
    Verdict_Reject,
)
from componentize_py_types import Err

# One instance serves one SMTP session, so module state is per session.
CONFIG = {"blocked_domains": [], "tag": "checked"}


class Hooks(exports.Hooks):
    def init(self, config_json: str):
        try:
            config = json.loads(config_json)
        except ValueError as e:
            raise Err(f"config is not JSON: {e}")
        unknown = set(config) - set(CONFIG)
        if unknown:
            raise Err(f"unknown config keys: {', '.join(sorted(unknown))}")
        CONFIG.update(config)
        CONFIG["blocked_domains"] = [d.lower() for d in CONFIG["blocked_domains"]]
        return [Hook.MAIL, Hook.DATA]

    def on_mail(self, session, sender, spf):
        domain = sender.address.rpartition("@")[2].lower()
        if domain in CONFIG["blocked_domains"]:
            log.log(types.Level.INFO, f"blocked sender {sender.address} from {session.client_ip}")
            return Verdict_Reject(Reply(550, "5.7.1", f"Mail from {domain} is not accepted here"))
        if spf.mail_from.status == AuthStatus.FAIL:
            why = spf.mail_from.explanation or f"{domain} does not allow {session.client_ip}"
            return Verdict_Reject(Reply(550, "5.7.23", f"SPF: {why}"))
        return Verdict_Continue()

    def on_data(self, session, sender, recipients, message, auth):
        subject = next(iter(message.header("Subject")), "")
        dkim = ",".join(f"{d.domain}:{d.status.name.lower()}" for d in auth.dkim) or "none"
        value = (
            f"{CONFIG['tag']}; recipients={len(recipients)}; subject-length={len(subject)}; "
            f"spf={auth.spf.mail_from.status.name.lower()}; dkim={dkim}; "
            f"dmarc={auth.dmarc.status.name.lower()}"
        )
        return DataResult(DataVerdict_Continue(), [Change_AddHeader(Header("X-Python-Policy", value))])

    # Hooks not asked for in init are never called.
    def on_connect(self, session):
        return Verdict_Continue()

    def on_helo(self, session, name, extended):
        return Verdict_Continue()

    def on_auth(self, session, mechanism, user, success):
        return Verdict_Continue()

    def on_rcpt(self, session, sender, recipient, params, accepted):
        return Verdict_Continue()

    def on_vrfy(self, session, argument):
        return Verdict_Continue()

    def on_expn(self, session, argument):
        return Verdict_Continue()
