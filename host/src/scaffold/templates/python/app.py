"""{{name}}: a wasmtp policy plugin. At MAIL it refuses senders from `blocked_domain`
(550 5.7.1); every other sender goes on to the next plugin. Config ([plugin.config]):

    blocked_domain = "blocked.invalid"

Build: componentize-py -d wit -w plugin componentize app -o {{wasm}}
Try:   wasmtp plugin test {{wasm}} --from a@example.com --to b@example.net
"""

import json

from wit_world import exports
from wit_world.imports import log, types
from wit_world.imports.types import DataResult, DataVerdict_Continue, Hook, Reply, Verdict_Continue, Verdict_Reject
from componentize_py_types import Err

# One instance serves one SMTP session, so module state is per session.
CONFIG = {"blocked_domain": "blocked.invalid"}


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
        # The hooks it is called at; add more and implement them below.
        return [Hook.MAIL]

    def on_mail(self, session, sender, spf):
        domain = sender.address.rpartition("@")[2]
        if domain.lower() == CONFIG["blocked_domain"].lower():
            log.log(types.Level.INFO, f"refused {sender.address} from {session.client_ip}")
            return Verdict_Reject(Reply(550, "5.7.1", f"Mail from {domain} is not accepted here"))
        return Verdict_Continue()

    # Hooks not asked for in init are never called.
    def on_connect(self, session):
        return Verdict_Continue()

    def on_helo(self, session, name, extended):
        return Verdict_Continue()

    def on_auth(self, session, mechanism, user, success):
        return Verdict_Continue()

    def on_rcpt(self, session, sender, recipient, params, accepted):
        return Verdict_Continue()

    def on_data(self, session, sender, recipients, message, auth):
        return DataResult(DataVerdict_Continue(), [])

    def on_vrfy(self, session, argument):
        return Verdict_Continue()

    def on_expn(self, session, argument):
        return Verdict_Continue()
