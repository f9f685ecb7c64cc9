//! What the server keeps per client address across connections (Postfix's anvil): open
//! connections, for `limits.connections_per_ip`, and recent authentication failures, which
//! throttle password guessing across connections. IPv6 clients are counted per /64, since
//! one host usually has a whole /64 to pick from.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Failed authentications from one client within `AUTH_WINDOW` before AUTH is refused.
pub const AUTH_FAILURES_PER_CLIENT: u32 = 10;
const AUTH_WINDOW: Duration = Duration::from_secs(600);

/// The address a client is counted under: IPv4 as is (also when mapped into IPv6), IPv6 by
/// its /64 prefix.
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
        },
    }
}

#[derive(Default)]
struct Entry {
    connections: usize,
    /// Failures in the current window, and when it started.
    auth_failures: u32,
    window: Option<Instant>,
}

impl Entry {
    fn is_idle(&self, now: Instant) -> bool {
        self.connections == 0
            && self
                .window
                .is_none_or(|w| now.duration_since(w) > AUTH_WINDOW)
    }
}

/// Entries kept before idle ones (no connection, no recent failure) are swept out.
const PRUNE_ABOVE: usize = 4096;

/// Drops idle entries once the table is large (clients that failed AUTH and left would
/// otherwise stay forever): at each power of two from `PRUNE_ABOVE` on, so that sweeps are
/// rare however many clients are busy.
fn prune(table: &mut HashMap<IpAddr, Entry>) {
    if table.len() >= PRUNE_ABOVE && table.len().is_power_of_two() {
        let now = Instant::now();
        table.retain(|_, e| !e.is_idle(now));
    }
}

/// Shared by every listener and session of a server, across reloads.
#[derive(Default)]
pub struct Clients {
    table: Mutex<HashMap<IpAddr, Entry>>,
}

/// One open connection, counted until dropped.
pub struct Connection {
    clients: Arc<Clients>,
    key: IpAddr,
}

impl Drop for Connection {
    fn drop(&mut self) {
        let mut table = self.clients.table.lock().expect("clients lock");
        if let Some(e) = table.get_mut(&self.key) {
            e.connections -= 1;
            if e.is_idle(Instant::now()) {
                table.remove(&self.key);
            }
        }
    }
}

impl Clients {
    /// Counts a new connection from `ip`, unless it already has `limit` open.
    pub fn connect(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<Connection> {
        let key = client_key(ip);
        let mut table = self.table.lock().expect("clients lock");
        prune(&mut table);
        let e = table.entry(key).or_default();
        if e.connections >= limit {
            return None;
        }
        e.connections += 1;
        Some(Connection {
            clients: self.clone(),
            key,
        })
    }

    /// Records a failed authentication from `ip`.
    pub fn auth_failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut table = self.table.lock().expect("clients lock");
        prune(&mut table);
        let e = table.entry(client_key(ip)).or_default();
        match e.window {
            Some(w) if now.duration_since(w) <= AUTH_WINDOW => e.auth_failures += 1,
            _ => {
                e.window = Some(now);
                e.auth_failures = 1;
            }
        }
    }

    /// Has `ip` failed too often lately to be let try again?
    pub fn auth_blocked(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let table = self.table.lock().expect("clients lock");
        table.get(&client_key(ip)).is_some_and(|e| {
            e.auth_failures >= AUTH_FAILURES_PER_CLIENT
                && e.window
                    .is_some_and(|w| now.duration_since(w) <= AUTH_WINDOW)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_counts_per_64_and_limits_hold() {
        let clients = Arc::new(Clients::default());
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let first = clients.connect(a, 2).unwrap();
        let _second = clients.connect(b, 2).unwrap();
        assert!(clients.connect(a, 2).is_none(), "same /64");
        assert!(clients.connect(other, 2).is_some());
        drop(first);
        assert!(clients.connect(b, 2).is_some());
        assert_eq!(
            client_key("::ffff:192.0.2.1".parse().unwrap()),
            "192.0.2.1".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn auth_failures_block_after_the_limit() {
        let clients = Clients::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        for _ in 0..AUTH_FAILURES_PER_CLIENT {
            assert!(!clients.auth_blocked(ip));
            clients.auth_failed(ip);
        }
        assert!(clients.auth_blocked(ip));
        assert!(!clients.auth_blocked("192.0.2.8".parse().unwrap()));
    }
}
