//! Per-hook overhead of a Rust plugin: `cargo bench --bench hooks`.
//!
//! - reused: one session's instance, the MAIL hook of the bundled size-limit plugin called
//!   again and again (what every command after the first costs);
//! - instantiate+call: a new session each time (what the first hook of a session costs).
//!
//! Prints the median and the 99th percentile of batches, per call. `HOOKS_ROUNDS=N` runs N
//! times as many (for `perf record`, so the calls outweigh the one compile).

use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtp::plugin::{Call, PluginSender, PluginSet, SessionInfo};

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let toml = format!(
        "hostname = \"bench.test\"\n[[listen]]\naddress = \"127.0.0.1:0\"\n[spool]\npath = \"{}\"\n\
         [[plugin]]\nname = \"size\"\npath = \"bundled:size-limit\"\n[plugin.config]\nmax_size = \"10MiB\"\n",
        dir.path().display()
    );
    let config = wasmtp::config::Config::parse("bench", &toml).expect("config");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let kv = wasmtp::plugin::kv::Kv::Embedded(Arc::new(
            wasmtp::plugin::kv::EmbeddedKv::open(&dir.path().join("kv.json")).expect("kv"),
        ));
        let metrics = Arc::new(wasmtp::metrics::Metrics::default());
        let set = Arc::new(
            PluginSet::load(
                &config,
                &wasmtp::plugin::cache_dir(&config),
                kv,
                None,
                metrics,
            )
            .await
            .expect("load"),
        );
        let info = SessionInfo {
            client_ip: "192.0.2.1".into(),
            client_port: 25000,
            listener: "mx".into(),
            tls: None,
            auth_user: None,
            helo: Some("client.test".into()),
        };
        let spf = wasmtp::plugin::SpfResults::none();
        let sender = PluginSender {
            address: "a@b.test".into(),
            params: Vec::new(),
        };

        let mail = || Call::Mail {
            sender: &sender,
            spf: &spf,
        };

        const BATCH: u32 = 100;
        let rounds: usize = std::env::var("HOOKS_ROUNDS")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1);
        let mut session = set.session();
        session.run(&info, mail()).await; // instantiate once
        let mut reused = Vec::new();
        for _ in 0..200 * rounds {
            let start = Instant::now();
            for _ in 0..BATCH {
                std::hint::black_box(session.run(&info, mail()).await);
            }
            reused.push(start.elapsed() / BATCH);
        }
        let mut fresh = Vec::new();
        for _ in 0..300 * rounds {
            let start = Instant::now();
            let mut s = set.session();
            std::hint::black_box(s.run(&info, mail()).await);
            drop(s);
            fresh.push(start.elapsed());
        }
        println!(
            "reused instance:    median {:?} per hook call, p99 {:?}",
            percentile(reused.clone(), 0.5),
            percentile(reused, 0.99)
        );
        println!(
            "instantiate + call: median {:?}, p99 {:?}",
            percentile(fresh.clone(), 0.5),
            percentile(fresh, 0.99)
        );
    });
}
