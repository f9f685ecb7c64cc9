//! The PROXY protocol (HAProxy's spec, v1 text and v2 binary, parsed by the `ppp` crate) on
//! a listener with `proxy_protocol = true`: a balancer in front of us says, before the
//! greeting, whose connection it passes on. Read exactly (what follows is the client's),
//! within `TIMEOUT`; only from a peer in `proxy_from`. Anything else closes the connection.

use ppp::{HeaderResult, PartialResult, v1, v2};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// How long a balancer may take to send the header.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The longest header taken: v1's are at most 107 octets; v2's are 16 and the addresses,
/// with room for the TLVs a balancer adds (which we ignore).
const MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no PROXY header within {TIMEOUT:?}")]
    Timeout,
    #[error("not a PROXY header: {0}")]
    Malformed(String),
    #[error("a PROXY header longer than {MAX} octets")]
    TooLong,
    #[error("the connection closed before the PROXY header ended")]
    Closed,
    #[error("reading the PROXY header: {0}")]
    Io(#[from] std::io::Error),
}

/// What a complete header says.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// `len` octets long; the client's address, or `None` for a connection of the balancer's
    /// own (v2 LOCAL, v1 UNKNOWN: a health check), which keeps the peer's.
    Header {
        len: usize,
        client: Option<SocketAddr>,
    },
    /// A prefix of a header: more is needed.
    More,
    Bad(String),
}

fn parse(input: &[u8]) -> Parsed {
    let result = HeaderResult::parse(input);
    if result.is_incomplete() {
        return Parsed::More;
    }
    match result {
        HeaderResult::V1(Ok(h)) => Parsed::Header {
            len: h.header.len(),
            client: match h.addresses {
                v1::Addresses::Tcp4(a) => Some((a.source_address, a.source_port).into()),
                v1::Addresses::Tcp6(a) => Some((a.source_address, a.source_port).into()),
                v1::Addresses::Unknown => None,
            },
        },
        HeaderResult::V2(Ok(h)) => Parsed::Header {
            len: h.len(),
            client: match (h.command, h.addresses) {
                (v2::Command::Local, _) => None,
                (_, v2::Addresses::IPv4(a)) => Some((a.source_address, a.source_port).into()),
                (_, v2::Addresses::IPv6(a)) => Some((a.source_address, a.source_port).into()),
                // Not an IP connection (a Unix socket, UDP): the balancer speaks for itself.
                (_, v2::Addresses::Unix(_) | v2::Addresses::Unspecified) => None,
            },
        },
        HeaderResult::V1(Err(e)) => Parsed::Bad(e.to_string()),
        HeaderResult::V2(Err(e)) => Parsed::Bad(e.to_string()),
    }
}

/// Reads the header off `tcp`, within `TIMEOUT`: the client's address it gives (`None`: the
/// balancer's own connection).
pub async fn read(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    tokio::time::timeout(TIMEOUT, read_header(tcp))
        .await
        .map_err(|_| ProxyError::Timeout)?
}

/// Peeks at what has arrived and takes exactly the header's octets off the stream, so the
/// first octet of the SMTP dialogue stays unread.
async fn read_header(tcp: &mut TcpStream) -> Result<Option<SocketAddr>, ProxyError> {
    let mut header = Vec::new();
    let mut peeked = [0u8; 512];
    loop {
        let n = tcp.peek(&mut peeked).await?;
        if n == 0 {
            return Err(ProxyError::Closed);
        }
        let taken = header.len();
        header.extend_from_slice(&peeked[..n]);
        match parse(&header) {
            Parsed::Header { len, client } => {
                let mut rest = vec![0; len - taken];
                tcp.read_exact(&mut rest).await?;
                return Ok(client);
            }
            Parsed::More if header.len() >= MAX => return Err(ProxyError::TooLong),
            Parsed::More => {
                tcp.read_exact(&mut peeked[..n]).await?;
            }
            Parsed::Bad(why) => return Err(ProxyError::Malformed(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 header: PROXY over TCP4 from `src`.
    fn v2(command: u8, src: [u8; 4], port: u16) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.extend([0x20 | command, 0x11, 0, 12]);
        h.extend(src);
        h.extend([10, 0, 0, 1]);
        h.extend(port.to_be_bytes());
        h.extend(25u16.to_be_bytes());
        h
    }

    #[test]
    fn v1_and_v2_give_the_client() {
        let text = b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 25\r\nEHLO x\r\n";
        assert_eq!(
            parse(text),
            Parsed::Header {
                len: 40,
                client: Some("192.0.2.7:40000".parse().unwrap())
            }
        );
        let text = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n";
        let client = Some("[2001:db8::7]:40000".parse().unwrap());
        assert_eq!(parse(text), Parsed::Header { len: 45, client });
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Header {
                len: 15,
                client: None
            }
        );
        let mut binary = v2(1, [192, 0, 2, 9], 50000);
        let len = binary.len();
        binary.extend(b"EHLO x\r\n");
        let client = Some("192.0.2.9:50000".parse().unwrap());
        assert_eq!(parse(&binary), Parsed::Header { len, client });
        // LOCAL: the balancer's own connection.
        let local = v2(0, [192, 0, 2, 9], 50000);
        let len = local.len();
        assert_eq!(parse(&local), Parsed::Header { len, client: None });
    }

    #[test]
    fn prefixes_ask_for_more_and_others_are_refused() {
        let text = b"PROXY TCP4 192.0.2.7 10.0.0.1 40000 25\r\n";
        for end in [1, 5, 6, 20, text.len() - 1] {
            assert_eq!(parse(&text[..end]), Parsed::More, "{end}");
        }
        let binary = v2(1, [192, 0, 2, 9], 50000);
        for end in [1, 12, 15, binary.len() - 1] {
            assert_eq!(parse(&binary[..end]), Parsed::More, "{end}");
        }
        for bad in [
            &b"EHLO client.example\r\n"[..],
            b"PROXY TCP4 not-an-address 10.0.0.1 1 25\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 99999 25\r\n",
            b"GET / HTTP/1.1\r\n",
        ] {
            assert!(matches!(parse(bad), Parsed::Bad(_)), "{bad:?}");
        }
        // A v1 line that never ends is refused at its longest.
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120]].concat();
        assert!(matches!(parse(&long), Parsed::Bad(_)));
    }
}
