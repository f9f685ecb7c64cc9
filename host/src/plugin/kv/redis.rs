//! The `redis` backend of the kv capability (`[kv] backend = "redis"`): the embedded store's
//! semantics (TTLs, atomic increments, one namespace per plugin, quotas) kept in a Redis
//! shared by several gateways. Each write is one Lua script, so it is atomic across them.
//!
//! Keys: `PREFIX{PLUGIN}:KEY` (the braces are a Redis Cluster hash tag: one plugin's keys
//! and its accounting share a slot). A namespace's accounting: `PREFIX{PLUGIN}#sizes`
//! (hash, key → octets), `PREFIX{PLUGIN}#expiry` (sorted set, key → Unix second it expires,
//! `inf` for never) and `PREFIX{PLUGIN}#octets` (their sum). Expired keys leave the
//! accounting as writes come by, a few at a time.
//!
//! The connection is a `redis::aio::ConnectionManager`, made at first use (a server that
//! starts while Redis is down still starts) and reconnecting in the background; a call
//! while Redis is unreachable fails at once with `KvError::Down`, and calls work again once
//! it is back.

use super::{KvError, Quota, QuotaExceeded};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::OnceCell;

/// Drops up to 256 expired keys from the accounting; then `now`, `keys` and `octets` are the
/// namespace's clock and usage. KEYS: the key, `#sizes`, `#expiry`, `#octets`.
const PRUNE: &str = r"
local now = tonumber(redis.call('TIME')[1])
for _, m in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now, 'LIMIT', 0, 256)) do
  redis.call('DECRBY', KEYS[4], tonumber(redis.call('HGET', KEYS[2], m) or '0'))
  redis.call('HDEL', KEYS[2], m)
  redis.call('ZREM', KEYS[3], m)
end
local keys = redis.call('HLEN', KEYS[2])
local octets = tonumber(redis.call('GET', KEYS[4]) or '0')
local function over(member, old, new)
  local k = keys
  if not old then k = k + 1 end
  return k > tonumber(ARGV[2]) or octets - (tonumber(old) or 0) + new > tonumber(ARGV[3])
end
local function account(member, old, new)
  local pttl = redis.call('PTTL', KEYS[1])
  local expiry = 'inf'
  if pttl > 0 then expiry = now + math.ceil(pttl / 1000) end
  redis.call('ZADD', KEYS[3], expiry, member)
  redis.call('HSET', KEYS[2], member, new)
  redis.call('INCRBY', KEYS[4], new - (tonumber(old) or 0))
end
";

/// ARGV: member, max keys, max octets, value, TTL seconds (0: none). 1, or 0 over quota.
const SET: &str = r"
local member, value, ttl = ARGV[1], ARGV[4], tonumber(ARGV[5])
local old = redis.call('HGET', KEYS[2], member)
local new = #member + #value
if over(member, old, new) then return 0 end
if ttl > 0 then
  redis.call('SET', KEYS[1], value, 'EX', ttl)
else
  redis.call('SET', KEYS[1], value)
end
account(member, old, new)
return 1
";

/// ARGV: member, max keys, max octets, delta, TTL seconds for a new key (0: none).
/// `{1, value}`, or `{0, value it would have had}` over quota (nothing changed).
const INCREMENT: &str = r"
local member, delta, ttl = ARGV[1], ARGV[4], tonumber(ARGV[5])
local cur = redis.call('GET', KEYS[1])
if cur and not string.match(cur, '^%-?%d+$') then
  redis.call('SET', KEYS[1], '0', 'KEEPTTL')
end
local ok = pcall(redis.call, 'INCRBY', KEYS[1], delta)
if not ok then
  -- Past the 64-bit range: it stays at the end it went past, as in the embedded store.
  if tonumber(delta) > 0 then
    redis.call('SET', KEYS[1], '9223372036854775807', 'KEEPTTL')
  else
    redis.call('SET', KEYS[1], '-9223372036854775808', 'KEEPTTL')
  end
end
local value = redis.call('GET', KEYS[1])
if not cur and ttl > 0 then redis.call('EXPIRE', KEYS[1], ttl) end
local old = redis.call('HGET', KEYS[2], member)
local new = #member + #value
if over(member, old, new) then
  if cur then redis.call('SET', KEYS[1], cur, 'KEEPTTL') else redis.call('DEL', KEYS[1]) end
  return {0, value}
end
account(member, old, new)
return {1, value}
";

/// ARGV: member.
const DELETE: &str = r"
redis.call('DEL', KEYS[1])
local old = redis.call('HGET', KEYS[2], ARGV[1])
if old then
  redis.call('DECRBY', KEYS[4], tonumber(old))
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
end
return 1
";

pub struct RedisKv {
    client: redis::Client,
    prefix: String,
    connection: OnceCell<ConnectionManager>,
    quotas: Mutex<HashMap<String, Quota>>,
    set: redis::Script,
    increment: redis::Script,
    delete: redis::Script,
    /// Whether the last call failed to reach Redis: the operator is told once when it goes
    /// down and once when it is back, not at every call.
    down: AtomicBool,
}

/// How long one call waits for Redis (a connection, then a reply).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

impl RedisKv {
    /// A store at `url` (`redis://`, `rediss://`, `unix://`); nothing is connected yet.
    pub fn new(url: &str, prefix: &str) -> Result<RedisKv, String> {
        let client = redis::Client::open(url).map_err(|e| format!("kv url {url:?}: {e}"))?;
        let script = |body: &str| redis::Script::new(&format!("{PRUNE}{body}"));
        Ok(RedisKv {
            client,
            prefix: prefix.to_string(),
            connection: OnceCell::new(),
            quotas: Mutex::new(HashMap::new()),
            set: script(SET),
            increment: script(INCREMENT),
            delete: script(DELETE),
            down: AtomicBool::new(false),
        })
    }

    pub fn set_quota(&self, namespace: &str, quota: Quota) {
        self.quotas
            .lock()
            .unwrap()
            .insert(namespace.to_string(), quota);
    }

    fn quota(&self, namespace: &str) -> Quota {
        self.quotas
            .lock()
            .unwrap()
            .get(namespace)
            .copied()
            .unwrap_or(Quota {
                keys: usize::MAX,
                bytes: u64::MAX,
            })
    }

    /// Notes whether Redis answered, logging the changes.
    fn observe<T>(&self, r: Result<T, redis::RedisError>) -> Result<T, KvError> {
        match r {
            Ok(v) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::info!("kv: Redis answers again");
                }
                Ok(v)
            }
            Err(e) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "kv: Redis unreachable; kv calls fail until it is back");
                }
                Err(KvError::Down(e.to_string()))
            }
        }
    }

    async fn connection(&self) -> Result<ConnectionManager, KvError> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let made = self
            .connection
            .get_or_try_init(|| ConnectionManager::new_with_config(self.client.clone(), config))
            .await;
        self.observe(made.cloned())
    }

    fn key(&self, namespace: &str, key: &str) -> String {
        format!("{}{{{namespace}}}:{key}", self.prefix)
    }

    /// A write script invoked on `key` of `namespace` with its accounting keys and quota.
    fn invocation<'a>(
        &self,
        script: &'a redis::Script,
        namespace: &str,
        key: &str,
    ) -> (redis::ScriptInvocation<'a>, Quota) {
        let quota = self.quota(namespace);
        let base = format!("{}{{{namespace}}}", self.prefix);
        let mut call = script.key(self.key(namespace, key));
        call.key(format!("{base}#sizes"))
            .key(format!("{base}#expiry"))
            .key(format!("{base}#octets"))
            .arg(key)
            .arg(quota.keys.min(i64::MAX as usize) as i64)
            .arg(quota.bytes.min(i64::MAX as u64) as i64);
        (call, quota)
    }

    pub async fn get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let mut c = self.connection().await?;
        let got = redis::cmd("GET")
            .arg(self.key(namespace, key))
            .query_async(&mut c)
            .await;
        self.observe(got)
    }

    pub async fn set(
        &self,
        namespace: &str,
        key: &str,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), KvError> {
        let mut c = self.connection().await?;
        let (mut call, quota) = self.invocation(&self.set, namespace, key);
        call.arg(value).arg(ttl_seconds(ttl));
        let stored: i64 = self.observe(call.invoke_async(&mut c).await)?;
        match stored {
            1 => Ok(()),
            _ => Err(KvError::OverQuota(exceeded(quota), None)),
        }
    }

    pub async fn increment(
        &self,
        namespace: &str,
        key: &str,
        delta: i64,
        ttl: Option<Duration>,
    ) -> Result<i64, KvError> {
        let mut c = self.connection().await?;
        let (mut call, quota) = self.invocation(&self.increment, namespace, key);
        call.arg(delta).arg(ttl_seconds(ttl));
        let (stored, value): (i64, String) = self.observe(call.invoke_async(&mut c).await)?;
        let value = value
            .parse::<i64>()
            .map_err(|_| KvError::Down(format!("redis answered {value:?} to an increment")))?;
        match stored {
            1 => Ok(value),
            _ => Err(KvError::OverQuota(exceeded(quota), Some(value))),
        }
    }

    pub async fn delete(&self, namespace: &str, key: &str) -> Result<(), KvError> {
        let mut c = self.connection().await?;
        let (call, _) = self.invocation(&self.delete, namespace, key);
        self.observe(call.invoke_async::<i64>(&mut c).await)?;
        Ok(())
    }
}

fn exceeded(q: Quota) -> QuotaExceeded {
    QuotaExceeded {
        keys: q.keys,
        bytes: q.bytes,
    }
}

/// Whole seconds, at least one (0 means "no TTL" to the scripts); an absurd TTL is capped
/// at about 68 years, past which Redis refuses `EX`.
fn ttl_seconds(ttl: Option<Duration>) -> i64 {
    ttl.map_or(0, |t| t.as_secs().clamp(1, i32::MAX as u64) as i64)
}
