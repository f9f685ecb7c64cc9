//! Delivery slots: at most `delivery.concurrency` attempts in all, and at most
//! `delivery.destination_concurrency` to one destination (Postfix's
//! default_destination_concurrency_limit), so that one slow destination cannot take every
//! slot. A destination is a route's fixed next hop, or for MX routes the MX host: many
//! domains hosted on one MX host share its slots, as Postfix counts per next hop.

use crate::config::{Target, TlsPolicy};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Where a group of recipients goes, and how TLS reaches it: one connection each; an MX
/// route's recipients go by domain (one lookup each), and take their slots per MX host.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Destination {
    pub to: Target,
    /// An MX route's recipient domain (lower case); `None` for a fixed next hop.
    pub domain: Option<String>,
    pub tls: TlsPolicy,
    pub ca: Option<std::path::PathBuf>,
}

/// What one destination slot is counted against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum SlotKey {
    /// A route's fixed next hop (or mailbox directory), with how TLS reaches it.
    Route(Destination),
    /// An MX host, by name in lower case.
    MxHost(String),
}

pub(super) struct Slots {
    global: Arc<Semaphore>,
    /// One semaphore per destination in use.
    destinations: Mutex<HashMap<SlotKey, Arc<Semaphore>>>,
}

/// A global slot and a destination's: both go when it is dropped, and the destination's
/// entry with its last user.
pub(super) struct Slot {
    slots: Arc<Slots>,
    key: SlotKey,
    destination: Option<OwnedSemaphorePermit>,
    _global: OwnedSemaphorePermit,
}

impl Slots {
    pub fn new(concurrency: usize) -> Slots {
        Slots {
            global: Arc::new(Semaphore::new(concurrency)),
            destinations: Mutex::default(),
        }
    }

    /// A global slot alone (for work that talks to no destination, such as an MX lookup).
    pub async fn global(&self) -> OwnedSemaphorePermit {
        self.global
            .clone()
            .acquire_owned()
            .await
            .expect("never closed")
    }

    /// Waits for a slot of `key` (at most `limit` at once), then for a global one: an
    /// attempt waiting for a busy destination holds nothing that other destinations need.
    pub async fn take(self: &Arc<Self>, key: SlotKey, limit: usize) -> Slot {
        let semaphore = self
            .destinations
            .lock()
            .expect("destinations lock")
            .entry(key.clone())
            .or_insert_with(|| Arc::new(Semaphore::new(limit)))
            .clone();
        let destination = semaphore.acquire_owned().await.expect("never closed");
        Slot {
            slots: self.clone(),
            key,
            destination: Some(destination),
            _global: self.global().await,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        drop(self.destination.take());
        let mut map = self.slots.destinations.lock().expect("destinations lock");
        // Nobody else holds or waits for it (clones are only made under this lock).
        if map
            .get(&self.key)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_busy_destination_holds_no_global_slot() {
        let slots = Arc::new(Slots::new(2));
        let busy = SlotKey::MxHost("mx.busy.test".into());
        let first = slots.take(busy.clone(), 1).await;
        // A second attempt to the same host waits without a global slot ...
        let waiting = tokio::spawn({
            let slots = slots.clone();
            let busy = busy.clone();
            async move { slots.take(busy, 1).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        // ... so another host still gets the second global slot.
        let other = tokio::time::timeout(
            Duration::from_secs(1),
            slots.take(SlotKey::MxHost("mx.other.test".into()), 1),
        )
        .await
        .expect("a busy destination took a global slot while waiting");
        drop(other);
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the waiting attempt got the host's slot")
            .unwrap();
        drop(second);
        assert!(slots.destinations.lock().unwrap().is_empty());
    }
}
