//! The `message` resource handed to the data hook: the guest reads size, headers and body
//! slices; nothing is copied in unless asked for, and the body is read from the spool.

use super::bindings::types::Header;
use super::bindings::wasmtp::plugin::message::{Host, HostMessage};
use super::host::HostState;
use crate::spool::Content;
use bytes::Bytes;
use std::sync::Arc;
use wasmtime::component::Resource;

/// Upper bound for one `body` call, so a guest cannot make the host allocate without limit.
const MAX_SLICE: u32 = 1 << 20;
/// Header fields handed to plugins: the first `MAX_FIELDS` (a message may have more;
/// plugins see these). The header section itself is at most `header::HEADER_MAX`.
const MAX_FIELDS: usize = 1000;

/// The message at the data hook, shared by every plugin that reads it: its header section
/// in memory, its body where the spool has it (read in slices: nothing per plugin or per
/// call copies the whole message).
pub struct Message {
    /// The header section, with the empty line that ends it.
    header: Bytes,
    body: Content,
    /// Parsed once, at the first call that needs them.
    headers: std::sync::OnceLock<Vec<Header>>,
}

impl Message {
    pub fn new(header: Bytes, body: Content) -> Arc<Message> {
        Arc::new(Message {
            header,
            body,
            headers: Default::default(),
        })
    }

    /// A whole message (`wasmtp plugin test --message`): split where its body starts.
    pub fn parse(bytes: Vec<u8>) -> Arc<Message> {
        let bytes = Bytes::from(bytes);
        let start = crate::proto::header::body_start(&bytes).unwrap_or(bytes.len());
        Message::new(bytes.slice(..start), Content::from(bytes.slice(start..)))
    }

    pub fn size(&self) -> u64 {
        self.header.len() as u64 + self.body.len()
    }

    /// Header fields in order, continuation lines unfolded (RFC 5322 2.2.3), the first
    /// `MAX_FIELDS`; parsed once per message.
    pub fn headers(&self) -> &[Header] {
        self.headers.get_or_init(|| {
            let text = String::from_utf8_lossy(&self.header);
            let mut out: Vec<Header> = Vec::new();
            for line in text.split('\n').map(|l| l.trim_end_matches('\r')) {
                if line.starts_with([' ', '\t']) {
                    if let Some(last) = out.last_mut() {
                        last.value.push(' ');
                        last.value.push_str(line.trim());
                    }
                } else if let Some((name, value)) = line.split_once(':') {
                    if out.len() == MAX_FIELDS {
                        break;
                    }
                    out.push(Header {
                        name: name.trim().to_string(),
                        value: value.trim().to_string(),
                    });
                }
            }
            out
        })
    }

    /// Up to `length` octets of the body from `offset` (at most `MAX_SLICE`).
    pub fn body(&self, offset: u64, length: u32) -> std::io::Result<Vec<u8>> {
        self.body.read_at(offset, length.min(MAX_SLICE) as usize)
    }
}

impl Message {
    /// Up to `length` octets (at most `MAX_SLICE`) of the message as received, header
    /// section included, from `offset`.
    pub fn raw(&self, offset: u64, length: u32) -> std::io::Result<Vec<u8>> {
        let want = length.min(MAX_SLICE) as usize;
        let header = self.header.len() as u64;
        let mut out = Vec::new();
        if offset < header {
            let start = offset as usize;
            let end = (start + want).min(self.header.len());
            out.extend_from_slice(&self.header[start..end]);
        }
        if out.len() < want {
            let from = offset.saturating_sub(header);
            out.extend(self.body.read_at(from, want - out.len())?);
        }
        Ok(out)
    }
}

/// The `message` resource: one per plugin call, all of them on the same `Message`.
pub struct MessageData(pub Arc<Message>);

impl Host for HostState {}

impl HostMessage for HostState {
    fn size(&mut self, m: Resource<MessageData>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&m)?.0.size())
    }

    fn headers(&mut self, m: Resource<MessageData>) -> wasmtime::Result<Vec<Header>> {
        Ok(self.table.get(&m)?.0.headers().to_vec())
    }

    /// Only the matching values are copied.
    fn header(&mut self, m: Resource<MessageData>, name: String) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .table
            .get(&m)?
            .0
            .headers()
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(&name))
            .map(|h| h.value.clone())
            .collect())
    }

    fn body(
        &mut self,
        m: Resource<MessageData>,
        offset: u64,
        length: u32,
    ) -> wasmtime::Result<Vec<u8>> {
        // A part of the body the spool cannot read (damage) fails the call: a host fault.
        Ok(self.table.get(&m)?.0.body(offset, length)?)
    }

    fn raw(
        &mut self,
        m: Resource<MessageData>,
        offset: u64,
        length: u32,
    ) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&m)?.0.raw(offset, length)?)
    }

    fn drop(&mut self, m: Resource<MessageData>) -> wasmtime::Result<()> {
        self.table.delete(m)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_body() {
        let m = Message::parse(b"Subject: a\r\n b\r\nX-A: 1\r\n\r\nbody text".to_vec());
        let h = m.headers();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].value, "a b");
        assert_eq!(m.size(), 35);
        assert_eq!(m.body(0, 4).unwrap(), b"body");
        assert_eq!(m.body(5, 100).unwrap(), b"text");
        assert_eq!(m.body(100, 10).unwrap(), b"");
        let whole = b"Subject: a\r\n b\r\nX-A: 1\r\n\r\nbody text";
        assert_eq!(m.raw(0, 100).unwrap(), whole);
        assert_eq!(m.raw(20, 10).unwrap(), &whole[20..30]);
        assert_eq!(m.raw(31, 10).unwrap(), b"text");
        assert_eq!(m.raw(35, 10).unwrap(), b"");
    }

    #[test]
    fn header_parsing_is_bounded() {
        let mut msg = "X-F: v\r\n".repeat(5000).into_bytes();
        msg.extend_from_slice(b"\r\nbody");
        let m = Message::parse(msg);
        assert_eq!(m.headers().len(), MAX_FIELDS);
        assert_eq!(m.body(0, 10).unwrap(), b"body");
    }
}
