//! The hooks of the WIT contract: their names, the set a plugin asks for at `init`, and one
//! hook call with its arguments.

use super::bindings::types::{EnvelopeFrom, Hook, Param, SpfResults};
use std::fmt;

impl Hook {
    /// Every hook, in dialogue order.
    pub const ALL: [Hook; 8] = [
        Hook::Connect,
        Hook::Helo,
        Hook::Auth,
        Hook::Mail,
        Hook::Rcpt,
        Hook::Data,
        Hook::Vrfy,
        Hook::Expn,
    ];

    /// The hook's name as in the WIT (`connect`, `helo`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Hook::Connect => "connect",
            Hook::Helo => "helo",
            Hook::Auth => "auth",
            Hook::Mail => "mail",
            Hook::Rcpt => "rcpt",
            Hook::Data => "data",
            Hook::Vrfy => "vrfy",
            Hook::Expn => "expn",
        }
    }
}

impl Hook {
    /// Where it is in `Hook::ALL`.
    pub fn index(self) -> usize {
        Hook::ALL
            .iter()
            .position(|&h| h == self)
            .expect("every hook is in Hook::ALL")
    }
}

/// The hooks one plugin wants; it is called for these only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HookSet(u16);

impl HookSet {
    fn bit(hook: Hook) -> u16 {
        1 << hook.index()
    }

    pub fn contains(self, hook: Hook) -> bool {
        self.0 & Self::bit(hook) != 0
    }

    /// The hooks in dialogue order.
    pub fn iter(self) -> impl Iterator<Item = Hook> {
        Hook::ALL.into_iter().filter(move |&h| self.contains(h))
    }
}

impl FromIterator<Hook> for HookSet {
    fn from_iter<I: IntoIterator<Item = Hook>>(hooks: I) -> HookSet {
        HookSet(hooks.into_iter().fold(0, |set, h| set | Self::bit(h)))
    }
}

/// `connect,mail,rcpt`, or `none`: for logs.
impl fmt::Display for HookSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(Hook::name).collect();
        f.write_str(&names.join(","))
    }
}

/// A hook call and its arguments (all but `data`, which has its own path).
pub enum Call<'a> {
    Connect,
    Helo {
        name: &'a str,
        extended: bool,
    },
    Auth {
        mechanism: &'a str,
        user: &'a str,
        success: bool,
    },
    Mail {
        sender: &'a EnvelopeFrom,
        spf: &'a SpfResults,
    },
    Rcpt {
        sender: &'a EnvelopeFrom,
        recipient: &'a str,
        params: &'a [Param],
        accepted: &'a [String],
    },
    Vrfy(&'a str),
    Expn(&'a str),
}

impl Call<'_> {
    pub fn hook(&self) -> Hook {
        match self {
            Call::Connect => Hook::Connect,
            Call::Helo { .. } => Hook::Helo,
            Call::Auth { .. } => Hook::Auth,
            Call::Mail { .. } => Hook::Mail,
            Call::Rcpt { .. } => Hook::Rcpt,
            Call::Vrfy(_) => Hook::Vrfy,
            Call::Expn(_) => Hook::Expn,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_and_names() {
        let set: HookSet = [Hook::Rcpt, Hook::Connect].into_iter().collect();
        assert!(set.contains(Hook::Rcpt) && !set.contains(Hook::Data));
        assert_eq!(set.to_string(), "connect,rcpt");
        assert_eq!(HookSet::default().to_string(), "none");
        assert_eq!(Hook::ALL.into_iter().collect::<HookSet>().iter().count(), 8);
    }
}
