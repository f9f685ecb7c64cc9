// A wasmtp policy plugin in JavaScript, built with componentize-js.
//
// Refuses recipients whose local part is in `blocked_users` at RCPT (550 5.1.1), counts
// messages per sender domain in the kv store, and tags each message with an
// `X-JS-Policy` header that also carries the server's DMARC result for the From domain.
// Config ([plugin.config]):
//
//     blocked_users = ["abuse-test"]

import { log } from 'wasmtp:plugin/log@0.2.3';
import { increment } from 'wasmtp:plugin/kv@0.2.3';

// One instance serves one SMTP session, so module state is per session.
let config = { blocked_users: [] };

const proceed = { tag: 'continue' };

export const hooks = {
  init(configJson) {
    const parsed = JSON.parse(configJson);
    for (const key of Object.keys(parsed)) {
      if (!(key in config)) throw `unknown config key ${key}`;
    }
    config = { ...config, ...parsed };
    return ['rcpt', 'data'];
  },

  onRcpt(session, sender, recipient, params, accepted) {
    const local = recipient.slice(0, recipient.lastIndexOf('@')).toLowerCase();
    if (config.blocked_users.includes(local)) {
      log('info', `refused ${recipient} for ${session.clientIp}`);
      return { tag: 'reject', val: { code: 550, enhanced: '5.1.1', text: `${recipient}: no such user here` } };
    }
    return proceed;
  },

  onData(session, sender, recipients, message, auth) {
    const domain = sender.address.slice(sender.address.lastIndexOf('@') + 1) || 'null-sender';
    const seen = increment(`domain:${domain}`, 1n, 86400n);
    const subject = message.header('Subject')[0] ?? '';
    return {
      verdict: proceed,
      changes: [
        {
          tag: 'add-header',
          val: {
            name: 'X-JS-Policy',
            value: `size=${message.size()}; subject-words=${subject.split(/\s+/).filter(Boolean).length}; domain-count=${seen}; dmarc=${auth.dmarc.status}${auth.dmarc.fromDomain ? ` from=${auth.dmarc.fromDomain}` : ''}`,
          },
        },
      ],
    };
  },

  // Hooks not asked for in init are never called.
  onConnect: () => proceed,
  onHelo: () => proceed,
  onAuth: () => proceed,
  onMail: () => proceed,
  onVrfy: () => proceed,
  onExpn: () => proceed,
};
