// A spam check with Rspamd from JavaScript: `fetch()` through the `http` capability.
//
// Posts each message to Rspamd's `/checkv2` with the envelope in Rspamd's protocol headers
// and answers by its `action`: `reject` 550 5.7.1 with Rspamd's message, `soft reject` and
// `greylist` 451 4.7.1, `add header` adds `X-Spam: Yes`; every message that passes gets
// `X-Spam-Score`. Rspamd down: the plugin's `[[plugin]] on_error` answer. Config:
//
//     url = "http://127.0.0.1:11333"
//
// and in the `[[plugin]]` table `capabilities = ["http"]`,
// `http_allow = ["http://127.0.0.1:11333"]`.

import { log } from 'wasmtp:plugin/log@0.2.3';
import { onError } from 'wasmtp:plugin/config@0.2.3';

/// Octets of the message read from the host at once.
const CHUNK = 256 * 1024;

let checkv2 = '';

const proceed = { tag: 'continue' };

// Reply text from Rspamd: one line of printable characters, bounded.
const oneLine = (text) => String(text).replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 200).trim();

// What the server answers when the scanner cannot be asked, as `on_error` says.
function unavailable(why) {
  log('warn', why);
  const reply = (code, enhanced) => ({ code, enhanced, text: 'spam scanner unavailable' });
  switch (onError()) {
    case 'continue':
      return { verdict: proceed, changes: [] };
    case 'reject':
      return { verdict: { tag: 'reject', val: reply(554, '5.3.0') }, changes: [] };
    default:
      return { verdict: { tag: 'tempfail', val: reply(451, '4.3.0') }, changes: [] };
  }
}

// The message as received (header section included), read in chunks.
function raw(message) {
  const size = Number(message.size());
  const whole = new Uint8Array(size);
  for (let offset = 0; offset < size; offset += CHUNK) {
    whole.set(message.raw(BigInt(offset), CHUNK), offset);
  }
  return whole;
}

export const hooks = {
  init(configJson) {
    const { url, ...rest } = JSON.parse(configJson);
    const unknown = Object.keys(rest);
    if (unknown.length) throw `unknown config key ${unknown[0]}`;
    if (!/^https?:\/\//.test(url ?? '')) throw `url: ${JSON.stringify(url)} is not an http(s) URL`;
    checkv2 = `${url.replace(/\/+$/, '')}/checkv2`;
    return ['data'];
  },

  // An async export: componentize-js runs the event loop until the promise settles.
  async onData(session, sender, recipients, message, auth) {
    const headers = new Headers({ IP: session.clientIp, From: sender.address });
    if (session.helo) headers.set('Helo', session.helo);
    if (session.authUser) headers.set('User', session.authUser);
    for (const rcpt of recipients) headers.append('Rcpt', rcpt);
    let scan;
    try {
      const response = await fetch(checkv2, { method: 'POST', headers, body: raw(message) });
      if (response.status !== 200) return unavailable(`rspamd at ${checkv2} answered HTTP ${response.status}`);
      scan = await response.json();
    } catch (e) {
      return unavailable(`rspamd at ${checkv2}: ${e}`);
    }
    const text = oneLine(scan.messages?.smtp_message ?? `spam score ${scan.score}`);
    switch (scan.action) {
      case 'reject':
        return { verdict: { tag: 'reject', val: { code: 550, enhanced: '5.7.1', text } }, changes: [] };
      case 'soft reject':
      case 'greylist':
        return { verdict: { tag: 'tempfail', val: { code: 451, enhanced: '4.7.1', text } }, changes: [] };
    }
    const score = Number(scan.score ?? 0).toFixed(2);
    const changes = [
      { tag: 'remove-header', val: 'X-Spam-Score' },
      { tag: 'add-header', val: { name: 'X-Spam-Score', value: score } },
    ];
    if (scan.action === 'add header') {
      changes.push({ tag: 'add-header', val: { name: 'X-Spam', value: 'Yes' } });
    }
    return { verdict: proceed, changes };
  },

  // Hooks not asked for in init are never called.
  onConnect: () => proceed,
  onHelo: () => proceed,
  onAuth: () => proceed,
  onMail: () => proceed,
  onRcpt: () => proceed,
  onVrfy: () => proceed,
  onExpn: () => proceed,
};
