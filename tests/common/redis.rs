//! A private redis-server (Debian's package) for the tests: loopback, a port of its own,
//! nothing saved to disk, its working directory a temporary one. It can be killed and
//! started again on the same port.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Redis {
    pub addr: SocketAddr,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl Redis {
    /// Starts it and waits until it answers PING.
    pub async fn start() -> Redis {
        assert!(
            Command::new("redis-server")
                .arg("--version")
                .output()
                .is_ok(),
            "these tests need Debian's redis-server: apt-get install redis-server (tests/run.sh does)"
        );
        let addr = format!("127.0.0.1:{}", super::free_port()).parse().unwrap();
        let mut r = Redis {
            addr,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        r.restart().await;
        r
    }

    /// `redis://` URL of it.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Starts it (again, on the same port) and waits until it answers.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &self.addr.port().to_string(),
            ])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        super::eventually_async("redis-server answers PING", || self.pong()).await;
    }

    async fn pong(&self) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect(self.addr).await else {
            return false;
        };
        if s.write_all(b"PING\r\n").await.is_err() {
            return false;
        }
        let mut answer = [0u8; 7];
        let read = tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut answer));
        matches!(read.await, Ok(Ok(_))) && &answer == b"+PONG\r\n"
    }

    /// kill -9, as a crash would: what it held is gone (nothing is saved).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
