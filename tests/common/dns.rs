//! A DNS server for tests: answers A and MX queries from a fixed table over UDP on
//! 127.0.0.1; an empty answer when the name has other records, NXDOMAIN when it has none,
//! SERVFAIL for names under `servfail.test.`.

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, MX};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct TestDns {
    pub addr: SocketAddr,
    pub queries: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestDns {
    /// `records`: fully qualified names (with the trailing dot) and their A records.
    pub async fn start(records: &[(&str, Ipv4Addr)]) -> TestDns {
        TestDns::start_with_mx(records, &[]).await
    }

    /// Also MX records: (name, preference, exchange); exchange "." is a null MX.
    pub async fn start_with_mx(records: &[(&str, Ipv4Addr)], mx: &[(&str, u16, &str)]) -> TestDns {
        let mx: Vec<(String, u16, String)> = mx
            .iter()
            .map(|(n, p, e)| (n.to_lowercase(), *p, e.to_string()))
            .collect();
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let table: HashMap<String, Ipv4Addr> = records
            .iter()
            .map(|(n, ip)| (n.to_lowercase(), *ip))
            .collect();
        let queries = Arc::new(AtomicUsize::new(0));
        let count = queries.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(request) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let mut response = Message::new();
                response
                    .set_id(request.id())
                    .set_message_type(MessageType::Response)
                    .set_recursion_available(true);
                response.add_queries(request.queries().to_vec());
                let mut exists = false;
                for q in request.queries() {
                    let name = q.name().to_ascii().to_lowercase();
                    let owner = Name::from_str(&name).unwrap();
                    if let Some(ip) = table.get(&name) {
                        exists = true;
                        if q.query_type() == RecordType::A {
                            response.add_answer(Record::from_rdata(
                                owner.clone(),
                                60,
                                RData::A(A(*ip)),
                            ));
                        }
                    }
                    for (_, pref, exchange) in mx.iter().filter(|(n, _, _)| *n == name) {
                        exists = true;
                        if q.query_type() == RecordType::MX {
                            let exchange = Name::from_str(exchange).unwrap();
                            let rdata = RData::MX(MX::new(*pref, exchange));
                            response.add_answer(Record::from_rdata(owner.clone(), 60, rdata));
                        }
                    }
                }
                // A name with other records answers empty; an unknown one is NXDOMAIN.
                if request.queries().iter().any(|q| {
                    q.name()
                        .to_ascii()
                        .to_lowercase()
                        .ends_with("servfail.test.")
                }) {
                    response.set_response_code(ResponseCode::ServFail);
                } else if !exists {
                    response.set_response_code(ResponseCode::NXDomain);
                }
                if let Ok(bytes) = response.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
        TestDns {
            addr,
            queries,
            task,
        }
    }
}
