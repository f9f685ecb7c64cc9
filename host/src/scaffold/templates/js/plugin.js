// {{name}}: a wasmtp policy plugin. At MAIL it refuses senders from `blocked_domain`
// (550 5.7.1); every other sender goes on to the next plugin. Config ([plugin.config]):
//
//     blocked_domain = "blocked.invalid"
//
// Build: npm install && npm run build
// Try:   wasmtp plugin test {{wasm}} --from a@example.com --to b@example.net

import { log } from 'wasmtp:plugin/log@0.2.3';

// One instance serves one SMTP session, so module state is per session.
let config = { blocked_domain: 'blocked.invalid' };

const proceed = { tag: 'continue' };

export const hooks = {
  init(configJson) {
    const parsed = JSON.parse(configJson);
    for (const key of Object.keys(parsed)) {
      if (!(key in config)) throw `unknown config key ${key}`;
    }
    config = { ...config, ...parsed };
    // The hooks it is called at; add more and implement them below.
    return ['mail'];
  },

  onMail(session, sender, spf) {
    const domain = sender.address.slice(sender.address.lastIndexOf('@') + 1);
    if (domain.toLowerCase() === config.blocked_domain.toLowerCase()) {
      log('info', `refused ${sender.address} from ${session.clientIp}`);
      return { tag: 'reject', val: { code: 550, enhanced: '5.7.1', text: `Mail from ${domain} is not accepted here` } };
    }
    return proceed;
  },

  // Hooks not asked for in init are never called.
  onConnect: () => proceed,
  onHelo: () => proceed,
  onAuth: () => proceed,
  onRcpt: () => proceed,
  onData: () => ({ verdict: proceed, changes: [] }),
  onVrfy: () => proceed,
  onExpn: () => proceed,
};
