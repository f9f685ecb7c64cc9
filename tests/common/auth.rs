//! Helpers of the sender-authentication tests (tests/mailauth.rs, tests/dkim.rs): the
//! outside DKIM signer and verifier (dkimpy), a gateway verifying with the test's DNS, and
//! reading back the header fields a delivered message got.

use super::dns::TestDns;
use super::sink::{Sink, SinkMessage};
use super::{Client, TestServer};
use std::path::Path;

/// The outside signer and verifier (dkimpy, from Debian's python3-dkim and python3-nacl).
pub const PYTHON: &str = "/usr/bin/python3";

pub fn dkim_tool(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/common/dkim_tool.py");
    let mut child = std::process::Command::new(PYTHON)
        .arg(script)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 with dkimpy (apt-get install python3-dkim python3-nacl)");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkim_tool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A key made by the outside tool; returns its TXT record.
pub fn outside_key(kind: &str, path: &Path) -> String {
    let txt = dkim_tool(&["keygen", kind, path.to_str().unwrap()], b"");
    String::from_utf8(txt).unwrap().trim().to_string()
}

/// The gateway: mail for example.test relayed to `sink`, our resolver the test's DNS,
/// `plugins` appended.
pub async fn gateway(dns: &TestDns, sink: &Sink, extra: &str) -> TestServer {
    TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n[dns]\nnameservers = [\"{}\"]\n\
         [authentication]\nverify = true\ntimeout = \"3s\"\n{}\n{extra}",
        dns.addr,
        sink.config_route("example.test", "none")
    ))
    .await
}

/// The echo plugin, then the bundled dmarc-policy plugin with `config` (TOML lines of its
/// `[plugin.config]`, or none).
pub fn echo_and_dmarc(config: &str) -> String {
    let config = if config.is_empty() {
        String::new()
    } else {
        format!("[plugin.config]\n{config}")
    };
    format!(
        "{}[[plugin]]\nname = \"dmarc\"\npath = \"bundled:dmarc-policy\"\n{config}",
        echo_plugin()
    )
}

pub fn echo_plugin() -> String {
    format!(
        "[[plugin]]\nname = \"echo\"\npath = \"{}/misbehave.wasm\"\ncapabilities = [\"kv\"]\n[plugin.config]\nmode = \"echo-auth\"\n",
        env!("WASMTP_PLUGIN_DIR")
    )
}

/// One message from `from` (MAIL FROM) with `content`; the final reply.
pub async fn send(s: &TestServer, helo: &str, from: &str, content: &[u8]) -> String {
    let mut c = Client::connect(s.addr()).await;
    c.cmd(&format!("EHLO {helo}"), "250").await;
    c.cmd(&format!("MAIL FROM:<{from}>"), "250").await;
    c.cmd("RCPT TO:<rcpt@example.test>", "250").await;
    c.cmd("DATA", "354").await;
    let mut data = content.to_vec();
    data.extend_from_slice(b".\r\n");
    c.send(&data).await;
    c.reply().await
}

/// The header section of a delivered message, unfolded: one field a line.
pub fn header_of(message: &str) -> Vec<String> {
    let head = message.split("\r\n\r\n").next().unwrap_or_default();
    let mut fields: Vec<String> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.push(' ');
                last.push_str(line.trim());
            }
        } else {
            fields.push(line.to_string());
        }
    }
    fields
}

/// The text of the delivered message that contains `marker` (its Subject line, say).
pub fn delivered(got: &[SinkMessage], marker: &str) -> String {
    got.iter()
        .map(|m| m.text())
        .find(|t| t.contains(marker))
        .unwrap_or_else(|| panic!("no delivered message with {marker:?}"))
}

/// The header fields of that message, unfolded.
pub fn delivered_fields(got: &[SinkMessage], marker: &str) -> Vec<String> {
    header_of(&delivered(got, marker))
}

pub fn field<'a>(fields: &'a [String], name: &str) -> Vec<&'a str> {
    fields
        .iter()
        .filter_map(|f| f.split_once(':'))
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

pub fn plain(from_header: &str, subject: &str) -> Vec<u8> {
    format!("From: {from_header}\r\nTo: rcpt@example.test\r\nSubject: {subject}\r\n\r\nHello.\r\n")
        .into_bytes()
}
