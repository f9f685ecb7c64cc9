//! `[kv] backend = "redis"` against Debian's redis-server started by the test: two gateways
//! share one greylist, Redis killed and restarted in the middle of a run costs only the
//! calls made while it is down, and the embedded store's semantics (TTLs, increments,
//! quotas, namespaces) hold in Redis.

mod common;
use common::redis::Redis;
use common::{Client, Process, TestServer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use wasmtp::plugin::kv::{KvError, Quota, RedisKv};

const GREYLIST: &str = "[[plugin]]\nname = \"greylist\"\npath = \"bundled:greylist\"\n\
                        [plugin.config]\ndelay = \"2s\"\n";

fn kv(redis: &Redis) -> String {
    format!("[kv]\nbackend = \"redis\"\nurl = \"{}\"\n", redis.url())
}

/// A gateway's config in `dir`, listening on a free port.
fn gateway(dir: &Path, redis: &Redis) -> (PathBuf, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", common::free_port())
        .parse()
        .unwrap();
    let config = dir.join("wasmtp.toml");
    std::fs::write(
        &config,
        format!(
            "hostname = \"mx.test\"\n[[listen]]\naddress = \"{addr}\"\n\
             [spool]\npath = \"spool\"\n[accept]\ndomains = [\"example.test\"]\n{}{GREYLIST}",
            kv(redis)
        ),
    )
    .unwrap();
    (config, addr)
}

async fn rcpt_at(addr: SocketAddr, recipient: &str, want: &str) {
    let mut c = Client::connect(addr).await;
    c.cmd("EHLO relay.example", "250").await;
    c.cmd("MAIL FROM:<s@sender.example>", "250").await;
    c.cmd(&format!("RCPT TO:<{recipient}>"), want).await;
    c.cmd("QUIT", "221").await;
}

#[tokio::test]
async fn two_gateways_share_one_greylist() {
    let redis = Redis::start().await;
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a_config, a) = gateway(a_dir.path(), &redis);
    let (b_config, b) = gateway(b_dir.path(), &redis);
    let _a = Process::serve(&a_config, a_dir.path(), a).await;
    let _b = Process::serve(&b_config, b_dir.path(), b).await;
    // The first try at A is greylisted; B knows the triplet: too early there too.
    rcpt_at(a, "u@example.test", "451 4.7.1").await;
    rcpt_at(b, "u@example.test", "451 4.7.1").await;
    // After the delay the retry passes at B, which never saw the first try.
    tokio::time::sleep(Duration::from_millis(3100)).await;
    rcpt_at(b, "u@example.test", "250").await;
    // Another triplet is new to both.
    rcpt_at(b, "v@example.test", "451 4.7.1").await;
}

#[tokio::test]
async fn redis_killed_and_restarted_costs_only_the_calls_made_meanwhile() {
    let mut redis = Redis::start().await;
    // Beside the greylist, a 0.2.0 component counting EHLOs with the old `kv` interface.
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n\
         [limits]\nerror_delay = \"0s\"\nerror_limit = 1000\n{}\
         [[plugin]]\nname = \"old\"\npath = \"{}\"\ncapabilities = [\"kv\"]\n{GREYLIST}",
        kv(&redis),
        common::guest("contract_0_2_0"),
    ))
    .await;
    let mut c = Client::connect(s.addr()).await;
    c.cmd("EHLO count.test", "550 5.7.1 count 1").await;
    c.cmd("EHLO relay.example", "250").await;
    c.cmd("MAIL FROM:<s@sender.example>", "250").await;
    c.cmd("RCPT TO:<u1@example.test>", "451 4.7.1").await;

    redis.kill();
    // The greylist answers by its own rule (its on_error: 451 4.3.0); the old component's
    // call traps its hook, which gets the on_error answer too. The session goes on.
    c.cmd(
        "RCPT TO:<u2@example.test>",
        "451 4.3.0 Greylisting unavailable",
    )
    .await;
    c.cmd("EHLO count.test", "451 4.3.0").await;
    c.cmd("EHLO relay.example", "250").await;
    c.cmd("MAIL FROM:<s@sender.example>", "250").await;

    // Back (empty: it saved nothing): calls work again on the same connections.
    redis.restart().await;
    let deadline = tokio::time::Instant::now() + common::TIMEOUT;
    let mut n = 0;
    loop {
        n += 1;
        let reply = c
            .cmd(&format!("RCPT TO:<u{n}.again@example.test>"), "451")
            .await;
        if reply.starts_with("451 4.7.1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis not reached again: {reply}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.cmd("RSET", "250").await;
    c.cmd("EHLO count.test", "550 5.7.1 count 1").await;
    c.cmd("EHLO relay.example", "250").await;
    c.cmd("MAIL FROM:<s@sender.example>", "250").await;
    tokio::time::sleep(Duration::from_millis(3100)).await;
    c.cmd(&format!("RCPT TO:<u{n}.again@example.test>"), "250")
        .await;
}

#[tokio::test]
async fn redis_keeps_the_embedded_stores_semantics() {
    let redis = Redis::start().await;
    let kv = RedisKv::new(&redis.url(), "t:").unwrap();
    kv.set_quota("p", Quota { keys: 2, bytes: 20 });
    kv.set("p", "a", b"1".to_vec(), None).await.unwrap();
    kv.set("p", "b", b"2".to_vec(), None).await.unwrap();
    assert_eq!(kv.get("q", "a").await, Ok(None), "namespaces are separate");
    assert!(matches!(
        kv.set("p", "c", b"3".to_vec(), None).await,
        Err(KvError::OverQuota(..))
    ));
    // Replacing a key is not a new key; growing past the octets is refused.
    kv.set("p", "a", b"11".to_vec(), None).await.unwrap();
    assert!(kv.set("p", "a", vec![b'x'; 30], None).await.is_err());
    assert_eq!(kv.get("p", "a").await, Ok(Some(b"11".to_vec())));
    // An increment over the quota stores nothing and says what it would have been.
    assert!(matches!(
        kv.increment("p", "c", 7, None).await,
        Err(KvError::OverQuota(_, Some(7)))
    ));
    assert_eq!(kv.get("p", "c").await, Ok(None));
    assert_eq!(kv.increment("p", "b", 1, None).await, Ok(3));
    // Deleting makes room; other namespaces are not counted.
    kv.delete("p", "a").await.unwrap();
    kv.set("p", "c", b"text".to_vec(), None).await.unwrap();
    kv.set("q", "x", vec![0; 100], None).await.unwrap();
    // Not a number counts as 0.
    assert_eq!(kv.increment("p", "c", 5, None).await, Ok(5));
    // TTLs: the value goes, and so does its share of the quota.
    kv.delete("p", "b").await.unwrap();
    kv.set("p", "t", b"x".to_vec(), Some(Duration::from_secs(1)))
        .await
        .unwrap();
    assert_eq!(
        kv.increment("p", "w", 2, Some(Duration::MAX)).await,
        Err(KvError::OverQuota(
            wasmtp::plugin::kv::QuotaExceeded { keys: 2, bytes: 20 },
            Some(2)
        ))
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(kv.get("p", "t").await, Ok(None));
    assert_eq!(kv.increment("p", "w", 2, Some(Duration::MAX)).await, Ok(2));
    // The keys are the plugin's under the prefix, in one hash slot per plugin.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("t:{p}:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(keys, ["t:{p}:c", "t:{p}:w"]);
}

#[tokio::test]
async fn a_redis_down_at_start_does_not_stop_the_gateway() {
    let mut redis = Redis::start().await;
    redis.kill();
    let s = TestServer::start(&format!(
        "[accept]\ndomains = [\"example.test\"]\n{}{GREYLIST}",
        kv(&redis)
    ))
    .await;
    rcpt_at(s.addr(), "u@example.test", "451 4.3.0").await;
    redis.restart().await;
    common::eventually_async("the first connection to Redis", || async {
        let mut c = Client::connect(s.addr()).await;
        c.cmd("EHLO relay.example", "250").await;
        c.cmd("MAIL FROM:<s@sender.example>", "250").await;
        c.send(b"RCPT TO:<u@example.test>\r\n").await;
        c.reply().await.starts_with("451 4.7.1")
    })
    .await;
}
