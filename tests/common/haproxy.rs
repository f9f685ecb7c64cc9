//! A private HAProxy (Debian's package) for the tests: TCP mode, loopback, each frontend a
//! port of its own, forwarding to a backend with `send-proxy` (v1) or `send-proxy-v2`; run
//! in the foreground from a config in a temporary directory, killed when dropped.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

pub struct HaProxy {
    /// One per `to` given to `start`, in order.
    pub frontends: Vec<SocketAddr>,
    child: Child,
    _dir: tempfile::TempDir,
}

impl HaProxy {
    /// A frontend for each `(backend, option)`, the option `send-proxy` or `send-proxy-v2`;
    /// waits until every frontend takes connections.
    pub async fn start(to: &[(SocketAddr, &str)]) -> HaProxy {
        assert!(
            Command::new("haproxy").arg("-v").output().is_ok(),
            "these tests need Debian's haproxy: apt-get install haproxy (tests/run.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let mut config = String::from(
            "global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
             timeout client 30s\n  timeout server 30s\n",
        );
        let mut frontends = Vec::new();
        for (i, (backend, option)) in to.iter().enumerate() {
            let addr: SocketAddr = format!("127.0.0.1:{}", super::free_port()).parse().unwrap();
            config.push_str(&format!(
                "frontend f{i}\n  bind {addr}\n  default_backend b{i}\n\
                 backend b{i}\n  server s{i} {backend} {option}\n"
            ));
            frontends.push(addr);
        }
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        for &addr in &frontends {
            super::eventually_async("haproxy listens", || async move {
                tokio::net::TcpStream::connect(addr).await.is_ok()
            })
            .await;
        }
        HaProxy {
            frontends,
            child,
            _dir: dir,
        }
    }
}

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
