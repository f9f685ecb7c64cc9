//! What one plugin's instances hold for the capabilities its config grants: the host state
//! of each `Capability`, built at load from the `[[plugin]]` table and the server's shared
//! parts (its kv store, its resolver). Nothing is held for a capability not granted.

use super::capability::Capability;
use super::http::HttpGrant;
use super::kv::{Kv, Quota};
use crate::config::Plugin;
use std::sync::Arc;

/// The server's parts a grant may hand out.
pub struct Provider {
    pub kv: Kv,
    /// `None` when the server has no resolver (then granted lookups fail).
    pub dns: Option<crate::dns::Dns>,
}

/// The host state of one plugin's grants.
#[derive(Default)]
pub struct Grants {
    kv: Option<Kv>,
    /// `Some` when granted; the inner `None` when the server has no resolver.
    dns: Option<Option<crate::dns::Dns>>,
    http: Option<Arc<HttpGrant>>,
}

impl Grants {
    /// The state for `granted`, from `p`'s settings (kv quota, http_allow, http_ca).
    pub fn new(p: &Plugin, granted: &[Capability], provider: &Provider) -> Result<Grants, String> {
        let mut grants = Grants::default();
        for c in granted {
            match c {
                Capability::Kv => {
                    let quota = Quota {
                        keys: p.kv_max_keys,
                        bytes: p.kv_max_bytes.0,
                    };
                    provider.kv.set_quota(&p.name, quota);
                    grants.kv = Some(provider.kv.clone());
                }
                Capability::Dns => grants.dns = Some(provider.dns.clone()),
                Capability::Http => {
                    let allow = p
                        .http_allow
                        .clone()
                        .unwrap_or_else(|| super::bundled::default_http_allow(p));
                    let grant = HttpGrant::new(
                        &p.name,
                        &allow,
                        p.http_ca.as_deref(),
                        p.http_max_response.0,
                        provider.dns.clone(),
                    )?;
                    grants.http = Some(Arc::new(grant));
                }
            }
        }
        Ok(grants)
    }

    pub fn has(&self, c: Capability) -> bool {
        match c {
            Capability::Dns => self.dns.is_some(),
            Capability::Kv => self.kv.is_some(),
            Capability::Http => self.http.is_some(),
        }
    }

    /// The names of what is granted, for the load log line.
    pub fn names(&self) -> String {
        let held = Capability::ALL.into_iter().filter(|&c| self.has(c));
        let names: Vec<&str> = held.map(Capability::name).collect();
        if names.is_empty() {
            "none".into()
        } else {
            names.join(",")
        }
    }

    pub fn kv(&self) -> Option<&Kv> {
        self.kv.as_ref()
    }

    /// The resolver, or why a lookup cannot be made.
    pub fn resolver(&self) -> Result<crate::dns::Dns, &'static str> {
        match &self.dns {
            None => Err("the dns capability is not granted to this plugin"),
            Some(None) => Err("no resolver configured"),
            Some(Some(dns)) => Ok(dns.clone()),
        }
    }

    pub fn http(&self) -> Option<Arc<HttpGrant>> {
        self.http.clone()
    }
}
