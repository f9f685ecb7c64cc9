//! A DNS server for tests, over UDP and TCP on one 127.0.0.1 port: answers A, AAAA, MX and
//! TXT queries from a fixed table; an empty answer when the name has other records,
//! NXDOMAIN when it has none, SERVFAIL for names under `servfail.test.`, and never an
//! answer for names under `hang.test.`. A UDP answer larger than the client allows
//! (512 octets, or its EDNS size) is truncated, so the client asks again over TCP.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, TXT};
use hickory_proto::rr::{Name, RData, Record};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct TestDns {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The records a [`TestDns`] serves; names are fully qualified (with the trailing dot).
#[derive(Default, Clone)]
pub struct Zone {
    records: Vec<(String, RData)>,
}

impl Zone {
    pub fn a(mut self, name: &str, ip: Ipv4Addr) -> Zone {
        self.records.push((name.to_lowercase(), RData::A(A(ip))));
        self
    }

    pub fn aaaa(mut self, name: &str, ip: Ipv6Addr) -> Zone {
        self.records
            .push((name.to_lowercase(), RData::AAAA(AAAA(ip))));
        self
    }

    /// Exchange "." is a null MX.
    pub fn mx(mut self, name: &str, preference: u16, exchange: &str) -> Zone {
        let exchange = Name::from_str(exchange).unwrap();
        let rdata = RData::MX(MX::new(preference, exchange));
        self.records.push((name.to_lowercase(), rdata));
        self
    }

    /// One TXT record; text longer than 255 octets is split into several strings, as a
    /// zone file would (RFC 7208 3.3, RFC 6376 3.6.2.2).
    pub fn txt(mut self, name: &str, text: &str) -> Zone {
        let strings = text.as_bytes().chunks(255).collect::<Vec<_>>();
        let rdata = RData::TXT(TXT::from_bytes(strings));
        self.records.push((name.to_lowercase(), rdata));
        self
    }

    pub async fn start(self) -> TestDns {
        TestDns::serve(Arc::new(self)).await
    }

    /// The answer to one query message, or `None` to leave it unanswered.
    fn answer(&self, request: &Message) -> Option<Message> {
        let mut response = Message::new(request.id(), MessageType::Response, OpCode::Query);
        response.set_recursion_available(true);
        response.add_queries(request.queries().to_vec());
        let mut exists = false;
        for q in request.queries() {
            let name = q.name().to_ascii().to_lowercase();
            if name.ends_with("hang.test.") {
                return None;
            }
            if name.ends_with("servfail.test.") {
                response.set_response_code(ResponseCode::ServFail);
                return Some(response);
            }
            let owner = Name::from_str(&name).unwrap();
            for (_, rdata) in self.records.iter().filter(|(n, _)| *n == name) {
                exists = true;
                if rdata.record_type() == q.query_type() {
                    response.add_answer(Record::from_rdata(owner.clone(), 60, rdata.clone()));
                }
            }
        }
        // A name with other records answers empty; an unknown one is NXDOMAIN.
        if !exists {
            response.set_response_code(ResponseCode::NXDomain);
        }
        Some(response)
    }
}

impl TestDns {
    /// `records`: names and their A records.
    pub async fn start(records: &[(&str, Ipv4Addr)]) -> TestDns {
        TestDns::start_with_mx(records, &[]).await
    }

    /// Also MX records: (name, preference, exchange).
    pub async fn start_with_mx(records: &[(&str, Ipv4Addr)], mx: &[(&str, u16, &str)]) -> TestDns {
        let mut zone = Zone::default();
        for (name, ip) in records {
            zone = zone.a(name, *ip);
        }
        for (name, preference, exchange) in mx {
            zone = zone.mx(name, *preference, exchange);
        }
        zone.start().await
    }

    async fn serve(zone: Arc<Zone>) -> TestDns {
        // One port for both: the UDP socket picks it, TCP binds the same (retried if taken).
        let (udp, tcp) = loop {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            if let Ok(tcp) = tokio::net::TcpListener::bind(udp.local_addr().unwrap()).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().unwrap();
        let queries = Arc::new(AtomicUsize::new(0));
        let (count, z) = (queries.clone(), zone.clone());
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(request) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let Some(mut response) = z.answer(&request) else {
                    continue;
                };
                let limit = request
                    .extensions()
                    .as_ref()
                    .map_or(512, |e| usize::from(e.max_payload()).max(512));
                if let Some(edns) = request.extensions() {
                    let mut ours = Edns::new();
                    ours.set_max_payload(edns.max_payload());
                    response.set_edns(ours);
                }
                let Ok(mut bytes) = response.to_vec() else {
                    continue;
                };
                if bytes.len() > limit {
                    let mut cut = Message::new(request.id(), MessageType::Response, OpCode::Query);
                    cut.set_truncated(true);
                    cut.add_queries(request.queries().to_vec());
                    bytes = cut.to_vec().unwrap();
                }
                let _ = udp.send_to(&bytes, peer).await;
            }
        });
        let count = queries.clone();
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = tcp.accept().await else {
                    continue;
                };
                let (count, zone) = (count.clone(), zone.clone());
                tokio::spawn(async move {
                    loop {
                        let Ok(len) = stream.read_u16().await else {
                            return;
                        };
                        let mut buf = vec![0u8; usize::from(len)];
                        if stream.read_exact(&mut buf).await.is_err() {
                            return;
                        }
                        let Ok(request) = Message::from_vec(&buf) else {
                            return;
                        };
                        count.fetch_add(1, Ordering::SeqCst);
                        let Some(response) = zone.answer(&request) else {
                            continue;
                        };
                        let bytes = response.to_vec().unwrap();
                        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&bytes);
                        if stream.write_all(&framed).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        TestDns {
            addr,
            queries,
            tasks: vec![udp_task, tcp_task],
        }
    }
}
