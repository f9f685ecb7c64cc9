//! The `message` resource handed to the data hook: the guest reads size, headers and body
//! slices from the host's copy; nothing is copied in unless asked for.

use super::bindings::types::Header;
use super::bindings::wasmtp::plugin::message::{Host, HostMessage};
use super::host::HostState;
use std::sync::Arc;
use wasmtime::component::Resource;

/// Upper bound for one `body` call, so a guest cannot make the host allocate without limit.
const MAX_SLICE: u32 = 1 << 20;
/// Header fields handed to plugins: the first `MAX_FIELDS`, from the first `MAX_HEADER`
/// octets of the header section (a message may have more; plugins see these).
const MAX_FIELDS: usize = 1000;
const MAX_HEADER: usize = 1 << 20;

pub struct MessageData {
    pub bytes: Arc<Vec<u8>>,
    /// Parsed once, at the first call that needs them.
    headers: std::sync::OnceLock<Vec<Header>>,
}

impl MessageData {
    pub fn new(bytes: Arc<Vec<u8>>) -> MessageData {
        MessageData {
            bytes,
            headers: Default::default(),
        }
    }

    /// Where the header section ends and the body begins (after the first empty line).
    fn split(&self) -> (usize, usize) {
        let b = &self.bytes;
        if let Some(i) = b.windows(4).position(|w| w == b"\r\n\r\n") {
            return (i + 2, i + 4);
        }
        if let Some(i) = b.windows(2).position(|w| w == b"\n\n") {
            return (i + 1, i + 2);
        }
        (b.len(), b.len())
    }

    /// Header fields in order, continuation lines unfolded (RFC 5322 2.2.3), within the
    /// bounds above; parsed once per message.
    pub fn headers(&self) -> &[Header] {
        self.headers.get_or_init(|| {
            let (end, _) = self.split();
            let text = String::from_utf8_lossy(&self.bytes[..end.min(MAX_HEADER)]);
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

    pub fn body(&self, offset: u64, length: u32) -> Vec<u8> {
        let (_, start) = self.split();
        let body = &self.bytes[start..];
        let from = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(body.len());
        let to = from
            .saturating_add(length.min(MAX_SLICE) as usize)
            .min(body.len());
        body[from..to].to_vec()
    }
}

impl Host for HostState {}

impl HostMessage for HostState {
    fn size(&mut self, m: Resource<MessageData>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&m)?.bytes.len() as u64)
    }

    fn headers(&mut self, m: Resource<MessageData>) -> wasmtime::Result<Vec<Header>> {
        Ok(self.table.get(&m)?.headers().to_vec())
    }

    /// Only the matching values are copied.
    fn header(&mut self, m: Resource<MessageData>, name: String) -> wasmtime::Result<Vec<String>> {
        Ok(self
            .table
            .get(&m)?
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
        Ok(self.table.get(&m)?.body(offset, length))
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
        let m = MessageData::new(Arc::new(
            b"Subject: a\r\n b\r\nX-A: 1\r\n\r\nbody text".to_vec(),
        ));
        let h = m.headers();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].value, "a b");
        assert_eq!(m.body(0, 4), b"body");
        assert_eq!(m.body(5, 100), b"text");
        assert_eq!(m.body(100, 10), b"");
    }

    #[test]
    fn header_parsing_is_bounded() {
        let mut msg = "X-F: v\r\n".repeat(5000).into_bytes();
        msg.extend_from_slice(b"\r\nbody");
        let m = MessageData::new(Arc::new(msg));
        assert_eq!(m.headers().len(), MAX_FIELDS);
    }
}
