//! A private Rspamd (Debian's package) for the tests: its config, database and log in a
//! temporary directory, the stock rules read from /etc/rspamd, one normal worker on a
//! loopback port, no controller or proxy, and the modules that need the network (RBLs,
//! SPF, DMARC, fuzzy) off, so that scans are quick and repeatable. `enable_test_patterns`
//! gives the GTUBE variants for `add header` and `rewrite subject`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The GTUBE string Rspamd 3.4 rejects (SpamAssassin's; in a text part of 69 to 8192 octets).
pub const GTUBE: &str = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X";

pub struct Rspamd {
    pub addr: SocketAddr,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

impl Rspamd {
    /// Starts it and waits until `/ping` answers.
    pub async fn start() -> Rspamd {
        assert!(
            Command::new("rspamd").arg("--version").output().is_ok(),
            "these tests need Debian's rspamd: apt-get install rspamd (tests/run.sh does)"
        );
        let dir = tempfile::tempdir().unwrap();
        let t = dir.path();
        let addr: SocketAddr = format!("127.0.0.1:{}", super::free_port()).parse().unwrap();
        write(
            t,
            "rspamd.conf",
            &format!(
                ".include \"$CONFDIR/common.conf\"\n\
                 options {{\n  pidfile = \"$RUNDIR/rspamd.pid\";\n  .include \"$CONFDIR/options.inc\"\n  \
                 .include(try=true; priority=1,duplicate=merge) \"$LOCAL_CONFDIR/local.d/options.inc\"\n}}\n\
                 logging {{\n  type = \"file\";\n  filename = \"$LOGDIR/rspamd.log\";\n  .include \"$CONFDIR/logging.inc\"\n}}\n\
                 worker \"normal\" {{\n  bind_socket = \"{addr}\";\n  count = 1;\n  .include \"$CONFDIR/worker-normal.inc\"\n}}\n"
            ),
        );
        std::fs::create_dir(t.join("local.d")).unwrap();
        // No network: the resolver is a closed local port; a short public-suffix list (the
        // stock one takes twenty seconds to compile at start).
        write(
            &t.join("local.d"),
            "options.inc",
            "dns { nameserver = [\"127.0.0.1:1\"]; timeout = 0.1s; retransmits = 1; }\n\
             url_tld = \"$LOCAL_CONFDIR/tld.dat\";\nenable_test_patterns = true;\ndisable_hyperscan = true;\n",
        );
        write(
            t,
            "tld.dat",
            "com\norg\nnet\ntest\nexample\ninvalid\nlocalhost\n",
        );
        for module in [
            "rbl",
            "hfilter",
            "asn",
            "spf",
            "dmarc",
            "once_received",
            "fuzzy_check",
        ] {
            write(
                &t.join("local.d"),
                &format!("{module}.conf"),
                "enabled = false;\n",
            );
        }
        let var = |k: &str| format!("{k}={}", t.display());
        let child = Command::new("rspamd")
            .args(["-f", "-i", "-c"])
            .arg(t.join("rspamd.conf"))
            .args(["--var", &var("LOCAL_CONFDIR"), "--var", &var("DBDIR")])
            .args(["--var", &var("RUNDIR"), "--var", &var("LOGDIR")])
            .current_dir(t)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let r = Rspamd {
            addr,
            child: Some(child),
            _dir: dir,
        };
        super::eventually_async("rspamd answers /ping", || r.pong()).await;
        r
    }

    async fn pong(&self) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect(self.addr).await else {
            return false;
        };
        if s.write_all(b"GET /ping HTTP/1.0\r\n\r\n").await.is_err() {
            return false;
        }
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut answer));
        matches!(read.await, Ok(Ok(_))) && answer.ends_with(b"pong\r\n")
    }

    /// Stops it (SIGTERM, then SIGKILL) and waits for it to exit.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        for _ in 0..100 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        self.stop();
    }
}
