//! A DNS server for tests, over UDP and TCP on one 127.0.0.1 port: answers A, AAAA, MX,
//! PTR and TXT queries from a fixed table (following a CNAME one step); an empty answer
//! when the name has other records, NXDOMAIN when it has none, SERVFAIL for names under
//! `servfail.test.`, and never an answer for names under `hang.test.` (nor for the names
//! and types a zone says time out). A UDP answer larger than the client allows (512
//! octets, or its EDNS size) is truncated, so the client asks again over TCP.

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, PTR, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct TestDns {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
    /// Each query's name (lower case, with the final dot) and type, in order.
    pub asked: Arc<std::sync::Mutex<Vec<(String, RecordType)>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The records a [`TestDns`] serves; names are fully qualified (with the trailing dot)
/// and may hold any octets but dots (an SPF macro can put spaces or `%` in one).
#[derive(Default, Clone)]
pub struct Zone {
    records: Vec<(Name, RData)>,
    /// Names that exist without records of their own.
    names: Vec<Name>,
    /// Names (with a type: only that type) that never answer.
    timeouts: Vec<(Name, Option<RecordType>)>,
    /// Every n-th query over UDP goes unanswered (1: the server is dead).
    drop_every: Option<usize>,
}

/// `name` label by label, as octets; `None` when DNS cannot hold it (a label past 63).
fn dns_name(text: &str) -> Option<Name> {
    let labels = text.trim_end_matches('.').split('.').map(str::as_bytes);
    let mut name = Name::from_labels(labels).ok()?;
    name.set_fqdn(true);
    Some(name)
}

impl Zone {
    fn add(mut self, owner: &str, rdata: RData) -> Zone {
        if let Some(owner) = dns_name(owner) {
            self.records.push((owner, rdata));
        }
        self
    }

    pub fn a(self, name: &str, ip: Ipv4Addr) -> Zone {
        self.add(name, RData::A(A(ip)))
    }

    pub fn aaaa(self, name: &str, ip: Ipv6Addr) -> Zone {
        self.add(name, RData::AAAA(AAAA(ip)))
    }

    /// Exchange "." is a null MX.
    pub fn mx(self, name: &str, preference: u16, exchange: &str) -> Zone {
        let exchange = match exchange {
            "." => Name::root(),
            e => dns_name(e).unwrap(),
        };
        self.add(name, RData::MX(MX::new(preference, exchange)))
    }

    /// One TXT record; text longer than 255 octets is split into several strings, as a
    /// zone file would (RFC 7208 3.3, RFC 6376 3.6.2.2).
    pub fn txt(self, name: &str, text: &str) -> Zone {
        let strings = text.as_bytes().chunks(255).map(<[u8]>::to_vec).collect();
        self.txt_strings(name, strings)
    }

    /// One TXT record of these strings.
    pub fn txt_strings(self, name: &str, strings: Vec<Vec<u8>>) -> Zone {
        self.add(
            name,
            RData::TXT(TXT::from_bytes(strings.iter().map(Vec::as_slice).collect())),
        )
    }

    pub fn ptr(self, owner: &str, target: &str) -> Zone {
        match dns_name(target) {
            Some(target) => self.add(owner, RData::PTR(PTR(target))),
            None => self,
        }
    }

    pub fn cname(self, owner: &str, target: &str) -> Zone {
        match dns_name(target) {
            Some(target) => self.add(owner, RData::CNAME(CNAME(target))),
            None => self,
        }
    }

    /// The name exists (an empty answer, not NXDOMAIN, for what it has no records of).
    pub fn exists(mut self, owner: &str) -> Zone {
        self.names.extend(dns_name(owner));
        self
    }

    /// Queries for `owner` (of `kind` only, by its name: "TXT") are never answered; for
    /// the whole name, only those of types it has no record of.
    pub fn timeout(mut self, owner: &str, kind: Option<&str>) -> Zone {
        let kind = kind.map(|k| RecordType::from_str(k).unwrap());
        self.timeouts.extend(dns_name(owner).map(|n| (n, kind)));
        self
    }

    /// Leaves every `n`-th UDP query unanswered: 5 loses 20%, 1 all of them.
    pub fn drop_every(mut self, n: usize) -> Zone {
        self.drop_every = Some(n);
        self
    }

    pub async fn start(self) -> TestDns {
        TestDns::serve(Arc::new(self)).await
    }

    /// The records of `owner` of type `kind`.
    fn of<'a>(&'a self, owner: &'a Name, kind: RecordType) -> impl Iterator<Item = Record> + 'a {
        self.records
            .iter()
            .filter(move |(n, r)| n == owner && r.record_type() == kind)
            .map(|(n, r)| Record::from_rdata(n.clone(), 60, r.clone()))
    }

    /// Counts and notes a query; `true` when it is one to drop (`drop_every`).
    fn take(
        &self,
        count: &AtomicUsize,
        log: &std::sync::Mutex<Vec<(String, RecordType)>>,
        request: &Message,
    ) -> bool {
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        let mut log = log.lock().unwrap();
        for q in request.queries() {
            log.push((q.name().to_ascii().to_lowercase(), q.query_type()));
        }
        self.drop_every.is_some_and(|every| n.is_multiple_of(every))
    }

    /// The answer to one query message, or `None` to leave it unanswered.
    fn answer(&self, request: &Message) -> Option<Message> {
        let mut response = Message::new(request.id(), MessageType::Response, OpCode::Query);
        response.set_recursion_available(true);
        response.add_queries(request.queries().to_vec());
        let mut exists = false;
        for q in request.queries() {
            let ascii = q.name().to_ascii().to_lowercase();
            if ascii.ends_with("hang.test.") {
                return None;
            }
            if ascii.ends_with("servfail.test.") {
                response.set_response_code(ResponseCode::ServFail);
                return Some(response);
            }
            let owner = q.name();
            let kind = q.query_type();
            let mut answers: Vec<Record> = self.of(owner, kind).collect();
            let times_out = self.timeouts.iter().any(|(n, k)| {
                n == owner && k.is_none_or(|k| k == kind) && (k.is_some() || answers.is_empty())
            });
            if times_out {
                return None;
            }
            if answers.is_empty() && kind != RecordType::CNAME {
                for cname in self.of(owner, RecordType::CNAME).collect::<Vec<_>>() {
                    if let RData::CNAME(target) = cname.data() {
                        answers.extend(self.of(&target.0, kind));
                    }
                    answers.insert(0, cname);
                }
            }
            exists |= self.names.iter().any(|n| n == owner)
                || self.records.iter().any(|(n, _)| n == owner);
            response.add_answers(answers);
        }
        // A name with other records answers empty; an unknown one is NXDOMAIN. Either
        // with the zone's SOA, whose minimum says how long to keep it (RFC 2308 3).
        if !exists {
            response.set_response_code(ResponseCode::NXDomain);
        }
        if response.answers().is_empty() {
            let soa = SOA::new(
                Name::from_str("ns.test.").unwrap(),
                Name::from_str("hostmaster.test.").unwrap(),
                1,
                3600,
                600,
                86400,
                300,
            );
            let apex = Name::from_str("test.").unwrap();
            response.add_name_server(Record::from_rdata(apex, 300, RData::SOA(soa)));
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
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (count, z, log) = (queries.clone(), zone.clone(), asked.clone());
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(request) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                if z.take(&count, &log, &request) {
                    continue;
                }
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
        let (count, log) = (queries.clone(), asked.clone());
        let tcp_task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = tcp.accept().await else {
                    continue;
                };
                let (count, zone, log) = (count.clone(), zone.clone(), log.clone());
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
                        if zone.take(&count, &log, &request) {
                            continue;
                        }
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
            asked,
            tasks: vec![udp_task, tcp_task],
        }
    }
}
